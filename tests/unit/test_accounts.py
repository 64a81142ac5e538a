"""Risk that follows accounts across streams, without a broker: the stream's handler sends
account signals, the account handler keeps the account's state and decides; both patterns
and their benign look-alikes; retention; the policy section; the contract of what is sent."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
import yaml

from streamsafe.accounts.handler import AccountHandler
from streamsafe.accounts.signals import AccountSignal, AccountSignalDecoder
from streamsafe.accounts.step import REPEAT_BROADCASTER, VIEWER_GROOMING
from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.clients import default_partition
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.errors import PolicyError
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    ACCOUNT_SIGNALS,
    ACTIONS,
    CLASSIFIER_SIGNALS,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import default_policy_text, load_policy
from streamsafe.policy.policyset import PolicySet
from tests.signing_support import VERDICT_TRUST, encoded

T0 = 1_764_324_000_000
KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"
MIN = 60_000


def policy_with(**accounts: object) -> str:
    """The default policy with its accounts section's keys replaced."""
    document = yaml.safe_load(default_policy_text())
    document["accounts"].update(accounts)
    return yaml.safe_dump(document)


class World:
    """One stream handler and one account handler, the account topic between them in memory."""

    def __init__(self, contract, policy_text: str | None = None) -> None:
        banks = HashBanks()
        banks.add(BankEntry("ncmec:1", "ncmec", "md5", KNOWN_MD5))
        self.contract = contract
        self.publisher = InMemoryPublisher()
        self.records = RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy(policy_text)), {},
                                     self.publisher, incidents={}, clock=RecordClock(),
                                     trusted_verdicts=VERDICT_TRUST)
        self.table: dict = {}
        self.accounts = AccountHandler(AccountSignalDecoder(contract[ACCOUNT_SIGNALS]), self.table, self.records,
                                       contract[ACCOUNT_SIGNALS].partitions, default_partition)
        self.offset = 0

    async def send(self, topic: str, value: dict, record_ts: int) -> None:
        self.offset += 1
        key = value["stream_id"].encode()
        await self.records.handle(topic, key, encoded(topic, key, value),
                                  SourceRecord(topic, 0, self.offset, record_ts))
        await self.deliver()

    async def deliver(self) -> None:
        """The account topics: every signal sent so far to its account's partition, every finding
        to its stream's, once."""
        while self.publisher.account_signals or self.publisher.account_findings:
            self.offset += 1
            if self.publisher.account_signals:
                signal = self.publisher.account_signals.pop(0)
                key = signal.account_id.encode()
                await self.accounts.handle(key, signal.encode(), SourceRecord(
                    ACCOUNT_SIGNALS, default_partition(key, self.accounts.partitions), self.offset,
                    signal.decided_at_ms))
            else:
                finding = self.publisher.account_findings.pop(0)
                await self.records.handle(ACCOUNT_FINDINGS, finding.stream_id.encode(),
                                          orjson.dumps(finding.to_dict()),
                                          SourceRecord(ACCOUNT_FINDINGS, 0, self.offset, finding.decided_at_ms + 5))

    def decisions(self, rule: str | None = None):
        return [d for d in self.publisher.decisions if not d.shadow and (rule is None or d.rule == rule)]


def started(stream: str, broadcaster: str, ts: int, **context) -> dict:
    return {"schema_version": 1, "stream_id": stream, "event": "stream.started", "ts_ms": ts,
            "broadcaster_id": broadcaster, **context}


def frames(stream: str, ts: int, md5: str = KNOWN_MD5) -> dict:
    return {"schema_version": 1, "stream_id": stream, "frames": [{"seq": 1, "ts_ms": ts, "md5": md5}]}


def grooming(stream: str, viewer: str | None, ts: int, score: float = 0.93) -> dict:
    value = {"schema_version": 1, "stream_id": stream, "classifier": "grooming_text", "model_version": "gt-1",
             "score": score, "ts_ms": ts, "evidence": {"chat_message_id": f"m-{ts}"}}
    if viewer is not None:
        value.update(schema_version=2, actor_account_id=viewer)
    return value


YOUNG = {"age_verified": False, "account_age_days": 20, "visibility": "public"}
ADULT = {"age_verified": True, "account_age_days": 900, "visibility": "public"}


