"""The container image and the compose file, checked offline with real tools: hadolint lints
the Dockerfile, check-jsonschema validates deploy/compose.yaml against the Compose
Specification's JSON schema (vendored in check-jsonschema), promtool checks the compose
Prometheus config; then what those tools cannot know: that the image is built the way
StreamSafe needs and that the compose services fit together and configure valid settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from streamsafe.deploy.workload import DATA_DIR, USER_ID
from streamsafe.settings import ENV_FIELDS, ENV_PREFIX, SECURITY_ENV, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
KNOWN_ENV = {ENV_PREFIX + n for n in (*ENV_FIELDS, *SECURITY_ENV)} | {ENV_PREFIX + "SASL_PASSWORD_FILE"}


def tool(name: str) -> str:
    """A command-line tool the test dependencies install next to this Python."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} not installed: pip install -e '.[test]'"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


# --- Dockerfile ------------------------------------------------------------------------------

def hadolint(path: Path) -> list[dict[str, Any]]:
    result = run(tool("hadolint"), "--format", "json", "--failure-threshold", "info", str(path))
    findings = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_finds_nothing_in_the_dockerfile():
    assert hadolint(DOCKERFILE) == []


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("ARG PYTHON_IMAGE=python:3.11-slim-bookworm",
                                                  "ARG PYTHON_IMAGE=python")
                   + "RUN cd /tmp && apt-get install gcc\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3003", "DL3008", "DL3009"} & codes, codes


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per stage (ARG values substituted)."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    args = {}
    result: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "ARG" and not result:
            name, _, value = instruction["value"].partition("=")
            args[name] = value
        if instruction["instruction"] == "FROM":
            for name, value in args.items():
                instruction = {**instruction, "value": instruction["value"].replace("${" + name + "}", value)}
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def instructions(stage: list[dict[str, Any]], kind: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == kind]


def test_the_image_is_built_in_two_stages_and_runs_slim_and_unprivileged():
    builder, runtime = stages()
    assert instructions(builder, "FROM")[0].startswith("python:3.11-slim")
    assert instructions(runtime, "FROM")[0].startswith("python:3.11-slim")
    assert any("pip wheel" in r for r in instructions(builder, "RUN"))
    run_steps = " ".join(instructions(runtime, "RUN"))
    # no build tools in the final stage: nothing installed from Debian, only the builder's wheels
    for word in ("apt-get", "build-essential", "gcc", "g++"):
        assert word not in run_steps, word
    assert "--no-index" in run_steps and "from=builder" in run_steps
    assert instructions(runtime, "COPY") == []  # no source tree in the image
    user = instructions(runtime, "USER")[-1].split(":")[0]
    assert user not in ("0", "root") and int(user) == USER_ID  # the uid Kubernetes runs it as


def _json_list(text: str) -> list[str]:
    return json.loads(text)


def test_the_image_runs_streamsafe_with_its_state_on_a_volume():
    runtime = stages()[-1]
    assert _json_list(instructions(runtime, "ENTRYPOINT")[-1]) == ["streamsafe"]
    assert _json_list(instructions(runtime, "CMD")[-1]) == ["worker"]
    env = {}
    for value in instructions(runtime, "ENV"):
        for pair in value.replace("\\\n", " ").split():
            name, _, setting = pair.partition("=")
            env[name] = setting
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    assert set(k for k in env if k.startswith(ENV_PREFIX)) <= KNOWN_ENV
    assert settings.store == "rocksdb://" and str(settings.data_dir) == DATA_DIR
    assert _json_list(instructions(runtime, "VOLUME")[-1]) == [DATA_DIR]
    # numba writes its kernel cache beside the package, read-only for the image's user: on the volume instead
    assert env["NUMBA_CACHE_DIR"].startswith(DATA_DIR + "/")
    assert instructions(runtime, "EXPOSE") == [str(settings.http_port)]
    assert "/healthz" in instructions(runtime, "HEALTHCHECK")[-1]


