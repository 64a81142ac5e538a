import pytest

from streamsafe.errors import ConfigError
from streamsafe.settings import Settings


def test_defaults_are_valid():
    settings = Settings.from_env({})
    assert settings.store == "memory://" and settings.security.protocol == "PLAINTEXT"


def test_environment_and_overrides(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {
        "STREAMSAFE_BROKER": "kafka://a:1;kafka://b:2",
        "STREAMSAFE_TOPIC_PREFIX": "dev.",
        "STREAMSAFE_POLICY_FILE": "/etc/streamsafe/policy.yaml",
        "STREAMSAFE_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMSAFE_SASL_USERNAME": "streamsafe",
        "STREAMSAFE_SASL_PASSWORD_FILE": str(secret),
    }
    settings = Settings.from_env(env, store="rocksdb://", hash_list=None)
    assert settings.bootstrap_servers == "a:1,b:2"
    assert settings.topic_name("enforcement.actions") == "dev.enforcement.actions"
    assert str(settings.policy_file) == "/etc/streamsafe/policy.yaml"
    assert settings.store == "rocksdb://"
    assert settings.security.sasl_password == "s3cret"
    assert "s3cret" not in repr(settings)
    kwargs = settings.security.aiokafka_kwargs()
    assert kwargs["sasl_plain_password"] == "s3cret" and kwargs["security_protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize("env", [
    {"STREAMSAFE_STORE": "redis://"},
    {"STREAMSAFE_MAX_MESSAGE_BYTES": "ten"},
    {"STREAMSAFE_SESSION_TIMEOUT_S": "soon"},
    {"STREAMSAFE_SECURITY_PROTOCOL": "SASL_SSL"},
    {"STREAMSAFE_BROKER": "localhost:9092"},
])
def test_invalid_settings_are_refused(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_every_setting_survives_the_spawned_workers_environment(tmp_path):
    from streamsafe.runner import worker_environment
    from streamsafe.settings import KafkaSecurity

    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    settings = Settings(
        broker_url="kafka://b1:9093", topic_prefix="p.", app_id="a1", store="rocksdb://", data_dir=tmp_path,
        hash_list=tmp_path / "h.txt", policy_file=tmp_path / "p.yaml", max_message_bytes=2048,
        session_timeout_s=7.0, rebalance_timeout_s=8.0, commit_interval_s=1.5, instance_id="w-0",
        delivery_timeout_s=4.0, stall_after_s=12.0, clock="records", ended_stream_ttl_s=5.0, inactive_stream_ttl_s=6.0,
        sweep_interval_s=2.0, benign_cooldown_s=3.0, preserve_days=90, p0_breach_restrict=False,
        input_metrics=False, prefilter=False, transport="stock", event_loop="asyncio", log_level="debug",
        log_format="text", http_host="127.0.0.1", http_port=9999,
        security=KafkaSecurity("SASL_SSL", "/ca.pem", "/c.pem", "/k.pem", "SCRAM-SHA-512", "svc", "s3cret"),
    )
    env = worker_environment(settings)
    assert Settings.from_env(env) == settings
    assert "STREAMSAFE_SASL_PASSWORD" in env
    defaults = Settings()
    assert Settings.from_env(worker_environment(defaults)) == defaults


def test_one_table_names_every_setting_and_the_readme_documents_each():
    import dataclasses
    from pathlib import Path

    from streamsafe import settings as module

    fields = {f.name for f in dataclasses.fields(Settings)} - {"security"}
    assert {attr for attr, _, _ in module.ENV_FIELDS.values()} == fields
    readme = (Path(module.__file__).parents[1] / "README.md").read_text()
    for name in [*module.ENV_FIELDS, *module.SECURITY_ENV, "SASL_PASSWORD_FILE"]:
        assert f"STREAMSAFE_{name}" in readme, name
        if name != "SASL_PASSWORD_FILE":
            assert f"STREAMSAFE_{name}" in module.__doc__, name
