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


def test_every_block_and_restriction_in_the_demo_has_a_valid_statement_of_reasons(tmp_path):
    import jsonschema

    from streamsafe.events.contract import STATEMENTS, load_contract

    out = tmp_path / "statements.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "streamsafe", "demo", "--json", "--statements-out", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    validator = jsonschema.Draft7Validator(load_contract()[STATEMENTS].schema)
    for record in records:
        assert not list(validator.iter_errors(record)), record
    # every block (three) and restriction the demo decided has one, and nothing else does
    enforced = summary["decisions"].get("block", 0) + summary["decisions"].get("restrict", 0)
    assert summary["decisions_without_statement"] == 0
    # (counts of decisions include a record sent twice, e.g. resent after a timeout; statements are distinct)
    assert len({r["decision_id"] for r in records}) == summary["statements"] >= 3
    assert summary["statements"] <= enforced
    assert {r["action"] for r in records} <= {"block", "restrict"}
