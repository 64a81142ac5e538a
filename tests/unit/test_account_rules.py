"""The policy author's account rules (``accounts.rules``) over account features, and user
reports that name an account feeding its state: through the stream handler and the account
handler, as in :mod:`tests.unit.test_accounts`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamsafe.errors import PolicyError
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS
from streamsafe.policy.loader import load_policy
from tests.unit.test_accounts import ADULT, MIN, T0, YOUNG, World, frames, grooming, policy_with, started, valid

REPEAT_TWICE = {"name": "blocked-twice-in-a-week", "when": {"account.prior_blocks": {"gte": 2, "window": "7d"}},
                "then": [{"escalate": "P0"}, {"restrict": ["gifting", "chat"]}]}
REPORTED = {"name": "reported-in-streams", "when": {"account.user_reports": {"gte": 3, "window": "1d"},
                                                    "account.reported_streams": {"gte": 2, "window": "1d"}},
            "then": [{"escalate": "P2"}]}


def report(stream: str, ts: int, reporter: str, account: str | None) -> dict:
    value = {"schema_version": 1, "stream_id": stream, "category": "grooming", "ts_ms": ts, "reporter_id": reporter}
    if account is not None:
        value.update(schema_version=2, reported_account_id=account)
    return value


def test_the_loader_reads_account_rules():
    policy = load_policy(policy_with(rules=[REPEAT_TWICE, REPORTED]))
    first, second = policy.accounts.rules
    assert first.name == "blocked-twice-in-a-week"
    assert [(p.feature, p.op, p.value, p.window_s) for p in first.predicates] == [
        ("account.prior_blocks", "gte", 2, 7 * 86400.0)]
    assert [a.describe() for a in first.actions] == ["escalate P0", "restrict chat, gifting"]
    assert sorted(p.feature for p in second.predicates) == ["account.reported_streams", "account.user_reports"]
    assert load_policy().accounts.rules == ()  # the default policy has none


@pytest.mark.parametrize(("rule", "problem"), [
    ({**REPEAT_TWICE, "when": {"account.prior_blockz": {"gte": 1}}}, "unknown account feature"),
    ({**REPEAT_TWICE, "when": {"risk": {"gte": 0.5}}}, "unknown account feature"),  # a stream feature
    ({**REPEAT_TWICE, "when": {"account.prior_blocks": {"gte": 1, "window": "60d"}}}, "longer than accounts.retention"),
    ({**REPEAT_TWICE, "when": {"account.prior_blocks": {"about": 1}}}, "unknown operator"),
    ({**REPEAT_TWICE, "when": {"account.prior_blocks": {"gte": True}}}, "must be a count"),
    ({**REPEAT_TWICE, "when": {"account.prior_blocks": {"gte": -1}}}, "must be a count"),
    ({**REPEAT_TWICE, "when": {}}, "at least one account feature"),
    ({**REPEAT_TWICE, "then": ["block"]}, "an account rule may"),
    ({**REPEAT_TWICE, "then": [{"escalate": "P9"}]}, "an account rule may"),
    ({**REPEAT_TWICE, "name": "repeat-broadcaster"}, "already a rule's name"),
    ({**REPEAT_TWICE, "shadow": True}, "must be a mapping of name"),
])
def test_an_invalid_account_rule_refuses_the_policy(rule, problem):
    with pytest.raises(PolicyError) as refused:
        load_policy(policy_with(rules=[rule]))
    assert problem in str(refused.value)
    with pytest.raises(PolicyError, match="already a rule's name"):
        load_policy(policy_with(rules=[REPEAT_TWICE, REPEAT_TWICE]))


async def test_a_broadcaster_blocked_twice_in_a_week_is_escalated_and_restricted_as_an_account_once(contract):
    world = World(contract, policy_with(rules=[REPEAT_TWICE]))
    for i, day in enumerate((0, 3, 5)):
        ts = T0 + day * 86_400_000
        await world.send(METADATA, started(f"s-{i}", "b-1", ts, **ADULT), ts)
        await world.send(FRAME_HASHES, frames(f"s-{i}", ts + 1_000), ts + 1_000)
        ruled = world.decisions(REPEAT_TWICE["name"])
        assert len(ruled) == (0 if i == 0 else 2)  # at the second block; not again while in force
    escalate, restrict = sorted(ruled, key=lambda d: d.action)
    assert (escalate.priority, restrict.restrictions) == ("P0", ("chat", "gifting"))
    assert escalate.subject == ("account", "b-1") and escalate.stream_id == "s-1"
    assert escalate.streams == ("s-0", "s-1")
    assert escalate.reasons == ("rule 'blocked-twice-in-a-week': account.prior_blocks 2 gte 2 within 7d",)
    assert [(e["role"], e["stream_id"], e["rule"]) for e in escalate.to_record()["evidence"]] == [
        ("broadcaster", "s-0", "authority-hash-strong"), ("broadcaster", "s-1", "authority-hash-strong")]
    assert escalate.review_due_ms == T0 + 3 * 86_400_000 + 1_000 + int(world.records.policies.live
                                                                       .review_sla_s["P0"] * 1000)
    for d in ruled:
        assert d.to_record()["schema_version"] == 2
        valid(contract, d)
    # the fixed repeat-broadcaster rule still acts on each new stream beside it
    assert {d.stream_id for d in world.decisions("repeat-broadcaster")} == {"s-1", "s-2"}


async def test_blocks_spread_beyond_the_window_do_not_hold(contract):
    world = World(contract, policy_with(rules=[REPEAT_TWICE]))
    for i, day in enumerate((0, 8)):
        ts = T0 + day * 86_400_000
        await world.send(METADATA, started(f"s-{i}", "b-1", ts, **ADULT), ts)
        await world.send(FRAME_HASHES, frames(f"s-{i}", ts + 1_000), ts + 1_000)
    assert world.decisions(REPEAT_TWICE["name"]) == []


async def test_user_reports_naming_an_account_feed_its_state_without_the_reporters(contract):
    world = World(contract, policy_with(rules=[REPORTED]))
    await world.send(USER_REPORTS, report("s-1", T0, "r-1", "v-9"), T0)
    await world.send(USER_REPORTS, report("s-1", T0 + MIN, "r-2", "v-9"), T0 + MIN)
    await world.send(USER_REPORTS, report("s-1", T0 + 2 * MIN, "r-3", None), T0 + 2 * MIN)  # names no account
    assert world.table["v-9"]["r"] == [[T0, "s-1"], [T0 + MIN, "s-1"]]
    assert "r-1" not in repr(world.table) and "r-2" not in repr(world.table)
    await world.send(USER_REPORTS, report("s-1", T0 + 3 * MIN, "r-4", "v-9"), T0 + 3 * MIN)
    assert world.decisions(REPORTED["name"]) == []  # three reports, one stream: not yet
    await world.send(USER_REPORTS, report("s-2", T0 + 4 * MIN, "r-5", "v-9"), T0 + 4 * MIN)
    [escalate] = world.decisions(REPORTED["name"])
    assert escalate.subject == ("account", "v-9") and escalate.priority == "P2"
    # (in the policy's order: the test's policy_with writes its keys sorted)
    assert escalate.reasons == ("rule 'reported-in-streams': account.reported_streams 2 gte 2 within 1d, "
                                "account.user_reports 4 gte 3 within 1d",)
    assert escalate.streams == ("s-1", "s-2")
    assert all("role" not in e and e["account_id"] == "v-9" for e in escalate.to_record()["evidence"])
    valid(contract, escalate)
    # reports past the retention are forgotten like everything else about an account
    retention_ms = int(world.records.policies.live.accounts.retention_s * 1000)
    due = world.accounts.due_expiries(T0 + 4 * MIN + retention_ms + 1)
    await world.publisher.send_account_signals(due)
    await world.deliver()
    assert world.table == {}


async def test_streams_with_grooming_counts_adults_streams_that_young_targets_leaves_out(contract):
    rule = {"name": "grooming-in-two-streams", "when": {"viewer.streams_with_grooming": {"gte": 2, "window": "1d"}},
            "then": [{"escalate": "P1"}]}
    young = {"name": "grooming-two-young", "when": {"viewer.young_targets": {"gte": 2}}, "then": [{"escalate": "P1"}]}
    world = World(contract, policy_with(rules=[rule, young]))
    for i in range(2):
        await world.send(METADATA, started(f"a-{i}", f"b-{i}", T0, **ADULT), T0)
        await world.send(CLASSIFIER_SIGNALS, grooming(f"a-{i}", "v-1", T0 + (i + 1) * MIN), T0 + (i + 1) * MIN)
    [escalate] = world.decisions(rule["name"])
    assert escalate.reasons == ("rule 'grooming-in-two-streams': viewer.streams_with_grooming 2 gte 2 within 1d",)
    assert [(e["role"], e["stream_id"], e["classifier"]) for e in escalate.to_record()["evidence"]] == [
        ("viewer", "a-0", "grooming_text"), ("viewer", "a-1", "grooming_text")]
    assert world.decisions(young["name"]) == []
    await world.send(METADATA, started("y-0", "b-9", T0, **YOUNG), T0)
    await world.send(CLASSIFIER_SIGNALS, grooming("y-0", "v-1", T0 + 5 * MIN), T0 + 5 * MIN)
    assert world.decisions(young["name"]) == []  # one young target
    await world.send(METADATA, started("y-1", "b-8", T0, **YOUNG), T0)
    await world.send(CLASSIFIER_SIGNALS, grooming("y-1", "v-1", T0 + 6 * MIN), T0 + 6 * MIN)
    [young_escalation] = world.decisions(young["name"])
    assert young_escalation.streams == ("y-0", "y-1")
    assert young_escalation.reasons == ("rule 'grooming-two-young': viewer.young_targets 2 gte 2 within 30d",)
    assert len(world.decisions(rule["name"])) == 1  # in force: not again


def test_the_readmes_account_rules_example_is_a_valid_policy():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("* **Account rules**", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    example = yaml.safe_load(block)["accounts"]["rules"]
    policy = load_policy(policy_with(rules=example))
    assert [r.name for r in policy.accounts.rules] == ["blocked-twice-in-a-week", "reported-in-streams"]
