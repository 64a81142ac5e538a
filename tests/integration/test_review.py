"""The review loop through the real broker: verdicts, deadlines across restarts, reports, expiry."""

from __future__ import annotations

import asyncio
import time

import jsonschema
import pytest

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import (
    ACTIONS,
    CLASSIFIER_SIGNALS,
    ESCALATIONS,
    FRAME_HASHES,
    FRAME_MATCHES,
    HASHBANK_ENTRIES,
    METADATA,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
)
from streamsafe.policy.loader import default_policy_text
from tests.integration.waits import metric, processed, wait_for_metric

pytestmark = pytest.mark.integration

CASE = "ab" * 32
WEAK = f"{int(CASE, 16) ^ ((1 << 26) - 1):064x}"  # 26 bits away: a weak match
ALL = (ACTIONS, ESCALATIONS, REPORTS, PRESERVATION)


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def bank_list(tmp_path):
    path = tmp_path / "partner-list.txt"
    path.write_text(f"pdq:{CASE}\n")
    return path


@pytest.fixture
def fast_sla_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(default_policy_text().replace("  P0: 5m", "  P0: 3s").replace("  P1: 30m", "  P1: 3s"))
    return path


async def weak_frames(pipeline, stream: str) -> None:
    await pipeline.send(METADATA, stream.encode(), {"schema_version": 1, "event": "stream.started",
                                                   "stream_id": stream, "ts_ms": now_ms(), "broadcaster_id": "acct-3"})
    for seq in range(3):
        await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
            {"seq": seq, "ts_ms": now_ms(), "pdq": WEAK, "pdq_quality": 95}]})


def escalations(records, stream):
    return [r for r in records.on(ESCALATIONS) if r["stream_id"] == stream]


def actions(records, stream, action=None):
    return [r for r in records.on(ACTIONS) if r["stream_id"] == stream and action in (None, r["action"])]


async def test_confirmed_verdict_blocks_reports_preserves_and_proposes_hashes(pipeline, bank_list):
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    await weak_frames(pipeline, "s-c")
    first = await pipeline.read(until=lambda r: escalations(r, "s-c"), topics=ALL)
    (escalation,) = escalations(first, "s-c")
    await pipeline.send(REVIEW_VERDICTS, b"s-c", {"schema_version": 1, "stream_id": "s-c", "verdict": "confirmed",
                                                 "category": "A2", "escalation_id": escalation["decision_id"],
                                                 "reviewer_id": "rev-1", "ts_ms": now_ms()})
    records = await pipeline.read(until=lambda r: r.on(REPORTS) and r.on(PRESERVATION) and actions(r, "s-c", "block"),
                                  topics=ALL, settle_s=1.0)
    (block,) = actions(records, "s-c", "block")
    assert block["rule"] == "reviewer-confirmed"
    (report,) = records.on(REPORTS)
    (preservation,) = records.on(PRESERVATION)
    jsonschema.validate(report, pipeline.contract[REPORTS].schema)
    jsonschema.validate(preservation, pipeline.contract[PRESERVATION].schema)
    assert report["category"] == "A2" and report["preservation_id"] == preservation["preservation_id"]
    assert [m["distance"] for m in report["hash_matches"]] == [26, 26, 26]
    assert {d["decision_id"] for d in report["decisions"]} >= {escalation["decision_id"], block["decision_id"]}
    assert report["verdicts"][0]["reviewer_id"] == "rev-1" and report["times"]["reported"]["utc"].endswith("Z")
    proposals = await pipeline.read(until=lambda r: r.on(HASHBANK_ENTRIES), topics=(HASHBANK_ENTRIES,))
    (entry,) = proposals.on(HASHBANK_ENTRIES)
    assert entry["bank"] == "internal-confirmed" and entry["hash"] == WEAK and entry["source"] == "reviewer"
    # the proposed hash is matchable without a restart: the same content on another stream is a strong
    # match once the worker has read the proposal back from the bank topic
    await wait_for_metric(worker, "streamsafe_bank_entries", lambda v: v >= 1, bank="internal-confirmed",
                          signal_type="pdq")
    await pipeline.send(FRAME_HASHES, b"s-again", {"schema_version": 1, "stream_id": "s-again", "frames": [
        {"seq": 1, "ts_ms": now_ms(), "pdq": WEAK, "pdq_quality": 95}]})
    again = await pipeline.read(until=lambda r: actions(r, "s-again", "block"), topics=ALL)
    assert actions(again, "s-again", "block")[0]["evidence"][0]["bank"] == "internal-confirmed"


