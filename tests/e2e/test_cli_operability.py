"""The `streamsafe` command run as people run it: with no broker, every command that talks
to one says so in one line and fails; a bank name workers would refuse is refused before
anything is published; `broker start` takes its broker down with it on SIGTERM."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image

from streamsafe.brokers.base import free_port
from streamsafe.policy.loader import default_policy_text
from tests.signing_support import CONTROL_KEY, write_private

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def streamsafe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    return subprocess.run([sys.executable, "-m", "streamsafe", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


def broker_commands(tmp_path: Path, broker: str) -> dict[str, list[str]]:
    hashes = tmp_path / "hashes.txt"
    hashes.write_text("0123456789abcdef0123456789abcdef\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text())
    frame = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frame)
    recording = tmp_path / "recording.jsonl"
    streamsafe("simulate", "--scenarios", "--streams", "2", "--out", str(recording))
    mapping = tmp_path / "coop.yaml"
    mapping.write_text(yaml.safe_dump({"version": 1, "reporter": {"type_id": "streamsafe-reporter", "id": "s"},
                                       "stream_item_type_id": "live-stream",
                                       "policies": {"default": {"policy_id": "pol-child-safety"}}}))
    public_key = tmp_path / "coop.pem"
    public_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    api_key = tmp_path / "coop-api-key"
    api_key.write_text("test-key\n")
    signing = ["--signing-key", str(write_private(CONTROL_KEY, tmp_path / "signing.key"))]  # publishing signs
    return {
        "simulate": ["simulate", "--count", "5", "--broker", broker],
        "bank import": ["bank", "import", str(hashes), "--bank", "b", "--signal-type", "md5", "--broker", broker,
                        *signing],
        "bank stats": ["bank", "stats", "--broker", broker],
        "policy publish": ["policy", "publish", str(policy), "--broker", broker, *signing],
        "policy retire-shadow": ["policy", "retire-shadow", "candidate", "--broker", broker, *signing],
        "policy rollback": ["policy", "rollback", "--broker", broker, *signing],
        "audit": ["audit", "--broker", broker],
        "topics apply": ["topics", "apply", "--broker", broker],
        "hash --emit": ["hash", str(frame), "--emit", "--stream-id", "st-1", "--broker", broker],
        "replay": ["replay", str(recording), "--broker", broker],
        "evaluate": ["evaluate", str(recording), "--broker", broker],
        "worker": ["worker", "--broker", broker],
        "transparency": ["transparency", "--json", "--broker", broker],
        "coop forward": ["coop", "forward", "--coop-url", "http://127.0.0.1:9", "--mapping", str(mapping),
                         "--api-key-file", str(api_key), "--metrics-port", "0", "--broker", broker],
        "coop serve": ["coop", "serve", "--mapping", str(mapping), "--public-key", str(public_key), "--port", "0",
                       "--broker", broker, *signing],
        "hma writeback": ["hma", "writeback", "--url", "http://127.0.0.1:9", "--bank", "STREAMSAFE_CONFIRMED",
                          "--metrics-port", "0", "--broker", broker],
        "reports export": ["reports", "export", "--format", "cybertip-xml", "--profile",
                           str(REPO / "deploy" / "reports" / "platform-profile.example.yaml"),
                           "--out", str(tmp_path / "cybertip"), "--broker", broker],
        "statements export": ["statements", "export", "--out", str(tmp_path / "sor.jsonl"), "--broker", broker],
    }


COMMANDS = ["simulate", "bank import", "bank stats", "policy publish", "policy retire-shadow", "policy rollback",
            "audit", "topics apply",
            "hash --emit", "replay", "evaluate", "worker", "transparency", "coop forward", "coop serve",
            "hma writeback", "reports export", "statements export"]
#: commands with a --broker option that the test above does not run as they are, and why
NOT_RUN_BARE = {
    "hash": "talks to a broker only with --emit: run above as 'hash --emit'",
    "bank sync hma": "reads HMA's database before it talks to the broker: its own test below",
}


def test_every_command_with_a_broker_option_is_run_without_a_broker():
    """A new command that talks to a broker joins COMMANDS (or says here why not)."""
    import click

    from streamsafe.cli import cli

    def with_broker(group: click.Group, prefix: str = "") -> list[str]:
        found = []
        for name, command in group.commands.items():
            full = f"{prefix} {name}".strip()
            if isinstance(command, click.Group):
                found += with_broker(command, full)
            elif any("--broker" in getattr(p, "opts", ()) for p in command.params):
                found.append(full)
        return found

    commands = with_broker(cli)
    assert len(commands) >= len(COMMANDS)
    covered = {c.removesuffix(" --emit") for c in COMMANDS} | set(NOT_RUN_BARE)
    assert sorted(set(commands) - covered) == []


def test_hma_sync_with_neither_hma_nor_broker_fails_in_one_line(tmp_path):
    key = write_private(CONTROL_KEY, tmp_path / "signing.key")
    result = streamsafe("bank", "sync", "hma", "--dsn", f"postgresql://hma@127.0.0.1:{free_port()}/media_match",
                        "--banks", "A", "--signing-key", str(key), "--broker", f"kafka://127.0.0.1:{free_port()}")
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and errors[0].startswith("Error: cannot read HMA's database"), errors


@pytest.mark.parametrize("command", COMMANDS)
def test_with_no_broker_every_broker_command_fails_in_one_line(tmp_path, command):
    broker = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    args = broker_commands(tmp_path, broker)[command]
    started = time.monotonic()
    result = streamsafe(*args)
    assert time.monotonic() - started < 30
    assert result.returncode != 0, result.stdout + result.stderr
    # a long-running service (coop forward, coop serve) may have logged its start as JSON lines first
    errors = [line for line in result.stderr.strip().splitlines() if not line.startswith('{"ts":')]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("Error: ") and broker.removeprefix("kafka://") in errors[0], errors[0]


def test_a_bank_name_workers_would_refuse_is_refused_before_publishing(tmp_path):
    hashes = tmp_path / "hashes.txt"
    hashes.write_text("0123456789abcdef0123456789abcdef\n")
    broker = f"kafka://127.0.0.1:{free_port()}"  # never reached: the name is checked first
    result = streamsafe("bank", "import", str(hashes), "--bank", "NCMEC Bank!", "--signal-type", "md5",
                        "--broker", broker)
    assert result.returncode == 1 and "published" not in result.stdout, result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: bank name 'NCMEC Bank!' is not valid"), errors


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["tansu", "kafka"])
def test_broker_start_stops_its_broker_on_sigterm(tmp_path, kind):
    if kind == "kafka" and os.environ.get("STREAMSAFE_TEST_BROKER") != "kafka":
        pytest.skip("Apache Kafka runs only where STREAMSAFE_TEST_BROKER=kafka (CI installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    process = subprocess.Popen([sys.executable, "-m", "streamsafe", "broker", "start", "--kind", kind],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    brokers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        output = ""
        while "ready: --broker" not in output:
            assert process.poll() is None and time.monotonic() < deadline, f"broker start not ready:\n{output}"
            if select.select([process.stdout], [], [], 1.0)[0]:
                output += process.stdout.readline()  # type: ignore[union-attr]
        brokers = children(process.pid)
        assert brokers and all(alive(pid) for pid in brokers)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in brokers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in brokers), f"{kind} still running after SIGTERM to broker start"
    finally:  # nothing left behind, whatever happened
        for pid in {*brokers, *children(process.pid)}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
