"""The `streamsafe` command's error path: one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import fastjsonschema
import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from PIL import Image

from streamsafe.brokers.base import free_port
from streamsafe.cli import cli
from streamsafe.events.contract import FRAME_HASHES, load_contract
from streamsafe.hashing.frames import frame_hashes_messages
from streamsafe.policy.loader import default_policy_text
from tests.signing_support import CONTROL_KEY, write_private
from tests.unit.test_hashing import write_video


@pytest.fixture(autouse=True)
def restore_client_log_levels():
    """The one-shot commands quiet aiokafka and asyncio for their process; give the
    test process its levels back."""
    levels = {name: logging.getLogger(name).level for name in ("aiokafka", "asyncio")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def image(path: Path) -> Path:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def broker_commands(tmp_path: Path, broker: str) -> dict[str, list[str]]:
    hashes = tmp_path / "hashes.txt"
    hashes.write_text("0123456789abcdef0123456789abcdef\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text())
    key = str(write_private(CONTROL_KEY, tmp_path / "control.key"))
    return {
        "simulate": ["simulate", "--count", "5", "--broker", broker],
        "bank import": ["bank", "import", str(hashes), "--bank", "b", "--signal-type", "md5", "--broker", broker,
                        "--signing-key", key],
        "bank stats": ["bank", "stats", "--broker", broker],
        "policy publish": ["policy", "publish", str(policy), "--broker", broker, "--signing-key", key],
        "topics apply": ["topics", "apply", "--broker", broker],
        "hash --emit": ["hash", str(image(tmp_path / "frame.png")), "--emit", "--stream-id", "st-1",
                        "--broker", broker],
    }


@pytest.mark.parametrize("command", ["simulate", "bank import", "bank stats", "policy publish", "topics apply",
                                     "hash --emit"])
def test_an_unreachable_broker_is_one_line_and_a_failure(tmp_path, command):
    broker = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    args = broker_commands(tmp_path, broker)[command]
    started = time.monotonic()
    result = CliRunner().invoke(cli, args)
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: cannot reach"), result.stderr
    assert broker.removeprefix("kafka://") in errors[0]


def test_a_streamsafe_error_is_one_line_with_exit_code_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: nope\n")
    result = CliRunner().invoke(cli, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1, result.stderr


def test_other_failures_are_not_called_broker_failures(tmp_path):
    missing = tmp_path / "missing-dir" / "out.jsonl"
    result = CliRunner().invoke(cli, ["simulate", "--scenarios", "--streams", "2", "--out", str(missing)])
    assert isinstance(result.exception, OSError)  # a file problem, not "cannot reach the broker"


def frame_hashes_validator():
    return fastjsonschema.compile(dict(load_contract()[FRAME_HASHES].schema))


def test_hash_prints_frame_hashes_messages_of_the_contract(tmp_path):
    valid = frame_hashes_validator()
    video = tmp_path / "my clip.mp4"
    write_video(video, seconds=3)
    result = CliRunner().invoke(cli, ["hash", str(image(tmp_path / "frame.png")), str(video),
                                      "--start-ms", "1790000000000"])
    assert result.exit_code == 0, result.output
    messages = [orjson.loads(line) for line in result.stdout.splitlines()]
    for message in messages:
        valid(message)  # raises JsonSchemaException if the contract would reject it
    assert [m["stream_id"] for m in messages] == ["frame.png", "my-clip.mp4", "my-clip.mp4", "my-clip.mp4"]
    assert [m["frames"][0]["seq"] for m in messages] == [0, 0, 1, 2]
    assert [m["frames"][0]["ts_ms"] for m in messages] == [1_790_000_000_000 + t for t in (0, 0, 1000, 2000)]


def test_hash_emit_sends_contract_messages_of_at_most_64_frames(tmp_path, monkeypatch):
    valid = frame_hashes_validator()
    sent: list[tuple[str, bytes, bytes]] = []

    class Producer:
        async def send_and_wait(self, topic, value, key):
            sent.append((topic, value, key))

        async def stop(self):
            pass

    async def open_producer(settings):
        return Producer()

    monkeypatch.setattr("streamsafe.demo.player.open_producer", open_producer)
    video = tmp_path / "clip.mp4"
    write_video(video, seconds=2)
    result = CliRunner().invoke(cli, ["hash", str(video), str(video), "--emit", "--stream-id", "st-1",
                                      "--broker", "kafka://127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    assert len(sent) == 1 and sent[0][0] == "livestream.frame-hashes" and sent[0][2] == b"st-1"
    message = orjson.loads(sent[0][1])
    valid(message)
    assert [f["seq"] for f in message["frames"]] == [0, 1, 2, 3]  # one stream: seq runs on across files
    for line in result.stdout.splitlines():
        valid(orjson.loads(line))


def test_frames_are_split_into_messages_the_contract_accepts():
    valid = frame_hashes_validator()
    frames = [{"seq": i, "ts_ms": 1_790_000_000_000 + i, "md5": "0" * 32} for i in range(130)]
    messages = frame_hashes_messages("st-1", frames)
    assert [len(m["frames"]) for m in messages] == [64, 64, 2]
    for message in messages:
        valid(message)


def test_hash_dihedral_emits_version_2_messages_the_worker_decodes(tmp_path, monkeypatch):
    from streamsafe.events.decode import InputDecoder
    from streamsafe.matching.dihedral import VARIANTS
    from streamsafe.settings import Settings

    sent: list[bytes] = []

    class Producer:
        async def send_and_wait(self, topic, value, key):
            sent.append(value)

        async def stop(self):
            pass

    async def open_producer(settings):
        return Producer()

    monkeypatch.setattr("streamsafe.demo.player.open_producer", open_producer)
    frame = image(tmp_path / "frame.png")
    plain = CliRunner().invoke(cli, ["hash", str(frame), "--start-ms", "1790000000000"])
    result = CliRunner().invoke(cli, ["hash", str(frame), "--dihedral", "--emit", "--stream-id", "st-1",
                                      "--start-ms", "1790000000000", "--broker", "kafka://127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    printed = orjson.loads(result.stdout.splitlines()[0])
    assert orjson.loads(sent[0]) == printed and printed["schema_version"] == 2
    decoder = InputDecoder(load_contract(), Settings().max_message_bytes)
    batch = decoder.decode(FRAME_HASHES, b"st-1", sent[0])
    (decoded,) = batch.frames
    assert decoded.pdq == orjson.loads(plain.stdout)["frames"][0]["pdq"]  # pdq stays the identity hash
    assert tuple(decoded.pdq_dihedral) == VARIANTS
    assert orjson.loads(plain.stdout)["schema_version"] == 1 and "pdq_dihedral" not in plain.stdout


def test_a_full_message_of_dihedral_frames_fits_the_size_limit():
    from streamsafe.hashing.frames import FrameHashes
    from streamsafe.matching.dihedral import VARIANTS
    from streamsafe.settings import Settings

    hashes = FrameHashes("f", "f" * 64, 100, "f" * 32, "f" * 64, pdq_dihedral=dict.fromkeys(VARIANTS, "f" * 64))
    frames = [hashes.as_frame(seq=10**9 + i, ts_ms=1_790_000_000_000 + i) for i in range(64)]
    (message,) = frame_hashes_messages("s" * 128, frames)
    frame_hashes_validator()(message)
    assert len(orjson.dumps(message)) < Settings().max_message_bytes
