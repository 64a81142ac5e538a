"""Appeals without a broker: appeal -> review item -> verdict -> reinstate, idempotence, deadlines."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import (
    ACTIONS,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
    REVIEW_APPEALS,
    REVIEW_VERDICTS,
    STATEMENTS,
    TIMERS,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet
from tests.signing_support import VERDICT_TRUST, encoded

T0 = 1_764_324_000_000
KNOWN = "cd" * 32
PARTNER = "ab" * 32
HOUR = 3_600_000


@pytest.fixture
def handler(contract):
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "pdq", KNOWN))
    banks.add(BankEntry("partner:1", "partner-list", "pdq", PARTNER))
    return RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {}, InMemoryPublisher(),
                         incidents={}, trusted_verdicts=VERDICT_TRUST, clock=RecordClock())


@pytest.fixture
def valid(contract):
    validators = {t: jsonschema.Draft7Validator(contract[t].schema) for t in (ACTIONS, ESCALATIONS, STATEMENTS)}

    def check(topic, record):
        errors = [e.message for e in validators[topic].iter_errors(record)]
        assert not errors, errors
        return record
    return check


async def send(handler, topic, value, offset, ts=None):
    # the broker time of a record: just after the event it carries (as a live producer's would be)
    at = max(T0, value.get("ts_ms", 0), value.get("submitted_at_ms", 0)) + offset
    source = SourceRecord(topic, 3, offset, ts if ts is not None else at)
    key = value["stream_id"].encode()
    await handler.handle(topic, key, encoded(topic, key, value), source)


def decisions(handler, action, stream=None):
    return [d for d in handler.publisher.decisions if d.action == action and stream in (None, d.stream_id)]


async def authority_block(handler, stream="s1"):
    await send(handler, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": stream, "ts_ms": T0,
                                   "broadcaster_id": "acct-9", "visibility": "public"}, 1)
    await send(handler, FRAME_HASHES, {"schema_version": 1, "stream_id": stream, "frames": [
        {"seq": 1, "ts_ms": T0 + 1, "pdq": KNOWN, "pdq_quality": 90}]}, 2)
    (block,) = decisions(handler, "block", stream)
    return block


async def partner_restrict(handler, stream="s2"):
    flipped = f"{int(PARTNER, 16) ^ ((1 << 26) - 1):064x}"
    for seq in range(3):
        await send(handler, FRAME_HASHES, {"schema_version": 1, "stream_id": stream, "frames": [
            {"seq": seq, "ts_ms": T0 + seq * 1000, "pdq": flipped, "pdq_quality": 90}]}, 10 + seq)
    (restrict,) = decisions(handler, "restrict", stream)
    return restrict


def appeal(stream, decision_id, appeal_id="apl-1", at=T0 + HOUR):
    return {"schema_version": 1, "appeal_id": appeal_id, "stream_id": stream, "decision_id": decision_id,
            "appellant_id": "acct-9", "submitted_at_ms": at, "statement": "it was a cartoon"}


def verdict(stream, kind, escalation_id=None, ts=T0 + 2 * HOUR):
    v = {"schema_version": 1, "stream_id": stream, "verdict": kind, "reviewer_id": "rev-7", "ts_ms": ts}
    if escalation_id:
        v["escalation_id"] = escalation_id
    return v


def appeal_items(handler, stream):
    return [d for d in decisions(handler, "escalate", stream) if d.rule == "appeal"]


async def test_appeal_review_reverse_reinstates_with_a_statement(handler, valid):
    restrict = await partner_restrict(handler)
    await send(handler, REVIEW_APPEALS, appeal("s2", restrict.decision_id), 20)
    (item,) = appeal_items(handler, "s2")
    record = valid(ESCALATIONS, item.to_record())
    assert record["priority"] == "P2" and record["review_due_ms"] == T0 + HOUR + 20 + 2 * HOUR  # review_sla.P2
    assert record["appeal_id"] == "apl-1" and record["appealed_decision_id"] == restrict.decision_id
    assert "it was a cartoon" not in orjson.dumps(record).decode() and "acct-9" not in orjson.dumps(record).decode()
    assert not decisions(handler, "reinstate")
    await send(handler, REVIEW_VERDICTS, verdict("s2", "reversed", item.decision_id), 21)
    (reinstate,) = decisions(handler, "reinstate")
    record = valid(ACTIONS, reinstate.to_record())
    assert record["reverses"] == restrict.decision_id and record["appeal_id"] == "apl-1"
    assert record["restrictions"] == list(restrict.restrictions)  # what it lifts
    statement = next(s.record for s in handler.publisher.statements if s.record["decision_id"] == reinstate.decision_id)
    valid(STATEMENTS, statement)
    assert statement["statement"]["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"
    assert "restrict" in statement["statement"]["decision_visibility_other"]
    assert handler.metrics.review_verdicts.labels("reversed")._value.get() == 1
    assert handler.metrics.appeals.labels("appeal_opened")._value.get() == 1


async def test_an_authority_hash_block_is_never_reinstated_without_a_reviewer(handler, valid):
    block = await authority_block(handler)
    await send(handler, REVIEW_APPEALS, appeal("s1", block.decision_id), 20)
    (item,) = appeal_items(handler, "s1")
    assert any("authority bank(s) ncmec" in r and "never reinstated automatically" in r for r in item.reasons)
    assert valid(ESCALATIONS, orjson.loads(item.encode()))["evidence"][0]["authority_banks"] == ["ncmec"]
    # a verdict on the stream as a whole (no escalation id) is refused: it neither reinstates nor closes the appeal
    await send(handler, REVIEW_VERDICTS, verdict("s1", "benign"), 21)
    await send(handler, REVIEW_VERDICTS, {**verdict("s1", "confirmed"), "category": "B2"}, 22)
    assert not decisions(handler, "reinstate")
    await send(handler, REVIEW_VERDICTS, verdict("s1", "upheld", item.decision_id), 23)
    assert not decisions(handler, "reinstate")
    # upheld closes it: a later reversal of the same item is refused (no open escalation)
    await send(handler, REVIEW_VERDICTS, verdict("s1", "reversed", item.decision_id), 24)
    assert not decisions(handler, "reinstate")
    assert [d.reason for d in handler.publisher.dead_letters] == ["no_open_escalation"] * 3
    assert handler.metrics.review_verdicts.labels("upheld")._value.get() == 1


async def test_a_reviewer_can_reverse_an_authority_hash_block_but_not_block_again_without_an_escalation(handler):
    block = await authority_block(handler)
    await send(handler, REVIEW_APPEALS, appeal("s1", block.decision_id), 20)
    (item,) = appeal_items(handler, "s1")
    await send(handler, REVIEW_VERDICTS, verdict("s1", "reversed", item.decision_id), 21)
    (reinstate,) = decisions(handler, "reinstate")
    assert reinstate.reverses == block.decision_id
    # the same reversal again (a redelivery) sends the same reinstatement again, nothing new
    await send(handler, REVIEW_VERDICTS, verdict("s1", "reversed", item.decision_id), 21)
    assert {d.decision_id for d in decisions(handler, "reinstate")} == {reinstate.decision_id}
    # a stream-wide confirm names no open escalation: refused, nothing blocked
    await send(handler, REVIEW_VERDICTS, {**verdict("s1", "confirmed", ts=T0 + 3 * HOUR), "category": "A2"}, 22)
    assert len(decisions(handler, "block", "s1")) == 1
    assert handler.publisher.dead_letters[-1].reason == "no_open_escalation"


async def test_a_redelivered_appeal_creates_nothing_new(handler):
    restrict = await partner_restrict(handler)
    await send(handler, REVIEW_APPEALS, appeal("s2", restrict.decision_id), 20)
    before = list(handler.publisher.decisions)
    incident = dict(handler.incidents)
    # the producer sends it again (a new record), and another appeal of the same decision arrives
    await send(handler, REVIEW_APPEALS, appeal("s2", restrict.decision_id), 21)
    await send(handler, REVIEW_APPEALS, appeal("s2", restrict.decision_id, appeal_id="apl-2"), 22)
    assert handler.publisher.decisions == before
    assert handler.metrics.appeals.labels("duplicate_appeal")._value.get() == 1
    assert handler.metrics.appeals.labels("appeal_merged")._value.get() == 1
    assert len(handler.incidents["s2"]["e"]) == len(incident["s2"]["e"])
    # the very record again (a re-delivery after a crash) re-sends its byte-identical review item
    await send(handler, REVIEW_APPEALS, appeal("s2", restrict.decision_id), 20)
    (item, again) = appeal_items(handler, "s2")
    assert item.encode() == again.encode()
    # a reversal, re-delivered, re-sends the same reinstatement, and a resubmitted one nothing
    await send(handler, REVIEW_VERDICTS, verdict("s2", "reversed", item.decision_id), 30)
    await send(handler, REVIEW_VERDICTS, verdict("s2", "reversed", item.decision_id), 30)
    await send(handler, REVIEW_VERDICTS, verdict("s2", "reversed", item.decision_id), 31)
    reinstated = decisions(handler, "reinstate")
    assert len(reinstated) == 2 and len({d.decision_id for d in reinstated}) == 1
    assert len({s.statement_id for s in handler.publisher.statements if s.record["action"] == "reinstate"}) == 1


async def test_an_appeal_of_a_decision_the_incident_lacks_goes_to_a_person(handler, valid):
    unknown = "dec-" + "0" * 32
    await send(handler, REVIEW_APPEALS, appeal("gone", unknown), 5)
    (item,) = appeal_items(handler, "gone")
    assert "not in this stream's incident" in item.reasons[0]
    assert "gone" in handler.states  # a state to release the incident with, in time
    await send(handler, REVIEW_VERDICTS, verdict("gone", "reversed", item.decision_id), 6)
    (reinstate,) = decisions(handler, "reinstate")
    assert reinstate.reverses == unknown
    valid(STATEMENTS, handler.publisher.statements[-1].record)


async def test_a_missed_appeal_deadline_raises_it_without_restricting(handler):
    block = await authority_block(handler)
    await send(handler, REVIEW_APPEALS, appeal("s1", block.decision_id), 20)
    (item,) = appeal_items(handler, "s1")
    restricts = len(decisions(handler, "restrict"))
    ticks = handler.due_ticks(item.review_due_ms + 1)
    tick = next(t for t, _ in ticks if t.escalation_id == item.decision_id)
    await send(handler, TIMERS, tick.to_dict(), 40, ts=item.review_due_ms + 1)
    raised = appeal_items(handler, "s1")[-1]
    assert raised.priority == "P1" and raised.appeal_id == "apl-1" and raised.appealed_decision_id == block.decision_id
    assert any("authority bank(s) ncmec" in r for r in raised.reasons)
    assert len(decisions(handler, "restrict")) == restricts
    await send(handler, REVIEW_VERDICTS, verdict("s1", "reversed", raised.decision_id, ts=item.review_due_ms + 9), 41)
    assert [d.reverses for d in decisions(handler, "reinstate")] == [block.decision_id]


async def test_verdicts_that_answer_appeals_need_an_appeals_review_item(handler):
    await send(handler, REVIEW_VERDICTS, verdict("s9", "reversed"), 1)  # no escalation id: refused
    assert handler.publisher.dead_letters[-1].reason == "schema_violation"
    await send(handler, REVIEW_VERDICTS, verdict("s9", "reversed", "dec-" + "1" * 32), 2)
    assert not decisions(handler, "reinstate")
    assert handler.publisher.dead_letters[-1].reason == "no_open_escalation"  # not an escalation of s9


@pytest.mark.parametrize("broken", [
    {"decision_id": "block-1"}, {"appeal_id": ""}, {"statement": "x" * 2001}, {"submitted_at_ms": 1764410000},
    {"appellant_id": None}, {"extra": 1},
])
async def test_a_bad_appeal_is_dead_lettered(handler, broken):
    value = {**appeal("s1", "dec-" + "2" * 32), **broken}
    if value["appellant_id"] is None:
        del value["appellant_id"]
    await send(handler, REVIEW_APPEALS, value, 1)
    assert handler.publisher.dead_letters[-1].reason == "schema_violation"
    assert not handler.publisher.decisions


async def test_an_appeal_under_the_wrong_key_is_dead_lettered(handler):
    source = SourceRecord(REVIEW_APPEALS, 3, 1, T0)
    await handler.handle(REVIEW_APPEALS, b"other", orjson.dumps(appeal("s1", "dec-" + "2" * 32)), source)
    assert handler.publisher.dead_letters[-1].reason == "key_mismatch"


async def test_an_appeal_of_a_report_has_nothing_to_reinstate(handler):
    await authority_block(handler)
    (report,) = decisions(handler, "report", "s1")
    await send(handler, REVIEW_APPEALS, appeal("s1", report.decision_id), 20)
    (item,) = appeal_items(handler, "s1")
    assert any("nothing to reinstate" in r for r in item.reasons)
    await send(handler, REVIEW_VERDICTS, verdict("s1", "reversed", item.decision_id), 21)
    assert not decisions(handler, "reinstate")
    assert handler.metrics.review_verdicts.labels("nothing_to_reinstate")._value.get() == 1