async def block_then_restart(world: World, gap_ms: int) -> None:
    await world.send(METADATA, started("s-1", "b-1", T0, **ADULT), T0)
    await world.send(FRAME_HASHES, frames("s-1", T0 + 1_000), T0 + 1_000)
    assert [d.action for d in world.decisions() if d.stream_id == "s-1"][:1] == ["block"]
    await world.send(METADATA, started("s-2", "b-1", T0 + gap_ms, **ADULT), T0 + gap_ms)


def valid(contract, decision) -> None:
    topic = ESCALATIONS if decision.action == "escalate" else ACTIONS
    jsonschema.validate(decision.to_record(), contract[topic].schema, cls=jsonschema.Draft7Validator)


async def test_a_blocked_broadcasters_next_stream_is_restricted_and_escalated_at_start(contract):
    world = World(contract)
    await block_then_restart(world, 2 * MIN)
    repeat = world.decisions(REPEAT_BROADCASTER)
    assert [(d.stream_id, d.action, d.priority) for d in repeat] == [("s-2", "restrict", None),
                                                                      ("s-2", "escalate", "P0")]
    restrict, escalate = repeat
    assert restrict.restrictions == ("chat", "gifting", "discovery", "new_viewers")
    assert "authority-hash-strong" in escalate.reasons[0] and "prior_blocks 1" in escalate.reasons[0]
    assert escalate.subject == ("stream", "s-2") and escalate.review_due_ms == T0 + 2 * MIN + 5 * MIN
    evidence = escalate.to_record()["evidence"][0]
    assert evidence == {"kind": "account", "ts_ms": T0 + 1_000, "role": "broadcaster", "account_id": "b-1",
                        "rule": "authority-hash-strong", "stream_id": "s-1"}
    for d in repeat:
        assert d.to_record()["schema_version"] == 2
        valid(contract, d)
    # stream decisions that owe nothing to accounts stay version 1, without subject
    block = next(d for d in world.decisions() if d.action == "block")
    assert block.to_record()["schema_version"] == 1 and "subject" not in block.to_record()


async def test_a_restart_after_a_network_drop_with_no_block_changes_nothing(contract):
    world = World(contract)
    await world.send(METADATA, started("s-1", "b-1", T0, **ADULT), T0)
    await world.send(METADATA, {**started("s-1", "b-1", T0 + 5_000), "event": "stream.ended"}, T0 + 5_000)
    await world.send(METADATA, started("s-2", "b-1", T0 + 20_000, **ADULT), T0 + 20_000)
    assert world.decisions() == []
    # what is kept of a broadcaster with nothing against them: two stream starts, for an hour
    assert world.table["b-1"]["b"] == [] and len(world.table["b-1"]["s"]) == 2
    due = world.accounts.due_expiries(T0 + 20_000 + 3_600_001)
    await world.publisher.send_account_signals(due)
    await world.deliver()
    assert world.table == {}


async def test_a_block_older_than_the_window_or_the_retention_no_longer_follows_the_broadcaster(contract):
    world = World(contract, policy_with(retention="2h", repeat_broadcaster={"window": "1h"},
                                        viewer_grooming={"window": "1h"}))
    await block_then_restart(world, 3 * 3_600_000)
    assert world.decisions(REPEAT_BROADCASTER) == []
    assert world.table["b-1"]["b"] == []  # the block is gone; only the new start is kept (for an hour)


async def test_the_sweep_expires_account_state_past_retention(contract):
    world = World(contract)
    await block_then_restart(world, MIN)
    assert list(world.table) == ["b-1"]
    retention_ms = int(world.records.policies.live.accounts.retention_s * 1000)
    newest = T0 + MIN  # the restart
    assert world.accounts.due_expiries(newest + retention_ms) == []
    due = world.accounts.due_expiries(newest + retention_ms + 1)
    assert [(s.account_id, s.kind) for s in due] == [("b-1", "expire")]
    await world.publisher.send_account_signals(due)
    await world.deliver()
    assert world.table == {}


