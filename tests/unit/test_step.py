"""The per-record step's clocks and promises, each a regression test: decisions never cite
evidence from their own future, a blocked stream gets one review task, expiry runs on
the processing clock (never on event time)."""

from __future__ import annotations

import time

import orjson
import pytest

from streamsafe.agents.clock import RecordClock, WallClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.pipeline.step import Lifecycle
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet

T0 = 1_764_324_000_000
KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"


def handler(contract, clock=None) -> RecordHandler:
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "md5", KNOWN_MD5))
    return RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {}, InMemoryPublisher(),
                         incidents={}, clock=clock or RecordClock(),
                         lifecycle=Lifecycle(ended_ttl_ms=3_600_000, inactive_ttl_ms=21_600_000))


async def send(h, topic, value, record_ts):
    await h.handle(topic, value["stream_id"].encode(), orjson.dumps(value),
                   SourceRecord(topic, 0, record_ts - T0, record_ts))


def signal(stream, classifier, score, ts):
    return {"schema_version": 1, "stream_id": stream, "classifier": classifier, "model_version": "m",
            "score": score, "ts_ms": ts}


def cited(decision) -> list[int]:
    return [e.ts_ms for e in decision.evidence]


@pytest.mark.parametrize("order", ["late-first", "in-order"])
async def test_a_decision_never_cites_evidence_newer_than_itself(contract, order):
    h = handler(contract)
    early, late = signal("s1", "minor_presence", 0.95, T0 + 2_000), signal("s1", "nudity", 0.95, T0 + 9_000)
    for i, value in enumerate((late, early) if order == "late-first" else (early, late)):
        await send(h, CLASSIFIER_SIGNALS, value, T0 + 10_000 + i)
    decisions = [d for d in h.publisher.decisions if not d.shadow]
    assert decisions, "minor presence and nudity must decide"
    for d in decisions:
        assert d.event_ts_ms >= max(cited(d)), (d.action, d.event_ts_ms, cited(d))


async def test_context_evidence_is_never_newer_than_the_escalation_citing_it(contract):
    h = handler(contract)
    await send(h, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": "s2", "ts_ms": T0 + 120_000,
                             "broadcaster_id": "b-1", "visibility": "private", "account_age_days": 2}, T0 + 120_001)
    await send(h, CLASSIFIER_SIGNALS, signal("s2", "grooming_text", 0.9, T0 + 10_000), T0 + 120_002)
    escalations = [d for d in h.publisher.decisions if d.action == "escalate" and not d.shadow]
    assert escalations
    for d in escalations:
        assert d.event_ts_ms >= max(cited(d))


async def test_a_stream_blocked_by_an_authority_match_gets_one_review_task(contract):
    h = handler(contract)
    await send(h, FRAME_HASHES, {"schema_version": 1, "stream_id": "s3",
                                 "frames": [{"seq": 1, "ts_ms": T0, "md5": KNOWN_MD5}]}, T0 + 5)
    live = [d for d in h.publisher.decisions if not d.shadow]
    assert sorted(d.action for d in live) == ["block", "escalate", "report"]
    (task,) = [d for d in live if d.action == "escalate"]
    assert task.rule == "authority-hash-strong" and task.priority == "P1"  # confirm the block, not a duplicate


async def test_expiry_runs_on_the_processing_clock_not_on_event_time(contract):
    h = handler(contract, clock=WallClock())
    now = int(time.time() * 1000)
    old = now - 10 * 86_400_000  # a replay of last week, or a producer with a skewed clock
    await send(h, METADATA, {"schema_version": 1, "event": "stream.ended", "stream_id": "s4", "ts_ms": old,
                             "broadcaster_id": "b-1"}, now)
    after = int(time.time() * 1000)  # the handler read its wall clock between `now` and here
    assert "s4" in h.states
    assert h.due_ticks() == []  # touched just now: kept for the ended-stream TTL
    assert h.due_ticks(now + 3_600_000 - 1) == []  # the TTL counts from processing, not from `old`
    ticks = h.due_ticks(after + 3_600_000 + 1)
    assert [(t.stream_id, t.kind) for t, _ in ticks] == [("s4", "expire")]


async def test_other_rules_do_not_queue_more_review_tasks_for_a_blocked_stream(contract):
    h = handler(contract)
    await send(h, FRAME_HASHES, {"schema_version": 1, "stream_id": "s5",
                                 "frames": [{"seq": 1, "ts_ms": T0, "md5": KNOWN_MD5}]}, T0 + 5)
    await send(h, CLASSIFIER_SIGNALS, signal("s5", "csam", 0.97, T0 + 1_000), T0 + 1_005)  # csam-classifier: P0
    tasks = [(d.rule, d.priority) for d in h.publisher.decisions if d.action == "escalate" and not d.shadow]
    assert tasks == [("authority-hash-strong", "P1")]
