"""Reviewer verdicts on a grooming viewer's decisions, without a broker: the account's escalation
joins the incident of the stream that completed its evidence; a confirmed verdict reports the
viewer (the person reported) with the streams involved and preserves them, blocks no stream (its
broadcaster is the likely victim); benign closes it; a verdict keyed by another stream is refused."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from streamsafe.accounts.step import VIEWER_GROOMING
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    ESCALATIONS,
    METADATA,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
    TIMERS,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.reports.cybertip import report_document
from streamsafe.reports.profile import load_profile
from streamsafe.review.incident import Incident
from streamsafe.scoring.state import StreamState
from tests.ncmec import assert_valid, needs_xsd
from tests.unit.test_accounts import MIN, T0, YOUNG, World, grooming, started
from tests.unit.test_cybertip import EXAMPLE_PROFILE

STREAMS = ["y-0", "y-1", "y-2"]


async def groomed(contract) -> World:
    """A viewer grooming three young broadcasters' streams: the account decision is keyed by y-2."""
    world = World(contract)
    for i, stream in enumerate(STREAMS):
        await world.send(METADATA, started(stream, f"b-{i}", T0, **YOUNG), T0)
        await world.send(CLASSIFIER_SIGNALS, grooming(stream, "v-1", T0 + (1 + i) * MIN), T0 + (1 + i) * MIN)
    return world


def account_escalation(world: World):
    (escalation,) = [d for d in world.decisions(VIEWER_GROOMING) if d.action == "escalate"
                     and d.subject == ("account", "v-1")]
    return escalation


def stream_escalation(world: World, stream: str):
    (escalation,) = [d for d in world.decisions(VIEWER_GROOMING) if d.action == "escalate"
                     and d.subject == ("stream", stream)]
    return escalation


def verdict(stream: str, escalation_id: str, kind: str = "confirmed", ts: int = T0 + 10 * MIN) -> dict:
    return {"schema_version": 1, "stream_id": stream, "escalation_id": escalation_id, "verdict": kind,
            "reviewer_id": "rev-1", "ts_ms": ts,
            **({"category": "grooming"} if kind == "confirmed" else {})}


def valid(contract, topic: str, record: dict) -> None:
    jsonschema.validate(record, contract[topic].schema, cls=jsonschema.Draft7Validator)


async def test_a_confirmed_account_escalation_reports_the_viewer_with_the_streams_involved(contract):
    world = await groomed(contract)
    account = account_escalation(world)
    assert account.stream_id == "y-2"
    decided = len(world.decisions())
    await world.send(REVIEW_VERDICTS, verdict("y-2", account.decision_id), T0 + 10 * MIN)
    assert world.publisher.dead_letters == []
    (packet,) = world.publisher.reports
    (preservation,) = world.publisher.preservations
    record = packet.record
    valid(contract, REPORTS, record)
    valid(contract, PRESERVATION, preservation.record)
    assert record["reported_account"] == {"broadcaster_id": None, "account_id": "v-1", "role": "viewer"}
    assert [s["stream_id"] for s in record["streams_involved"]] == STREAMS
    # the broadcaster known here (the likely victim) is context, not the person reported
    assert [s.get("broadcaster_id") for s in record["streams_involved"]] == [None, None, "b-2"]
    assert record["incident_type"] == "online_enticement" and record["trigger"] == "reviewer"
    assert account.decision_id in {d["decision_id"] for d in record["decisions"]}
    assert record["times"]["first_evidence"]["ms"] == T0 + MIN  # the first target's evidence, hours may have passed
    assert preservation.record["account_id"] == "v-1" and preservation.record["streams"] == STREAMS
    assert preservation.record["report_id"] == record["report_id"]
    assert preservation.record["from_ms"] <= T0 + MIN and preservation.record["to_ms"] >= T0 + 10 * MIN
    # no stream is blocked: its broadcaster is the likely victim
    assert [d.action for d in world.decisions()[decided:]] == []
    incident = Incident.from_record(world.records.incidents["y-2"])
    assert [e.status for e in incident.escalations] == ["confirmed", "confirmed"]  # the viewer's, both
    assert incident.report_id is None  # the stream's own report (of its broadcaster) is still to be made if due


