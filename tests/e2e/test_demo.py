"""`streamsafe demo --json`, run as a user runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_json_summary():
    result = subprocess.run(
        [sys.executable, "-m", "streamsafe", "demo", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["streams"] == 40
    # two streams hit a known hash (each repeatedly: blocked and reported once), two streams'
    # CSAM classifier scores rise until the policy escalates them for review at P0; the
    # reviewer confirms one (blocked, reported) and finds the other benign
    decisions = summary["decisions"]
    assert decisions["block"] == 3 and decisions["report"] == 2
    assert decisions["escalate"] >= 2
    assert summary["reports"] == 3
    assert summary["dead_lettered"] == 4
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"]
