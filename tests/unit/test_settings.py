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