async def test_a_confirmed_target_stream_escalation_reports_the_viewer_under_the_same_id(contract):
    world = await groomed(contract)
    await world.send(REVIEW_VERDICTS, verdict("y-2", account_escalation(world).decision_id), T0 + 10 * MIN)
    await world.send(REVIEW_VERDICTS, verdict("y-0", stream_escalation(world, "y-0").decision_id), T0 + 11 * MIN)
    first, second = world.publisher.reports
    assert first.report_id == second.report_id  # one report of the viewer; consumers de-duplicate on its id
    assert second.stream_id == "y-0" and second.record["reported_account"]["account_id"] == "v-1"
    assert [s["stream_id"] for s in second.record["streams_involved"]] == STREAMS
    assert not [d for d in world.decisions() if d.action == "block"]
    incident = Incident.from_record(world.records.incidents["y-0"])
    assert [e.status for e in incident.escalations] == ["confirmed"]


async def test_a_redelivered_confirmed_verdict_sends_the_same_report_again(contract):
    world = await groomed(contract)
    confirmed = verdict("y-2", account_escalation(world).decision_id)
    await world.send(REVIEW_VERDICTS, confirmed, T0 + 10 * MIN)
    await world.send(REVIEW_VERDICTS, confirmed, T0 + 10 * MIN)
    first, again = world.publisher.reports
    assert first.record == again.record


async def test_a_benign_account_escalation_closes_it_and_reports_nothing(contract):
    world = await groomed(contract)
    account = account_escalation(world)
    await world.send(REVIEW_VERDICTS, verdict("y-2", account.decision_id, "benign"), T0 + 10 * MIN)
    assert world.publisher.reports == [] and world.publisher.dead_letters == []
    incident = Incident.from_record(world.records.incidents["y-2"])
    assert {e.decision_id: e.status for e in incident.escalations} == {
        account.decision_id: "benign", stream_escalation(world, "y-2").decision_id: "open"}
    # a viewer's pattern says nothing about the stream's own risk: no cooldown holds its escalations off
    assert StreamState.from_record(world.records.states["y-2"]).cooldown_until_ms == 0


@pytest.mark.parametrize("stream", ["y-0", "y-1"])
async def test_an_account_escalation_named_by_a_verdict_of_another_stream_is_refused(contract, stream):
    world = await groomed(contract)
    await world.send(REVIEW_VERDICTS, verdict(stream, account_escalation(world).decision_id), T0 + 10 * MIN)
    assert [d.reason for d in world.publisher.dead_letters] == ["no_open_escalation"]
    assert world.publisher.reports == []


@needs_xsd
async def test_the_viewer_report_exports_as_valid_cybertipline_xml_naming_the_viewer(contract):
    world = await groomed(contract)
    await world.send(REVIEW_VERDICTS, verdict("y-2", account_escalation(world).decision_id),
                     T0 + 10 * MIN)
    (packet,) = world.publisher.reports
    report = report_document(packet.record, load_profile(EXAMPLE_PROFILE))
    assert_valid(report)
    (user,) = report.findall("personOrUserReported")
    assert user.findtext("espIdentifier") == "v-1"
    assert all(s in user.findtext("additionalInfo") for s in STREAMS)
    urls = [u.text for u in report.iter("url")]
    assert all(any(s in u for u in urls) for s in STREAMS)
    assert report.findtext("incidentSummary/incidentType") == "Online Enticement of Children for Sexual Acts"


async def test_a_missed_deadline_raises_an_escalation_still_naming_the_viewer(contract):
    world = await groomed(contract)
    account = account_escalation(world)
    due = account.review_due_ms
    (tick,) = [t for t, _ in world.records.due_ticks(due) if t.escalation_id == account.decision_id]
    await world.records.handle(TIMERS, b"y-2", orjson.dumps(tick.to_dict()), SourceRecord(TIMERS, 0, 900, due))
    (raised,) = [d for d in world.decisions() if d.rule == "review-sla-breach"]
    assert (raised.stream_id, raised.priority, raised.subject, raised.streams) == ("y-2", "P0", ("stream", "y-2"),
                                                                                   tuple(STREAMS))
    jsonschema.validate(raised.to_record(), contract[ESCALATIONS].schema, cls=jsonschema.Draft7Validator)
    await world.send(REVIEW_VERDICTS, verdict("y-2", raised.decision_id, ts=due + MIN), due + MIN)
    (packet,) = world.publisher.reports
    assert packet.record["reported_account"]["account_id"] == "v-1"
    assert not [d for d in world.decisions() if d.action == "block"]
    incident = Incident.from_record(world.records.incidents["y-2"])
    assert not incident.open_escalations()
