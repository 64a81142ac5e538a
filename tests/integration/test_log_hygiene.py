"""A worker's logs at info level, through the demo scenario (known-hash blocks, escalations,
malformed input, a reviewer's confirmation and its report): no hash value, account id, chat
message id, stream id or report content appears in any line above debug."""

from __future__ import annotations

import time

import orjson
import pytest

from streamsafe.demo.player import play
from streamsafe.demo.scenario import build_demo_scenario, known_hashes
from streamsafe.events.contract import ACTIONS, ESCALATIONS, REPORTS, REVIEW_VERDICTS

pytestmark = pytest.mark.integration

_IDENTIFYING = ("md5", "sha256", "pdq", "broadcaster_id", "reporter_id", "chat_message_id", "stream_id")


def identifying_values(value: object) -> set[str]:
    """Every hash, account, message and stream identifier in a record, however nested."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _IDENTIFYING and isinstance(item, str) and len(item) >= 4:
                found.add(item)
            found |= identifying_values(item)
    elif isinstance(value, list):
        for item in value:
            found |= identifying_values(item)
    return found


async def test_info_logs_carry_no_hashes_accounts_or_report_contents(pipeline, tmp_path):
    scenario = build_demo_scenario(benign=8)
    hash_list = tmp_path / "demo-known.txt"
    hash_list.write_text("".join(f"md5:{md5}\nsha256:{sha}\n" for md5, sha in known_hashes()))
    worker = pipeline.start_worker(hash_list, STREAMSAFE_LOG_LEVEL="info")
    worker.wait_ready()
    await play(await pipeline.producer(), pipeline.settings, scenario.events)
    records = await pipeline.read(
        until=lambda r: {d["stream_id"] for d in r.on(ACTIONS) if d["action"] == "block"} >= scenario.expected_blocks
        and {e["stream_id"] for e in r.on(ESCALATIONS)} >= scenario.expected_escalations, timeout_s=60)
    escalation = records.on(ESCALATIONS)[0]
    await pipeline.send(REVIEW_VERDICTS, escalation["stream_id"].encode(), {
        "schema_version": 1, "escalation_id": escalation["decision_id"], "stream_id": escalation["stream_id"],
        "verdict": "confirmed", "category": "A1", "reviewer_id": "reviewer-hygiene-7",
        "ts_ms": int(time.time() * 1000)})
    reports = await pipeline.read(until=lambda r: len(r.on(REPORTS)) >= 1, topics=(REPORTS,), timeout_s=60)

    secrets = {"reviewer-hygiene-7"}
    for event in scenario.events:
        if isinstance(event.value, dict):
            secrets |= identifying_values(event.value)
    for md5, sha in known_hashes():
        secrets |= {md5, sha}
    for report in reports.on(REPORTS):
        secrets |= identifying_values(report) | {report["report_id"]}
    assert len(secrets) > 50  # the scenario's streams, frames, accounts, and the report
    lines = [orjson.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    above_debug = [line["message"] for line in lines if line.get("level") != "debug"]
    assert len(above_debug) > 10
    leaks = {(secret, message) for message in above_debug for secret in secrets if secret in message}
    assert not leaks, sorted(leaks)[:5]