async def test_benign_verdict_closes_and_suppresses(pipeline, bank_list):
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    await weak_frames(pipeline, "s-b")
    first = await pipeline.read(until=lambda r: escalations(r, "s-b"), topics=ALL)
    (escalation,) = escalations(first, "s-b")
    await pipeline.send(REVIEW_VERDICTS, b"s-b", {"schema_version": 1, "stream_id": "s-b", "verdict": "benign",
                                                 "escalation_id": escalation["decision_id"], "reviewer_id": "rev-2",
                                                 "ts_ms": now_ms()})
    # verdicts and frames are separate topics, read in no fixed order: the verdict is handled first
    assert await wait_for_metric(worker, "streamsafe_review_verdicts_total", lambda v: v >= 1, outcome="benign") == 1
    assert await metric(worker, "streamsafe_false_positives_total", classifier="hash_match") == 1
    for seq in range(3, 8):  # more of the same evidence, within the cooldown
        await pipeline.send(FRAME_HASHES, b"s-b", {"schema_version": 1, "stream_id": "s-b", "frames": [
            {"seq": seq, "ts_ms": now_ms(), "pdq": WEAK, "pdq_quality": 95}]})
    await pipeline.send(FRAME_HASHES, b"s-probe", {"schema_version": 1, "stream_id": "s-probe", "frames": [
        {"seq": 1, "ts_ms": now_ms(), "pdq": CASE, "pdq_quality": 95}]})
    # every frame screened, and every match forwarded for them handled, before looking for what is absent
    await wait_for_metric(worker, "streamsafe_input_messages_total", lambda v: v >= 9, topic=FRAME_HASHES,
                          outcome="accepted")
    await processed(pipeline, FRAME_MATCHES)
    records = await pipeline.read(until=lambda r: escalations(r, "s-probe"), topics=ALL, settle_s=1.0)
    assert len(escalations(records, "s-b")) == 1


async def test_missed_review_deadline_reescalates_and_restricts_also_across_a_restart(
    pipeline, bank_list, fast_sla_policy, requires_table_recovery,
):
    env = {"STREAMSAFE_POLICY_FILE": str(fast_sla_policy), "STREAMSAFE_SWEEP_INTERVAL_S": "0.5"}
    first = pipeline.start_worker(bank_list, **env)
    first.wait_ready()
    await weak_frames(pipeline, "s-sla")
    await pipeline.read(until=lambda r: escalations(r, "s-sla"), topics=ALL)
    assert first.stop() == 0  # the deadline passes while no worker runs
    await asyncio.sleep(3.5)
    second = pipeline.start_worker(bank_list, **env)
    second.wait_ready()
    records = await pipeline.read(
        until=lambda r: [a for a in actions(r, "s-sla", "restrict") if a["rule"] == "review-sla-breach"],
        topics=ALL, timeout_s=40)
    breach = [e for e in escalations(records, "s-sla") if e["rule"] == "review-sla-breach"]
    assert breach and breach[0]["priority"] == "P0"
    (restrict,) = [a for a in actions(records, "s-sla", "restrict") if a["rule"] == "review-sla-breach"]
    assert restrict["restrictions"] == ["new_viewers"]
    assert "was not reviewed by" in restrict["reasons"][0]


async def test_state_of_ended_streams_is_released(pipeline):
    worker = pipeline.start_worker(STREAMSAFE_ENDED_STREAM_TTL_S="1", STREAMSAFE_SWEEP_INTERVAL_S="0.5")
    worker.wait_ready()
    for i in range(200):
        stream = f"short-{i}"
        for event in ("stream.started", "stream.ended"):
            await pipeline.send(METADATA, stream.encode(), {"schema_version": 1, "event": event, "stream_id": stream,
                                                           "ts_ms": now_ms(), "broadcaster_id": "b"})
        await pipeline.send(CLASSIFIER_SIGNALS, stream.encode(), {
            "schema_version": 1, "stream_id": stream, "classifier": "nudity", "model_version": "m",
            "score": 0.2, "ts_ms": now_ms()})
    # every stream's state was written to the changelog and then deleted (a tombstone)
    changelog = f"{pipeline.settings.app_id}-stream-state-changelog"
    latest: dict[bytes, bytes | None] = {}
    consumer = clients.consumer(pipeline.settings, changelog)
    await consumer.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    latest[m.key] = m.value
            if len(latest) >= 200 and all(v is None for v in latest.values()):
                break
    finally:
        await stop_consumer(consumer)
    assert len(latest) == 200
    assert [k for k, v in latest.items() if v is not None] == []
