"""The policy engine: every default rule, at-most-once semantics, identical re-decisions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamsafe.events.models import StreamMetadata
from streamsafe.policy.engine import decide
from streamsafe.policy.loader import load_policy
from streamsafe.scoring.state import MatchRef, ScoreSlot, StreamState

POLICY = load_policy()
MODEL = POLICY.fusion
T0 = 1_764_324_000_000


def score(state, classifier, value, dt=0, ref=None):
    return state.with_score(MODEL, classifier, ScoreSlot(value, T0 + dt, ref))


def actions(decisions):
    return sorted((d.action, d.priority or "", ",".join(d.restrictions)) for d in decisions)


def test_strong_authority_match_blocks_and_reports_at_once():
    state = StreamState().with_matches([MatchRef("ncmec", "ncmec:1", "pdq", 4, 7, T0)], [])
    state, decisions = decide(POLICY, state, "s1", T0, T0 + 5)
    # block and report at once; the fused risk also puts it in front of a reviewer
    assert actions(decisions) == [("block", "", ""), ("escalate", "P1", ""), ("report", "", "")]
    block = next(d for d in decisions if d.action == "block")
    assert block.rule == "authority-hash-strong" and block.policy_version == POLICY.version
    assert block.evidence[0].as_record() == {"kind": "hash_match", "ts_ms": T0, "signal_type": "pdq",
                                             "bank": "ncmec", "entry_id": "ncmec:1", "distance": 4,
                                             "frame_seq": 7}
    assert block.explanation["risk"] > 0.99
    assert block.explanation["top_contributions"][0]["signal"] == "hash_match:strong:ncmec"
    assert state.emitted["block"] == block.decision_id


def test_strong_match_in_a_partner_bank_does_not_block():
    state = StreamState().with_matches([MatchRef("partner-x", "p:1", "pdq", 4, 7, T0)], [])
    _, decisions = decide(POLICY, state, "s1", T0, T0)
    assert "block" not in [d.action for d in decisions]


def test_minor_and_nudity_block_and_escalate_p0():
    state = score(score(StreamState(), "minor_presence", 0.85, ref="frame:3"), "nudity", 0.9, 1000)
    _, decisions = decide(POLICY, state, "s1", T0 + 1000, T0 + 1000)
    assert ("block", "", "") in actions(decisions) and ("escalate", "P0", "") in actions(decisions)
    escalation = next(d for d in decisions if d.action == "escalate")
    assert escalation.review_due_ms == T0 + 1000 + 300_000  # the P0 review SLA
    assert {e.as_record()["classifier"] for e in escalation.evidence} == {"minor_presence", "nudity"}


def test_nudity_alone_does_not_block():
    _, decisions = decide(POLICY, score(StreamState(), "nudity", 0.97), "s1", T0, T0)
    assert "block" not in [d.action for d in decisions]


def test_grooming_on_private_young_account_escalates_p1_and_restricts_chat():
    meta = StreamMetadata("s1", "stream.started", T0, "b", account_age_days=3, visibility="private")
    state = score(StreamState().with_metadata(meta), "grooming_text", 0.88, 500, "msg:m-9")
    _, decisions = decide(POLICY, state, "s1", T0 + 500, T0 + 500)
    assert ("escalate", "P1", "") in actions(decisions) and ("restrict", "", "chat") in actions(decisions)
    escalation = next(d for d in decisions if d.action == "escalate")
    chat = [e.as_record() for e in escalation.evidence if e.kind == "classifier"]
    assert chat == [{"kind": "classifier", "ts_ms": T0 + 500, "classifier": "grooming_text",
                     "score": 0.88, "chat_message_id": "m-9"}]


def test_grooming_on_public_old_account_does_not_fire_that_rule():
    meta = StreamMetadata("s1", "stream.started", T0, "b", account_age_days=800, visibility="public")
    state = score(StreamState().with_metadata(meta), "grooming_text", 0.88, 500)
    _, decisions = decide(POLICY, state, "s1", T0 + 500, T0 + 500)
    assert "grooming-private-young-account" not in {d.rule for d in decisions}


def test_three_distinct_reporters_within_ten_minutes_escalate_p2():
    state = StreamState()
    for i, who in enumerate(["a", "b", "a", "c"]):
        state = state.with_report(who, T0 + i * 60_000)
    _, decisions = decide(POLICY, state, "s1", T0 + 180_000, T0 + 180_000)
    assert ("escalate", "P2", "") in actions(decisions)


def test_reports_spread_over_an_hour_do_not_escalate():
    state = StreamState()
    for i, who in enumerate(["a", "b", "c"]):
        state = state.with_report(who, T0 + i * 1_200_000)
    _, decisions = decide(POLICY, state, "s1", T0 + 2_400_000, T0)
    assert "user-reports-burst" not in {d.rule for d in decisions}


def test_weak_match_repeated_across_three_frames_escalates_p0():
    state = StreamState()
    for seq in range(3):
        state = state.with_matches([], [MatchRef("partner-x", "p:9", "pdq", 27, seq, T0 + seq * 1000)])
        _, decisions = decide(POLICY, state, "s1", T0 + seq * 1000, T0)
        fired = {d.rule for d in decisions}
        assert ("weak-hash-repeated" in fired) is (seq == 2)
    assert ("escalate", "P0", "") in actions(decisions)


def test_block_is_emitted_once_and_escalations_only_when_priority_rises():
    state = score(StreamState(), "csam", 0.95)  # csam-classifier: escalate P0
    state = replace(state, emitted={})
    low = StreamState().with_report("a", T0).with_report("b", T0).with_report("c", T0)
    low, first = decide(POLICY, low, "s1", T0, T0)
    assert ("escalate", "P2", "") in actions(first)
    low2 = low.with_report("d", T0 + 1000)
    low2, again = decide(POLICY, low2, "s1", T0 + 1000, T0 + 1000)
    assert all(d.priority != "P2" for d in again)  # same priority: not raised again
    higher = score(low2, "csam", 0.95, 2000)
    _, raised = decide(POLICY, higher, "s1", T0 + 2000, T0 + 2000)
    assert ("escalate", "P0", "") in actions(raised)

    blocked, _ = decide(POLICY, StreamState().with_matches([MatchRef("ncmec", "n:1", "md5", 0, 1, T0)], []),
                        "s1", T0, T0)
    more = blocked.with_matches([MatchRef("ncmec", "n:2", "md5", 0, 2, T0 + 10)], [])
    _, later = decide(POLICY, more, "s1", T0 + 10, T0 + 10)
    assert [d for d in later if d.action in ("block", "report")] == []


def test_the_same_input_again_gives_byte_identical_decisions():
    before = StreamState().with_matches([MatchRef("ncmec", "n:1", "md5", 0, 1, T0)], [])
    after, first = decide(POLICY, before, "s1", T0, T0 + 3)
    # a re-delivery after the state was written: the event is applied again (idempotent)
    redelivered = after.with_matches([MatchRef("ncmec", "n:1", "md5", 0, 1, T0)], [])
    _, again = decide(POLICY, redelivered, "s1", T0, T0 + 3)
    assert [d.encode() for d in again] == [d.encode() for d in first]


def test_decision_ids_differ_by_stream_and_policy_version():
    state = StreamState().with_matches([MatchRef("ncmec", "n:1", "md5", 0, 1, T0)], [])
    ids = {decide(p, state, s, T0, T0)[1][0].decision_id
           for p in (POLICY, replace(POLICY, version="other")) for s in ("s1", "s2")}
    assert len(ids) == 4


def test_shadow_bookkeeping_is_separate_from_live():
    state = StreamState().with_matches([MatchRef("ncmec", "n:1", "md5", 0, 1, T0)], [])
    live_state, live = decide(POLICY, state, "s1", T0, T0)
    shadow = replace(POLICY, version="candidate-1")
    shadow_state, shadowed = decide(shadow, live_state, "s1", T0, T0, shadow=True)
    assert live and shadowed and all(d.shadow for d in shadowed) and not any(d.shadow for d in live)
    assert shadow_state.emitted == live_state.emitted
    assert set(shadow_state.shadow_emitted["candidate-1"]) == {"block", "report", "escalate:P1"}


@pytest.mark.parametrize("restrict_first", [True, False])
def test_restrictions_are_added_not_repeated(restrict_first):
    weak = StreamState()
    for seq in range(3):
        weak = weak.with_matches([], [MatchRef("partner", "p:1", "pdq", 27, seq, T0)])
    state, decisions = decide(POLICY, weak, "s1", T0, T0)
    restricts = [d for d in decisions if d.action == "restrict"]
    assert restricts[0].restrictions == ("chat", "discovery", "gifting")
    more = score(state, "csam", 0.95, 10)  # csam-classifier also restricts discovery
    _, later = decide(POLICY, more, "s1", T0 + 10, T0 + 10)
    assert [d for d in later if d.action == "restrict"] == []
