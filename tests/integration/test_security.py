"""StreamSafe on a secured Apache Kafka: SASL_SSL (SCRAM-SHA-512 over TLS with a CA made for the
run), deny-by-default ACLs, and exactly the ACLs ``streamsafe acls`` renders from the topic files.
The whole pipeline runs with each role's own credentials, the commands authenticate like the
worker, the roles' refusals hold, and a wrong password or an untrusted CA fails fast, in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from PIL import Image

from streamsafe import clients
from streamsafe.brokers.base import free_port
from streamsafe.brokers.secure import write_certificates
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import (
    ACTIONS,
    ESCALATIONS,
    FRAME_HASHES,
    HASHBANK_ENTRIES,
    METADATA,
    REPORTS,
    REVIEW_VERDICTS,
    STATEMENTS,
    load_contract,
)
from streamsafe.policy.loader import default_policy_text
from streamsafe.runner import spawn_worker
from tests.integration.conftest import KNOWN_MD5
from tests.signing_support import encoded

pytestmark = pytest.mark.integration

CASE = "ab" * 32
WEAK = f"{int(CASE, 16) ^ ((1 << 26) - 1):064x}"  # 26 bits away: a weak partner match, escalated
COMMAND_TIMEOUT_S = 120
EXAMPLE_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "reports" / "platform-profile.example.yaml"


def now_ms() -> int:
    return int(time.time() * 1000)


def streamsafe(secured, role: str | None, *args: str, env: dict[str, str] | None = None,
               timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a ``streamsafe`` command logged in as ``role``'s user (``env`` overrides)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    environment.update(secured.environment(role) if role else {})
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "streamsafe", *args], env=environment, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout + result.stderr


async def read_topic(settings, topic: str, until, *, group: str | None = None,
                     timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """Records of ``topic`` (from its start) until ``until(records)`` holds, as ``settings``' user."""
    options = {"group_id": group} if group else {}
    consumer = clients.consumer(settings, settings.topic_name(topic), **options)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not until(found):
            assert time.monotonic() < deadline, f"{topic}: not found in {timeout_s:.0f} s; read {found}"
            batch = await consumer.getmany(timeout_ms=500)
            found += [orjson.loads(m.value) for ms in batch.values() for m in ms if m.value is not None]
        if group:
            await consumer.commit()  # the group's own offsets: Read on a group named after the user
        return found
    finally:
        await stop_consumer(consumer)


async def send(settings, topic: str, key: str, value: dict[str, Any]) -> None:
    """Send one record as ``settings``' user; a bank entry, policy or verdict signed by the run's key for it."""
    producer = clients.producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_name(topic), encoded(topic, key.encode(), value),
                                     key=key.encode())
    finally:
        await producer.stop()


def of(stream: str, action: str | None = None):
    return lambda records: [r for r in records if r.get("stream_id") == stream
                            and action in (None, r.get("action"))]


