"""`streamsafe replay` and `streamsafe evaluate` through the real broker, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest
import yaml

from streamsafe.events.contract import STATEMENTS, load_contract
from streamsafe.policy.loader import default_policy_text, load_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def scenarios(tmp_path):
    path = tmp_path / "scenarios.jsonl"
    made = subprocess.run([sys.executable, "-m", "streamsafe", "simulate", "--scenarios", "--streams", "40",
                           "--seed", "11", "--out", str(path)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return path


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    # the test broker is one node: the replay's topics get one replica, as on any development broker
    env = {**os.environ, "STREAMSAFE_REPLICATION_FACTOR": "1"}
    return subprocess.run([sys.executable, "-m", "streamsafe", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_evaluate_the_default_policy_against_a_stricter_shadow(broker, scenarios, tmp_path):
    version = load_policy().version
    stricter = tmp_path / "stricter.yaml"
    text = default_policy_text().replace(f'version: "{version}"', 'version: "no-reports"')
    stricter.write_text(text.replace("reports.distinct: {gte: 3, window: 10m}",
                                     "reports.distinct: {gte: 30, window: 10m}"))
    result = cli("evaluate", str(scenarios), "--json", "--broker", broker.url,
                 "--policy", str(load_policy_path()), "--policy", str(stricter))
    assert result.returncode == 0, result.stderr
    live, shadow = (json.loads(line) for line in result.stdout.strip().splitlines())
    assert live["policy_version"] == version and shadow["policy_version"] == "no-reports"
    lines = [json.loads(line) for line in scenarios.read_text().splitlines()]
    labels = [line["label"] for line in lines if "label" in line]
    assert live["harmful_streams"] == sum(label["harmful"] for label in labels) > 0
    assert live["benign_streams"] == sum(not label["harmful"] for label in labels) > 0
    assert live["recall_harmful"] == 1.0 and live["false_block_rate"] == 0.0
    # the brigade's reports escalate under the default and not under the stricter shadow
    assert live["false_escalation_rate"] > 0
    assert shadow["false_escalation_rate"] < live["false_escalation_rate"]
    assert live["tta_p50_ms"] is not None and live["tta_p50_ms"] <= live["tta_p95_ms"]


def test_replay_writes_every_decision_with_its_policy_version(broker, scenarios, tmp_path):
    out, statements_out = tmp_path / "decisions.jsonl", tmp_path / "statements.jsonl"
    result = cli("replay", str(scenarios), "--broker", broker.url, "--out", str(out),
                 "--statements-out", str(statements_out))
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert decisions and {d["policy_version"] for d in decisions} == {load_policy().version}
    blocked = {d["stream_id"] for d in decisions if d["action"] == "block"}
    assert blocked and all(s.startswith(("scn-known-hash", "scn-novel-abuse")) for s in blocked)
    assert all(d["explanation"]["top_contributions"] for d in decisions)
    # every block and restriction has exactly one statement of reasons, valid against the contract
    statements = [json.loads(line) for line in statements_out.read_text().splitlines()]
    validator = jsonschema.Draft7Validator(load_contract()[STATEMENTS].schema)
    for record in statements:
        assert not list(validator.iter_errors(record)), record
    enforced = {d["decision_id"]: d for d in decisions if d["action"] in ("block", "restrict")}
    assert {d["action"] for d in enforced.values()} == {"block", "restrict"}
    assert sorted({r["decision_id"] for r in statements}) == sorted(enforced)
    for record in statements:
        assert record["action"] == enforced[record["decision_id"]]["action"]
    # exported for the Transparency Database: the bare submissions, one per statement
    exported = cli("statements", "export", "--from-file", str(statements_out))
    assert exported.returncode == 0, exported.stderr
    submissions = [json.loads(line) for line in exported.stdout.splitlines()]
    assert submissions == [r["statement"] for r in {r["statement_id"]: r for r in statements}.values()]


def test_two_replays_of_one_recording_decide_byte_for_byte_alike(broker, tmp_path):
    recording = tmp_path / "small.jsonl"
    made = cli("simulate", "--scenarios", "--streams", "12", "--seed", "5", "--out", str(recording), timeout=60)
    assert made.returncode == 0, made.stderr
    lines = recording.read_text().splitlines()
    values = [json.loads(line).get("value") or {} for line in lines]
    times = [v["ts_ms"] for v in values if "ts_ms" in v] + [f["ts_ms"] for v in values for f in v.get("frames", [])]
    # a record the worker rejects (implausible_time) must not move the replay's times
    rejected = {"topic": "livestream.metadata", "key": "st-neg",
                "value": {"schema_version": 1, "stream_id": "st-neg", "event": "start", "ts_ms": -1}}
    recording.write_text("\n".join([json.dumps(rejected), *lines]) + "\n")
    outputs = []
    for run in ("first", "second"):
        out = tmp_path / f"{run}.jsonl"
        result = cli("replay", str(recording), "--broker", broker.url, "--out", str(out))
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    first = [json.loads(line) for line in outputs[0].splitlines()]
    assert first and outputs[0] == outputs[1]
    assert all(min(times) <= d["decided_at_ms"] <= max(times) for d in first)


def load_policy_path():
    from importlib import resources

    return resources.files("streamsafe.policy").joinpath("default.yaml")


def test_evaluate_scores_accounts_on_both_patterns_and_their_look_alikes(broker, tmp_path):
    path = tmp_path / "accounts.jsonl"
    made = cli("simulate", "--scenarios", "--streams", "10", "--accounts", "2", "--seed", "5", "--out", str(path))
    assert made.returncode == 0, made.stderr
    off = tmp_path / "accounts-off.yaml"
    version = load_policy().version
    document = yaml.safe_load(default_policy_text())
    document.update(version="accounts-off", accounts={"repeat_broadcaster": None, "viewer_grooming": None})
    off.write_text(yaml.safe_dump(document))
    scores = {}
    for policy in (load_policy_path(), off):
        result = cli("evaluate", str(path), "--json", "--broker", broker.url, "--policy", str(policy))
        assert result.returncode == 0, result.stderr
        score = json.loads(result.stdout.strip())
        scores[score["policy_version"]] = score
    live, without = scores[version], scores["accounts-off"]
    assert (live["harmful_accounts"], live["benign_accounts"]) == (4, 10)
    assert live["recall_accounts"] == 1.0 and live["false_action_rate_accounts"] == 0.0
    assert live["account_decisions"] == 4  # the two groomers: one escalation and one restriction each
    assert without["recall_accounts"] == 0.0 and without["account_decisions"] == 0
    assert live["recall_harmful"] > without["recall_harmful"] and live["false_block_rate"] == 0.0
