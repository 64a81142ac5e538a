"""The review loop without a broker: verdicts, deadlines, reports, expiry."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
import yaml

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.errors import PolicyError
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    METADATA,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
    TIMERS,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.pipeline.review import ReviewConfig
from streamsafe.pipeline.step import Lifecycle
from streamsafe.policy.loader import default_policy_text, load_policy, policy_from_mapping
from streamsafe.policy.policyset import PolicySet
from tests.signing_support import VERDICT_TRUST, encoded

T0 = 1_764_324_000_000
CASE = "ab" * 32


@pytest.fixture
def processor(contract):
    banks = HashBanks()
    banks.add(BankEntry("partner:1", "partner-list", "pdq", CASE))
    return RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {}, InMemoryPublisher(),
                         incidents={}, trusted_verdicts=VERDICT_TRUST, review=ReviewConfig(benign_cooldown_s=600),
                         clock=RecordClock())


def src(topic, offset=0, partition=3):
    return SourceRecord(topic, partition, offset, T0 + offset)


def flip(bits: int) -> str:
    return f"{int(CASE, 16) ^ ((1 << bits) - 1):064x}"


async def send(processor, topic, value, offset=0):
    key = value["stream_id"].encode()
    await processor.handle(topic, key, encoded(topic, key, value), src(topic, offset))


def verdict(stream, kind, escalation_id=None, ts=T0 + 60_000, category=None):
    v = {"schema_version": 1, "stream_id": stream, "verdict": kind, "reviewer_id": "rev-7", "ts_ms": ts}
    if escalation_id:
        v["escalation_id"] = escalation_id
    if category:
        v["category"] = category
    return v


async def weak_matches(processor, stream="s1"):
    await send(processor, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": stream,
                                     "ts_ms": T0, "broadcaster_id": "acct-9", "visibility": "public"})
    for seq in range(3):
        await send(processor, FRAME_HASHES, {"schema_version": 1, "stream_id": stream, "frames": [
            {"seq": seq, "ts_ms": T0 + seq * 1000, "pdq": flip(26), "pdq_quality": 90}]}, offset=seq + 1)
    escalations = [d for d in processor.publisher.decisions if d.action == "escalate" and d.stream_id == stream]
    assert escalations and escalations[-1].priority == "P0"
    return escalations[-1]


async def test_confirmed_blocks_reports_preserves_and_proposes(processor, contract):
    escalation = await weak_matches(processor)
    await send(processor, REVIEW_VERDICTS, verdict("s1", "confirmed", escalation.decision_id, category="B2"), 9)
    blocks = [d for d in processor.publisher.decisions if d.action == "block"]
    assert [b.rule for b in blocks] == ["reviewer-confirmed"]
    (report,) = processor.publisher.reports
    (preservation,) = processor.publisher.preservations
    jsonschema.validate(report.record, contract[REPORTS].schema)
    jsonschema.validate(preservation.record, contract[PRESERVATION].schema)
    assert report.record["category"] == "B2" and report.record["trigger"] == "reviewer"
    assert [m["frame_seq"] for m in report.record["hash_matches"]] == [0, 1, 2]
    assert report.record["hash_matches"][0]["frame_hash"] == flip(26)
    assert report.record["reported_account"]["broadcaster_id"] == "acct-9"
    assert {d["action"] for d in report.record["decisions"]} >= {"escalate", "block"}
    assert preservation.record["frame_seqs"] == [0, 1, 2]
    assert preservation.record["preserve_until_ms"] == T0 + 60_000 + 365 * 86_400_000
    (proposal,) = processor.publisher.proposals  # one frame hash, seen three times
    assert proposal.bank == "internal-confirmed" and proposal.hash == flip(26)
    # a second confirmation is counted, not reported twice
    await send(processor, REVIEW_VERDICTS, verdict("s1", "confirmed", escalation.decision_id, category="B2"), 10)
    assert len(processor.publisher.reports) == 1
    assert len([d for d in processor.publisher.decisions if d.action == "block"]) == 1
    assert processor.metrics.registry.get_sample_value("streamsafe_review_verdicts_total",
                                                       {"outcome": "already_closed"}) == 1


async def test_a_report_made_before_the_broadcaster_was_known_goes_again_naming_them(contract):
    """Frames and metadata are read independently: a known frame can be reported before the
    record naming its broadcaster is read. The same report then goes again, completed, with its
    revision raised, once; its preservation request too."""
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "md5", "9e107d9d372bb6826bd81d3542a419d6"))
    processor = RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {},
                              InMemoryPublisher(), incidents={}, trusted_verdicts=VERDICT_TRUST, clock=RecordClock())
    frame = {"schema_version": 1, "stream_id": "s1", "frames": [
        {"seq": 4, "ts_ms": T0 + 2_000, "md5": "9e107d9d372bb6826bd81d3542a419d6"}]}
    started = {"schema_version": 1, "event": "stream.started", "stream_id": "s1", "ts_ms": T0,
               "broadcaster_id": "acct-9", "account_age_days": 40, "age_verified": False, "visibility": "public"}
    await send(processor, FRAME_HASHES, frame, 1)
    (first,) = processor.publisher.reports
    assert first.record["reported_account"]["broadcaster_id"] is None and "revision" not in first.record
    await send(processor, METADATA, started, 2)
    await send(processor, METADATA, started, 3)  # the same record again: nothing more to say
    await send(processor, METADATA, {**started, "event": "stream.ended", "ts_ms": T0 + 9_000}, 4)
    first_again, completed = processor.publisher.reports
    assert first_again is first
    assert completed.record["report_id"] == first.record["report_id"] and completed.record["revision"] == 2
    assert completed.record["schema_version"] == 2 and first.record["schema_version"] == 1
    assert completed.record["reported_account"] == {"broadcaster_id": "acct-9", "account_age_days": 40,
                                                     "age_verified": False}
    assert completed.record["stream"] == {"visibility": "public"}
    assert completed.record["times"]["stream_started"]["ms"] == T0
    assert completed.record["times"]["reported"] == first.record["times"]["reported"]
    assert completed.record["trigger"] == first.record["trigger"] == "policy"
    assert completed.record["hash_matches"] == first.record["hash_matches"]
    _, preservation = processor.publisher.preservations
    assert preservation.record["broadcaster_id"] == "acct-9" and preservation.record["revision"] == 2
    assert preservation.record["schema_version"] == 2
    assert preservation.record["preservation_id"] == completed.record["preservation_id"]
    for record in (completed.record, first.record):
        jsonschema.validate(record, contract[REPORTS].schema)
    jsonschema.validate(preservation.record, contract[PRESERVATION].schema)
    # in order, the first packet is already complete, and is the only one
    in_order = RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), {},
                             InMemoryPublisher(), incidents={}, trusted_verdicts=VERDICT_TRUST, clock=RecordClock())
    await send(in_order, METADATA, started, 2)
    await send(in_order, FRAME_HASHES, frame, 1)
    (only,) = in_order.publisher.reports
    assert only.record["report_id"] == first.record["report_id"]
    assert only.record["reported_account"] == completed.record["reported_account"]


async def test_a_reviewers_report_made_before_the_broadcaster_was_known_keeps_its_trigger_and_category(
        processor, contract):
    stream = "s1"
    for seq in range(3):  # weak matches read before the stream's start
        await send(processor, FRAME_HASHES, {"schema_version": 1, "stream_id": stream, "frames": [
            {"seq": seq, "ts_ms": T0 + seq * 1000, "pdq": flip(26), "pdq_quality": 90}]}, offset=seq + 1)
    escalation = next(d for d in reversed(processor.publisher.decisions) if d.action == "escalate")
    await send(processor, REVIEW_VERDICTS, verdict(stream, "confirmed", escalation.decision_id, category="B2"), 9)
    await send(processor, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": stream,
                                     "ts_ms": T0, "broadcaster_id": "acct-9", "visibility": "public"}, 10)
    first, completed = processor.publisher.reports
    assert first.record["reported_account"]["broadcaster_id"] is None
    assert completed.record["reported_account"]["broadcaster_id"] == "acct-9"
    for key in ("report_id", "trigger", "category", "incident_type", "times", "preservation_id"):
        if key != "times":
            assert completed.record[key] == first.record[key], key
    assert (completed.record["trigger"], completed.record["category"]) == ("reviewer", "B2")
    assert completed.record["times"]["reported"] == first.record["times"]["reported"]
    jsonschema.validate(completed.record, contract[REPORTS].schema)
    # one report, counted once
    assert processor.metrics.registry.get_sample_value(
        "streamsafe_reports_total", {"incident_type": "child_sexual_abuse_material"}) == 1


def test_an_incident_keeps_its_reports_trigger_and_category():
    from streamsafe.review.incident import Incident

    kept = Incident(partition=3, report_id="rep-" + "0" * 32, reported_at_ms=T0, report_trigger="reviewer",
                    report_category="grooming")
    assert Incident.from_record(kept.to_record()) == kept
    # stored before the trigger was kept: read without one, and its report is never sent again
    old = Incident.from_record({"p": 3, "r": ["rep-" + "0" * 32, T0]})
    assert (old.report_id, old.reported_at_ms, old.report_trigger, old.report_category) == (
        "rep-" + "0" * 32, T0, None, None)
    from streamsafe.pipeline.review import revise_report
    from streamsafe.scoring.state import StreamState

    assert revise_report("s1", StreamState(broadcaster_id="acct-9"), old, ReviewConfig()) is None
    assert revise_report("s1", StreamState(broadcaster_id="acct-9"), kept, ReviewConfig()) is not None


async def test_a_verdict_on_an_escalation_superseded_while_under_review_acts(processor):
    await send(processor, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": "s3", "ts_ms": T0,
                                     "broadcaster_id": "b", "visibility": "private", "account_age_days": 2})
    await send(processor, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s3", "classifier": "grooming_text",
                                               "model_version": "m", "score": 0.85, "ts_ms": T0 + 1000}, 1)
    (first,) = [d for d in processor.publisher.decisions if d.action == "escalate"]
    assert first.priority == "P1"
    for seq in range(3):  # a P0 supersedes the P1 while a reviewer looks at it
        await send(processor, FRAME_HASHES, {"schema_version": 1, "stream_id": "s3", "frames": [
            {"seq": seq, "ts_ms": T0 + 2000 + seq, "pdq": flip(26), "pdq_quality": 90}]}, offset=seq + 2)
    assert len([d for d in processor.publisher.decisions if d.action == "escalate"]) > 1
    await send(processor, REVIEW_VERDICTS, verdict("s3", "confirmed", first.decision_id, category="A2"), 9)
    assert processor.publisher.dead_letters == []
    assert [d.rule for d in processor.publisher.decisions if d.action == "block"] == ["reviewer-confirmed"]
    assert processor.publisher.dead_letters == []


async def test_what_a_confirmed_verdict_sets_off_is_bounded_by_the_policy(processor):
    document = yaml.safe_load(default_policy_text()) | {"verdicts": {"report": False, "bank_from": ["authority"]}}
    processor.use_policies(PolicySet(policy_from_mapping(document)))
    escalation = await weak_matches(processor)  # a partner bank's weak matches
    await send(processor, REVIEW_VERDICTS, verdict("s1", "confirmed", escalation.decision_id, category="B2"), 9)
    assert [d.rule for d in processor.publisher.decisions if d.action == "block"] == ["reviewer-confirmed"]
    assert processor.publisher.reports == [] and processor.publisher.proposals == []  # no report, nothing banked


@pytest.mark.parametrize("section", ["{report: maybe}", "{bank_from: [allow]}", "{bank_from: partner}", "[report]",
                                     "{report: true, also: 1}"])
def test_a_malformed_verdicts_section_is_refused(section):
    document = yaml.safe_load(default_policy_text())
    document["verdicts"] = yaml.safe_load(section)
    with pytest.raises(PolicyError, match="verdicts"):
        policy_from_mapping(document)


async def test_benign_closes_suppresses_and_blames_the_classifier(processor):
    await send(processor, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": "s2", "ts_ms": T0,
                                     "broadcaster_id": "b", "visibility": "private", "account_age_days": 2})
    await send(processor, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s2", "classifier": "grooming_text",
                                               "model_version": "m", "score": 0.85, "ts_ms": T0 + 1000}, 1)
    first = [d for d in processor.publisher.decisions if d.action == "escalate"]
    assert [d.priority for d in first] == ["P1"]
    await send(processor, REVIEW_VERDICTS, verdict("s2", "benign", first[0].decision_id, ts=T0 + 2000), 2)
    assert processor.metrics.registry.get_sample_value("streamsafe_false_positives_total",
                                                       {"classifier": "grooming_text"}) == 1
    # within the cooldown: a stronger signal of the same kind does not re-escalate at P1
    await send(processor, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s2", "classifier": "grooming_text",
                                               "model_version": "m", "score": 0.97, "ts_ms": T0 + 3000}, 3)
    assert len([d for d in processor.publisher.decisions if d.action == "escalate"]) == 1
    # after the cooldown it can be escalated again
    await send(processor, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s2", "classifier": "grooming_text",
                                               "model_version": "m", "score": 0.99, "ts_ms": T0 + 700_000}, 4)
    assert len([d for d in processor.publisher.decisions if d.action == "escalate"]) == 2


async def test_verdicts_on_unknown_escalations_are_refused_not_fatal(processor):
    await send(processor, REVIEW_VERDICTS, verdict("s-none", "benign", "dec-" + "0" * 32))
    assert processor.metrics.registry.get_sample_value(
        "streamsafe_control_refused_total", {"topic": REVIEW_VERDICTS, "reason": "no_open_escalation"}) == 1
    assert [d.reason for d in processor.publisher.dead_letters] == ["no_open_escalation"]
    assert processor.publisher.decisions == [] and processor.publisher.reports == []
    (audit,) = processor.publisher.audits
    assert audit["outcome"] == "refused" and audit["reason"] == "no_open_escalation"


async def test_missed_deadline_reescalates_and_restricts_once(processor):
    escalation = await weak_matches(processor, "s3")
    due = escalation.review_due_ms
    ticks = processor.due_ticks(due + 1)
    assert [(t.kind, t.escalation_id, p) for t, p in ticks] == [("sla_check", escalation.decision_id, 3)]
    tick = ticks[0][0]
    for offset in (20, 21):  # a repeated tick changes nothing
        await processor.handle(TIMERS, b"s3", orjson.dumps(tick.to_dict()), src(TIMERS, offset))
    breach = [d for d in processor.publisher.decisions if d.rule == "review-sla-breach"]
    assert [(d.action, d.priority) for d in breach] == [("escalate", "P0"), ("restrict", None)]
    assert breach[1].restrictions == ("new_viewers",)  # chat, discovery, gifting were already restricted
    assert breach[0].decided_at_ms == due
    assert processor.metrics.registry.get_sample_value("streamsafe_review_sla_breaches_total",
                                                       {"priority": "P0"}) == 1


async def test_ended_streams_are_released_unless_escalations_are_open(processor):
    for i in range(50):
        stream = f"short-{i}"
        await send(processor, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": stream,
                                         "ts_ms": T0, "broadcaster_id": "b"}, i * 2)
        await send(processor, METADATA, {"schema_version": 1, "event": "stream.ended", "stream_id": stream,
                                         "ts_ms": T0 + 5000, "broadcaster_id": "b"}, i * 2 + 1)
    await weak_matches(processor, "held")
    await send(processor, METADATA, {"schema_version": 1, "event": "stream.ended", "stream_id": "held",
                                     "ts_ms": T0 + 5000, "broadcaster_id": "b"}, 500)
    assert len(processor.states) == 51
    processor.lifecycle = Lifecycle(ended_ttl_ms=60_000, inactive_ttl_ms=3_600_000)
    for tick, _ in processor.due_ticks(T0 + 5000 + 60_001):
        await processor.handle(TIMERS, tick.stream_id.encode(), orjson.dumps(tick.to_dict()), src(TIMERS, 1))
    assert list(processor.states) == ["held"] and list(processor.incidents) == ["held"]