async def test_a_viewer_grooming_three_young_broadcasters_gets_one_account_decision(contract):
    world = World(contract)
    for i in range(3):
        await world.send(METADATA, started(f"y-{i}", f"b-{i}", T0 + i * MIN, **YOUNG), T0 + i * MIN)
    for i in range(3):
        ts = T0 + (10 + i * 20) * MIN
        await world.send(CLASSIFIER_SIGNALS, grooming(f"y-{i}", "v-1", ts), ts)
        await world.send(CLASSIFIER_SIGNALS, grooming(f"y-{i}", "v-1", ts + 1_000), ts + 1_000)  # same stream again
    decided = world.decisions(VIEWER_GROOMING)
    account = [d for d in decided if d.subject == ("account", "v-1")]
    assert sorted(d.action for d in account) == ["escalate", "restrict"]
    assert all(d.streams == ("y-0", "y-1", "y-2") for d in account)
    assert next(d for d in account if d.action == "restrict").restrictions == ("chat",)
    per_stream = [d for d in decided if d.subject and d.subject[0] == "stream"]
    assert sorted(d.stream_id for d in per_stream) == ["y-0", "y-1", "y-2"]
    assert all(d.action == "escalate" and {e.as_record()["account_id"] for e in d.evidence} == {"v-1"}
               for d in per_stream)
    for d in decided:
        valid(contract, d)
    # a fourth stream while the account action is in force: nothing new (one action per rule)
    await world.send(METADATA, started("y-3", "b-3", T0 + 90 * MIN, **YOUNG), T0 + 90 * MIN)
    await world.send(CLASSIFIER_SIGNALS, grooming("y-3", "v-1", T0 + 91 * MIN), T0 + 91 * MIN)
    assert len(world.decisions(VIEWER_GROOMING)) == len(decided)


@pytest.mark.parametrize("case", ["two-young-streams", "three-adult-public-streams", "no-author",
                                  "weak-scores", "spread-beyond-the-window", "no-metadata"])
async def test_benign_look_alikes_get_no_account_decision(contract, case):
    world = World(contract)
    n = 2 if case == "two-young-streams" else 3
    gap = 13 * 60 * MIN if case == "spread-beyond-the-window" else 20 * MIN
    for i in range(n):
        if case != "no-metadata":
            context = ADULT if case == "three-adult-public-streams" else YOUNG
            await world.send(METADATA, started(f"y-{i}", f"b-{i}", T0, **context), T0)
        ts = T0 + (1 + i) * gap
        value = grooming(f"y-{i}", None if case == "no-author" else "v-1", ts,
                         0.6 if case == "weak-scores" else 0.93)
        await world.send(CLASSIFIER_SIGNALS, value, ts)
    assert [d for d in world.decisions() if d.subject is not None] == []


async def test_frames_never_send_account_signals_and_signals_only_pass_the_policys_threshold(contract):
    world = World(contract)
    await world.send(METADATA, started("s-1", "b-1", T0, **YOUNG), T0)
    sent = []
    world.publisher.send_account_signals = lambda signals: sent.extend(signals) or _done()  # type: ignore[method-assign]
    for i in range(20):
        await world.records.handle(FRAME_HASHES, b"s-1", orjson.dumps(frames("s-1", T0 + i, f"{i:032x}")),
                                   SourceRecord(FRAME_HASHES, 0, i, T0 + i))
    await world.records.handle(CLASSIFIER_SIGNALS, b"s-1", orjson.dumps(grooming("s-1", "v-1", T0 + 50, 0.5)),
                               SourceRecord(CLASSIFIER_SIGNALS, 0, 1, T0 + 50))
    assert sent == []


async def _done() -> None:
    return None


async def test_bad_or_misrouted_account_signals_are_dead_lettered(contract):
    world = World(contract)
    good = AccountSignal("v-1", "grooming", T0, T0, "s-1", classifier="grooming_text", score=0.9)
    right = default_partition(b"v-1", world.accounts.partitions)
    await world.accounts.handle(b"v-1", b"{not json", SourceRecord(ACCOUNT_SIGNALS, right, 1, T0))
    await world.accounts.handle(b"v-2", good.encode(), SourceRecord(ACCOUNT_SIGNALS, right, 2, T0))
    await world.accounts.handle(b"v-1", good.encode(), SourceRecord(ACCOUNT_SIGNALS, (right + 1) % 8, 3, T0))
    assert [d.reason for d in world.publisher.dead_letters] == ["malformed_json", "key_mismatch", "wrong_partition"]
    assert world.table == {}


