"""The `streamsafe` command's error path: one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from streamsafe.brokers.base import free_port
from streamsafe.cli import cli
from streamsafe.policy.loader import default_policy_text


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
    return {
        "simulate": ["simulate", "--count", "5", "--broker", broker],
        "bank import": ["bank", "import", str(hashes), "--bank", "b", "--signal-type", "md5", "--broker", broker],
        "bank stats": ["bank", "stats", "--broker", broker],
        "policy publish": ["policy", "publish", str(policy), "--broker", broker],
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