def test_the_build_context_holds_what_the_builder_copies():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything out, then only what is named back in
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for value in instructions(stages()[0], "COPY"):
        *sources, _ = value.split()
        copied.update(s.rstrip("/") for s in sources)
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied)
    # what the wheel's build reads (the readme, the force-included contract and alert rules)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'readme = "README.md"' in pyproject
    assert {"topics", "deploy/prometheus/alerts.yml"} <= copied


# --- compose ---------------------------------------------------------------------------------

def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))


def test_the_compose_file_validates_against_the_compose_specification():
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_would_catch_a_bad_compose_file(tmp_path):
    bad = tmp_path / "compose.yaml"
    text = COMPOSE.read_text()
    for good, broken in (("  stop_grace_period: 60s", "  stop_grace_periode: 60s"),  # a misspelt key
                         ('KAFKA_NODE_ID: "1"', "KAFKA_NODE_ID: [1]")):  # a value of the wrong type
        assert good in text
        bad.write_text(text.replace(good, broken))
        result = check_compose(bad)
        assert result.returncode != 0, broken
        assert broken.split(":")[0].strip() in result.stdout


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def streamsafe_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("streamsafe:")}


def test_the_compose_services_fit_together(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert not any("zookeeper" in name for name in services)
    assert (COMPOSE.parent / services["topics"]["build"]["context"] / "Dockerfile").exists()


def test_the_streamsafe_services_configure_valid_settings(compose):
    services = streamsafe_services(compose)
    workers = {n: s for n, s in services.items() if s["command"] == ["worker"]}
    assert len(workers) == 2
    instance_ids = set()
    for name, service in services.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= KNOWN_ENV, (name, set(env) - KNOWN_ENV)
        settings = Settings.from_env(env)
        # one broker: one copy of each partition, or no topic could be created
        assert (settings.replication_factor, settings.min_insync_replicas) == (1, 1)
        assert settings.bootstrap_servers == "kafka:9092"
        if name in workers:
            instance_ids.add(settings.instance_id)
            assert any(v.endswith(":" + DATA_DIR) for v in service["volumes"])  # RocksDB on a volume
            assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert len(instance_ids) == 2 and None not in instance_ids
    assert services["topics"]["command"] == ["topics", "apply"]


def test_prometheus_scrapes_both_workers_with_the_shipped_rules(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("."))
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    config = yaml.safe_load((COMPOSE.parent / "prometheus" / "compose.yml").read_text())
    assert mounts["./prometheus/compose.yml"] == "/etc/prometheus/prometheus.yml"
    assert config["rule_files"] == ["alerts.yml"]
    job = config["scrape_configs"][0]
    assert job["job_name"] == "streamsafe"  # the alerts' up{job="streamsafe"}
    workers = [n for n, s in streamsafe_services(compose).items() if s["command"] == ["worker"]]
    port = Settings().http_port
    assert sorted(job["static_configs"][0]["targets"]) == sorted(f"{w}:{port}" for w in workers)


@pytest.mark.skipif(shutil.which("promtool") is None and not os.environ.get("STREAMSAFE_REQUIRE_PROMETHEUS"),
                    reason="promtool not installed (apt-get install prometheus; CI installs it and requires it)")
def test_promtool_accepts_the_compose_prometheus_config():
    result = run("promtool", "check", "config", str(COMPOSE.parent / "prometheus" / "compose.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    provisioning = COMPOSE.parent / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"] and datasources[0]["isDefault"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasources[0]["url"] == f"http://prometheus:{prometheus_port}"
    providers = yaml.safe_load((provisioning / "dashboards" / "streamsafe.yaml").read_text())["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    assert mounts["./grafana/streamsafe.json"] == f"{dashboard_dir}/streamsafe.json"
    dashboard = json.loads((COMPOSE.parent / "grafana" / "streamsafe.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"  # resolved to the provisioned default