@pytest.mark.parametrize("example", range(3))
def test_the_account_signals_the_handler_writes_match_the_contract(contract, example):
    spec = contract[ACCOUNT_SIGNALS]
    record = [spec.example, *spec.examples][example]
    signal = AccountSignal.from_dict(record)
    assert signal.to_record() == record
    jsonschema.validate(signal.to_record(), spec.schema, cls=jsonschema.Draft7Validator)


def test_the_accounts_section_is_validated():
    base = default_policy_text()
    with pytest.raises(PolicyError, match=r"accounts\.viewer_grooming\.window"):
        load_policy(base.replace("window: 24h", "window: 40d"))
    with pytest.raises(PolicyError, match=r"accounts\.repeat_broadcaster\.priority\.default"):
        load_policy(base.replace("default: P1}", "default: P9}"))
    with pytest.raises(PolicyError, match=r"accounts\.viewer_grooming\.restrict"):
        load_policy(base.replace("restrict: [chat]\n", "restrict: [everything]\n"))
    off = load_policy(policy_with(repeat_broadcaster=None))
    assert off.accounts.repeat_broadcaster is None and off.accounts.viewer_grooming is not None


async def test_a_block_that_arrives_after_the_broadcasters_next_start_still_counts(contract):
    world = World(contract)
    await world.send(METADATA, started("s-1", "b-1", T0, **ADULT), T0)
    await world.send(METADATA, started("s-2", "b-1", T0 + 2 * MIN, **ADULT), T0 + 2 * MIN)  # read first
    assert world.decisions(REPEAT_BROADCASTER) == []
    await world.send(FRAME_HASHES, frames("s-1", T0 + 1_000), T0 + 3 * MIN)
    late = world.decisions(REPEAT_BROADCASTER)
    assert [(d.stream_id, d.action) for d in late] == [("s-2", "restrict"), ("s-2", "escalate")]
    in_order = World(contract)
    await block_then_restart(in_order, 2 * MIN)
    # the same decisions, ids included, whichever arrived first
    assert [d.decision_id for d in in_order.decisions(REPEAT_BROADCASTER)] == [d.decision_id for d in late]
    await world.send(FRAME_HASHES, frames("s-1", T0 + 1_500), T0 + 4 * MIN)  # nothing twice
    assert len(world.decisions(REPEAT_BROADCASTER)) == 2


async def test_a_block_decided_before_its_streams_start_was_read_still_follows_the_broadcaster(contract):
    """Frames and metadata are read independently: a known frame may be blocked before the
    record naming the stream's broadcaster is read. The block counts once the broadcaster is known."""
    world = World(contract)
    await world.send(FRAME_HASHES, frames("s-1", T0 + 1_000), T0 + 1_000)  # read before its start
    assert [d.action for d in world.decisions()][:1] == ["block"] and world.table == {}
    await world.send(METADATA, started("s-1", "b-1", T0, **ADULT), T0 + 1_100)
    assert [b[3] for b in world.table["b-1"]["b"]] == [world.decisions()[0].decision_id]
    await world.send(METADATA, started("s-2", "b-1", T0 + 2 * MIN, **ADULT), T0 + 2 * MIN)
    late = world.decisions(REPEAT_BROADCASTER)
    assert [(d.stream_id, d.action) for d in late] == [("s-2", "restrict"), ("s-2", "escalate")]
    in_order = World(contract)
    await block_then_restart(in_order, 2 * MIN)
    # the same account state and decisions, ids included, whichever arrived first
    assert in_order.table["b-1"]["b"] == world.table["b-1"]["b"]
    assert [d.decision_id for d in in_order.decisions(REPEAT_BROADCASTER)] == [d.decision_id for d in late]
    # a later metadata record of the stream names no new broadcaster: nothing sent twice
    await world.send(METADATA, {**started("s-1", "b-1", T0 + 5 * MIN), "event": "stream.ended"}, T0 + 5 * MIN)
    assert len(world.table["b-1"]["b"]) == 1 and len(world.decisions(REPEAT_BROADCASTER)) == 2