async def test_the_whole_pipeline_runs_with_each_role_s_own_credentials(secured, tmp_path):
    world = secured
    # bank-admin imports a partner bank; policy-admin publishes the live policy (as commands)
    partner = tmp_path / "partner.txt"
    partner.write_text(f"pdq:{CASE}\n")
    assert "published 1 entries" in succeeded(streamsafe(world, "bank-admin", "bank", "import", str(partner),
                                                         "--bank", "partner-list"))
    assert "partner-list" in succeeded(streamsafe(world, "bank-admin", "bank", "stats"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text())
    assert "as live" in succeeded(streamsafe(world, "policy-admin", "policy", "publish", str(policy)))

    authority = tmp_path / "ncmec.txt"
    authority.write_text(f"md5:{KNOWN_MD5}\n")
    worker = spawn_worker(world.role("worker", hash_list=authority, data_dir=tmp_path / "data",
                                     http_host="127.0.0.1", http_port=free_port()), tmp_path / "worker.log")
    try:
        worker.wait_ready(timeout_s=120)
        platform = world.role("platform")
        await send(platform, FRAME_HASHES, "sec-block", {"schema_version": 1, "stream_id": "sec-block", "frames": [
            {"seq": 0, "ts_ms": now_ms(), "md5": KNOWN_MD5}]})
        await send(platform, METADATA, "sec-review", {"schema_version": 1, "event": "stream.started",
                                                      "stream_id": "sec-review", "ts_ms": now_ms(),
                                                      "broadcaster_id": "acct-sec"})
        for seq in range(3):
            await send(platform, FRAME_HASHES, "sec-review", {"schema_version": 1, "stream_id": "sec-review",
                                                              "frames": [{"seq": seq, "ts_ms": now_ms(), "pdq": WEAK,
                                                                          "pdq_quality": 95}]})
        # the platform's own simulator, as a command
        assert "sent 40 messages" in succeeded(streamsafe(world, "platform", "simulate", "--count", "40",
                                                          "--rate", "0", "--streams", "4"))

        enforcement = world.role("enforcement")
        user = world.kafka.roles["enforcement"]
        actions = await read_topic(enforcement, ACTIONS, of("sec-block", "block"), group=f"{user}-actions")
        assert of("sec-block", "block")(actions)[0]["evidence"][0]["bank"] == "ncmec"

        reviewer = world.role("reviewer-tool")
        escalations = await read_topic(reviewer, ESCALATIONS, of("sec-review"),
                                       group=f"{world.kafka.roles['reviewer-tool']}-queue")
        escalation = of("sec-review")(escalations)[0]
        await send(reviewer, REVIEW_VERDICTS, "sec-review", {
            "schema_version": 1, "stream_id": "sec-review", "verdict": "confirmed", "category": "A2",
            "escalation_id": escalation["decision_id"], "reviewer_id": "rev-sec", "ts_ms": now_ms()})

        reporting = world.role("reporting")
        reports = await read_topic(reporting, REPORTS, of("sec-review"))
        assert of("sec-review")(reports)[0]["category"] == "A2"
        # the review loop's bank addition: the worker writes internal-confirmed, the bank admin reads it
        # (the session's broker is shared: other tests' entries may be there too)
        def confirmed(records):
            return [r for r in records if r.get("bank") == "internal-confirmed" and r.get("hash") == WEAK]

        entries = await read_topic(world.role("bank-admin"), HASHBANK_ENTRIES, confirmed)
        assert [r["source"] for r in confirmed(entries)] == ["reviewer"]
        # the appeal tool exports the statements of reasons (a command)
        statements = tmp_path / "statements.jsonl"
        await read_topic(world.role("appeal-tool"), STATEMENTS, lambda rs: len(rs) >= 1)
        assert "statements of reasons written" in succeeded(
            streamsafe(world, "appeal-tool", "statements", "export", "--out", str(statements)))
        assert statements.read_text().strip()
        # the reporting team exports the report as a CyberTipline document (a command)
        result = streamsafe(world, "reporting", "reports", "export", "--format", "cybertip-xml", "--profile",
                            str(EXAMPLE_PROFILE), "--out", str(tmp_path / "tips"))
        assert "CyberTipline reports" in succeeded(result) and list((tmp_path / "tips").glob("*.xml"))
        # the reporting team's transparency report counts what happened (a command)
        result = streamsafe(world, "reporting", "transparency", "--json")
        succeeded(result)
        read = orjson.loads(result.stdout)["records"]["read"]  # every source topic was read
        assert read.get(ACTIONS) and read.get(REPORTS) and read.get(REVIEW_VERDICTS), read
        # the platform hashes an image and sends it; policy-admin retires a shadow policy (commands)
        image = tmp_path / "frame.png"
        Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
        assert "sent 1 frames" in succeeded(streamsafe(world, "platform", "hash", str(image), "--emit",
                                                       "--stream-id", "sec-hash"))
        # the cluster admin checks the topics against the contract, over SASL_SSL (a command)
        admin = {**world.kafka.environment("admin"), "STREAMSAFE_TOPIC_PREFIX": world.settings.topic_prefix,
                 "STREAMSAFE_APP_ID": world.settings.app_id, "STREAMSAFE_REPLICATION_FACTOR": "1"}
        checked = succeeded(streamsafe(world, None, "topics", "apply", env=admin)).splitlines()
        assert len(checked) == len(load_contract()) and all(line.startswith("ok ") for line in checked), checked
        assert "retired shadow policy" in succeeded(streamsafe(world, "policy-admin", "policy", "retire-shadow",
                                                               "candidate"))
        log = worker.log().lower()
        assert "not authorized" not in log and "authorizationfailed" not in log
    finally:
        worker.stop()


async def test_the_roles_refusals_hold(secured):
    world = secured
    platform = clients.producer(world.role("platform"))
    await platform.start()
    try:
        for topic in (ACTIONS, HASHBANK_ENTRIES):  # no forged decisions, no bank entries
            with pytest.raises(KafkaError) as refused:
                await asyncio.wait_for(platform.send_and_wait(world.settings.topic_name(topic), b"{}", key=b"x"), 60)
            assert isinstance(refused.value, TopicAuthorizationFailedError), repr(refused.value)
    finally:
        await platform.stop()
    with pytest.raises(TopicAuthorizationFailedError):  # reports are the reporting team's alone
        await read_topic(world.role("enforcement"), REPORTS, lambda rs: False, timeout_s=20)


def test_a_command_outside_its_role_is_refused_in_one_line(secured, tmp_path):
    bank = tmp_path / "allow.txt"
    bank.write_text(f"pdq:{CASE}\n")
    started = time.monotonic()
    result = streamsafe(secured, "platform", "bank", "import", str(bank), "--bank", "overlays")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: the broker at") and "refused" in line and "AuthorizationFailed" in line, line
    assert time.monotonic() - started < 60


def test_a_transparency_report_without_every_source_is_refused_not_silently_partial(secured):
    result = streamsafe(secured, "enforcement", "transparency", "--json")  # may not read reports
    assert result.returncode != 0 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "refused" in line and f"{secured.settings.topic_prefix}enforcement.reports (" in line, line


@pytest.mark.parametrize("case", ["wrong password", "untrusted CA"])
@pytest.mark.parametrize("command", [("bank", "stats"), ("policy", "retire-shadow", "nothing"), ("worker",)])
def test_a_wrong_password_or_an_untrusted_ca_fails_fast_in_one_line(secured, tmp_path, case, command):
    if case == "wrong password":
        wrong = tmp_path / "password"
        wrong.write_text("not-the-password")
        env, expected = {"STREAMSAFE_SASL_PASSWORD_FILE": str(wrong)}, "invalid credentials"
    else:
        env, expected = {"STREAMSAFE_SSL_CAFILE": str(write_certificates(tmp_path / "other").ca)}, "certificate"
    role = "worker" if command == ("worker",) else "policy-admin" if command[0] == "policy" else "bank-admin"
    env.update({"STREAMSAFE_DATA_DIR": str(tmp_path / "data"), "STREAMSAFE_HTTP_PORT": "0",
                "STREAMSAFE_LOG_LEVEL": "error"})
    started = time.monotonic()
    result = streamsafe(secured, role, *command, env=env, timeout_s=90)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot reach the broker" in errors[0], result.stderr
    if command != ("worker",):  # the worker logs the client's reason itself, at error level
        assert [line for line in result.stderr.splitlines() if line.strip()] == errors
        assert expected in errors[0], errors[0]
    else:
        assert expected in result.stderr.lower(), result.stderr
    assert elapsed < 60, f"{elapsed:.0f} s"


def test_broker_start_secure_prints_where_and_who_without_passwords(secured, tmp_path):
    """``streamsafe broker start --kind kafka --secure --json``: what it prints is enough to connect,
    and SIGTERM takes its broker down with it. (``secured``: Apache Kafka only, as the fixture decides.)"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    process = subprocess.Popen([sys.executable, "-m", "streamsafe", "broker", "start", "--kind", "kafka", "--secure",
                                "--json", "--data-dir", str(tmp_path / "broker")], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line, process.stderr.read() if process.poll() is not None else "no output"  # type: ignore[union-attr]
        described = orjson.loads(line)
        roles = described["roles"]
        assert set(roles) >= {"platform", "worker", "enforcement", "reviewer-tool", "reporting", "bank-admin",
                              "policy-admin", "appeal-tool"}
        for role in roles.values():
            password = Path(role["password_file"])
            assert password.stat().st_mode & 0o777 == 0o600
            assert password.read_text().strip() not in line
        env = {"STREAMSAFE_BROKER": described["broker"], "STREAMSAFE_SECURITY_PROTOCOL": "SASL_SSL",
               "STREAMSAFE_SSL_CAFILE": described["ca_file"], "STREAMSAFE_SASL_MECHANISM": described["sasl_mechanism"],
               "STREAMSAFE_SASL_USERNAME": roles["bank-admin"]["user"],
               "STREAMSAFE_SASL_PASSWORD_FILE": roles["bank-admin"]["password_file"]}
        result = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "stats"], env={**environment, **env},
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
        assert "0 entries in 0 banks" in succeeded(result)
        brokers = [int(c) for c in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        assert brokers, "no broker process under broker start"
        process.terminate()
        assert process.wait(60) == 0
        deadline = time.monotonic() + 30
        while [pid for pid in brokers if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in brokers if Path(f"/proc/{pid}").exists()], "the broker outlived broker start"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


async def test_the_coop_bridge_forwards_and_serves_as_the_reviewer_tool(secured, tmp_path):
    """``streamsafe coop forward`` and ``coop serve``: the reviewer tool's credentials only."""
    from tests.coop_fake import CoopSigner, FakeCoop
    from tests.integration.test_coop import API_KEY, MAPPING

    world = secured
    mapping = tmp_path / "coop.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING))
    key_file = tmp_path / "coop-webhook-key.pem"
    key_file.write_bytes(CoopSigner().public_pem())
    coop = await FakeCoop(API_KEY).start()
    services: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
        environment.update(world.environment("reviewer-tool"), STREAMSAFE_COOP_API_KEY=API_KEY,
                           STREAMSAFE_COOP_REVIEWER_KEY="pseudonym-key")
        for name, args in (("forward", ["--coop-url", coop.url, "--mapping", str(mapping), "--metrics-host",
                                        "127.0.0.1", "--metrics-port"]),
                           ("serve", ["--mapping", str(mapping), "--public-key", str(key_file), "--host",
                                      "127.0.0.1", "--port"])):
            port, log_path = free_port(), tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen([sys.executable, "-m", "streamsafe", "coop", name, *args, str(port)],
                                           env=environment, stdout=log, stderr=subprocess.STDOUT)
            services.append((process, port, log_path))
        async with aiohttp.ClientSession() as http:
            for process, port, log_path in services:
                deadline = time.monotonic() + 90
                while True:
                    assert process.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
        escalation = {**load_contract()[ESCALATIONS].example, "stream_id": "sec-coop"}
        await send(world.role("worker"), ESCALATIONS, "sec-coop", escalation)  # as a worker would
        deadline = time.monotonic() + 90
        while not [r for r in coop.reports if r["reportedItem"]["id"] == "sec-coop"]:
            assert time.monotonic() < deadline, services[0][2].read_text()
            await asyncio.sleep(0.2)
        for _, _, log_path in services:
            log = log_path.read_text().lower()
            assert "authorizationfailed" not in log and "traceback" not in log, log
    finally:
        for process, _, _ in services:
            process.terminate()
            process.wait(30)
        await coop.stop()


def test_evaluate_replays_on_the_secured_cluster_as_its_admin(secured, tmp_path):
    """``evaluate --broker`` (replay's path) makes its own topics and group: a cluster admin's
    work on a secured cluster, over SASL_SSL like every other client."""
    scenarios = tmp_path / "scenarios.jsonl"
    succeeded(streamsafe(secured, None, "simulate", "--scenarios", "--streams", "6", "--out", str(scenarios)))
    admin = {**secured.kafka.environment("admin"), "STREAMSAFE_REPLICATION_FACTOR": "1"}
    result = streamsafe(secured, None, "evaluate", str(scenarios), "--broker", admin["STREAMSAFE_BROKER"], "--json",
                        env=admin, timeout_s=400)
    (score,) = [orjson.loads(line) for line in succeeded(result).splitlines() if line.startswith("{")]
    assert score["decisions"] > 0, score