async def test_a_repeat_broadcasters_escalation_joins_the_streams_review_loop(contract):
    from streamsafe.events.contract import REVIEW_VERDICTS
    from streamsafe.review.incident import Incident
    from streamsafe.review.statements import statement_id_of

    world = World(contract)
    await block_then_restart(world, 2 * MIN)
    restrict, escalate = world.decisions(REPEAT_BROADCASTER)
    # decided by the stream's own worker: in its incident, with a deadline, and a statement of reasons
    incident = Incident.from_record(world.records.incidents["s-2"])
    assert [(e.decision_id, e.status, e.due_ms) for e in incident.escalations] == [
        (escalate.decision_id, "open", escalate.review_due_ms)]
    assert [s.statement_id for s in world.publisher.statements if s.stream_id == "s-2"] == [
        statement_id_of(restrict.decision_id)]
    verdict = {"schema_version": 1, "stream_id": "s-2", "escalation_id": escalate.decision_id,
               "verdict": "benign", "reviewer_id": "rev-1", "ts_ms": T0 + 3 * MIN}
    await world.send(REVIEW_VERDICTS, verdict, T0 + 3 * MIN)
    incident = Incident.from_record(world.records.incidents["s-2"])
    assert [e.status for e in incident.escalations] == ["benign"]


async def test_each_stream_a_groomer_targeted_gets_an_escalation_in_its_own_incident(contract):
    from streamsafe.review.incident import Incident

    world = World(contract)
    for i in range(3):
        await world.send(METADATA, started(f"y-{i}", f"b-{i}", T0, **YOUNG), T0)
        await world.send(CLASSIFIER_SIGNALS, grooming(f"y-{i}", "v-1", T0 + (1 + i) * MIN), T0 + (1 + i) * MIN)
    for i in range(2):
        incident = Incident.from_record(world.records.incidents[f"y-{i}"])
        assert [(e.rule, e.status) for e in incident.escalations] == [(VIEWER_GROOMING, "open")]
    # the stream that completed the evidence also holds the account's escalation (its decisions' key), so a
    # verdict keyed by that stream can name it; the account's worker published it, with the same id and deadline
    (account,) = [d for d in world.decisions(VIEWER_GROOMING) if d.subject and d.subject[0] == "account"
                  and d.action == "escalate"]
    incident = Incident.from_record(world.records.incidents["y-2"])
    assert account.stream_id == "y-2"
    assert sorted((e.rule, e.status) for e in incident.escalations) == [(VIEWER_GROOMING, "open")] * 2
    assert account.decision_id in {e.decision_id for e in incident.escalations}
    assert incident.escalation(account.decision_id).due_ms == account.review_due_ms
    assert incident.viewer_named(account.decision_id) == "v-1"


async def test_a_finding_for_a_stream_already_released_keeps_its_incident_until_reviewed(contract):
    from streamsafe.scoring.state import StreamState

    world = World(contract)
    for i in range(3):
        await world.send(METADATA, started(f"y-{i}", f"b-{i}", T0, **YOUNG), T0)
        await world.send(CLASSIFIER_SIGNALS, grooming(f"y-{i}", "v-1", T0 + (1 + i) * MIN), T0 + (1 + i) * MIN)
        if i == 0:  # the first target's stream ends and its state is released before the pattern shows
            world.records.states.pop("y-0")
    assert "y-0" in world.records.incidents
    touched, ended, partition = StreamState.lifecycle_of(world.records.states["y-0"])
    assert partition == 0 and not ended
    # the sweep would expire it, but an open escalation keeps it until a reviewer settles it
    from streamsafe.events.contract import TIMERS
    from streamsafe.events.encode import encode_tick

    ticks = [t for t, _ in world.records.due_ticks(touched + 21_600_000) if t.stream_id == "y-0" and t.kind == "expire"]
    assert ticks
    await world.records.handle(TIMERS, b"y-0", encode_tick(ticks[0]), SourceRecord(TIMERS, 0, 99, touched + 21_600_000))
    assert "y-0" in world.records.incidents and "y-0" in world.records.states
