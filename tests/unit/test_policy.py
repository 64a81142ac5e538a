"""The foundation policy: exact matches block once, high scores escalate once per priority."""

from dataclasses import replace

import pytest

from streamsafe.events.models import ClassifierSignal, StreamMetadata
from streamsafe.matching.banks import Match
from streamsafe.policy.foundation import FoundationPolicy
from streamsafe.scoring.state import StreamState

POLICY = FoundationPolicy(version="test-1", thresholds={"csam": 0.7}, default_threshold=0.9)


def match(seq, entry="known:1", signal_type="sha256"):
    return Match("known", entry, signal_type, 0, seq, 1_000 + seq)


def signal(score, classifier="csam", ts=5_000, stream="s1"):
    return ClassifierSignal(stream, classifier, "m1", score, ts, chat_message_id="msg-1")


def test_no_match_no_decision():
    out = POLICY.decide_matches(StreamState(), "s1", [], 10)
    assert out.decisions == () and not out.state_changed


def test_first_match_blocks_and_records_the_block():
    out = POLICY.decide_matches(StreamState(), "s1", [match(3)], 10)
    (decision,) = out.decisions
    assert decision.action == "block" and decision.stream_id == "s1"
    assert decision.policy_version == "test-1"
    assert decision.evidence[0].as_record()["frame_seq"] == 3
    assert "frame 3 matched bank 'known'" in decision.reasons[0]
    assert out.state_changed and out.state.block_id == decision.decision_id


def test_later_matches_on_a_blocked_stream_are_suppressed():
    first = POLICY.decide_matches(StreamState(), "s1", [match(3)], 10)
    later = POLICY.decide_matches(first.state, "s1", [match(4)], 11)
    assert later.decisions == () and not later.state_changed


def test_redelivery_of_the_triggering_frames_reemits_the_identical_decision():
    first = POLICY.decide_matches(StreamState(), "s1", [match(3)], 10)
    again = POLICY.decide_matches(first.state, "s1", [match(3)], 10)
    assert [d.encode() for d in again.decisions] == [d.encode() for d in first.decisions]
    assert not again.state_changed


def test_decision_ids_are_deterministic_and_distinguish_inputs():
    a = POLICY.decide_matches(StreamState(), "s1", [match(3)], 10).decisions[0]
    b = POLICY.decide_matches(StreamState(), "s1", [match(3)], 10).decisions[0]
    c = POLICY.decide_matches(StreamState(), "s2", [match(3)], 10).decisions[0]
    d = replace(POLICY, version="test-2").decide_matches(StreamState(), "s1", [match(3)], 10)
    assert a.decision_id == b.decision_id
    assert len({a.decision_id, c.decision_id, d.decisions[0].decision_id}) == 3


@pytest.mark.parametrize(("classifier", "score", "escalates"), [
    ("csam", 0.7, True), ("csam", 0.69, False), ("nudity", 0.89, False), ("nudity", 0.9, True),
])
def test_classifier_threshold_is_inclusive_and_per_classifier(classifier, score, escalates):
    out = POLICY.decide_signal(StreamState(), signal(score, classifier), 10)
    assert bool(out.decisions) is escalates
    if escalates:
        (decision,) = out.decisions
        assert decision.action == "escalate" and decision.priority == "P1"
        evidence = decision.evidence[0].as_record()
        assert evidence["score"] == score and evidence["chat_message_id"] == "msg-1"


def test_escalation_is_not_repeated_at_the_same_priority():
    first = POLICY.decide_signal(StreamState(), signal(0.8), 10)
    second = POLICY.decide_signal(first.state, signal(0.95, ts=6_000), 11)
    assert second.decisions == ()


def test_escalation_is_raised_again_when_priority_rises():
    low = POLICY.decide_signal(StreamState(), signal(0.8), 10).state
    low = replace(low, escalation_priority="P3")
    out = POLICY.decide_signal(low, signal(0.95, ts=6_000), 11)
    assert out.decisions and out.decisions[0].priority == "P1"


def test_metadata_changes_state_only_when_context_changes():
    started = StreamMetadata("s1", "stream.started", 1, "b1", account_age_days=2, visibility="private")
    out = POLICY.decide_metadata(StreamState(), started)
    assert out.state_changed and out.state.visibility == "private"
    again = POLICY.decide_metadata(out.state, replace(started, event="stream.updated", viewer_count=9))
    assert not again.state_changed
    ended = POLICY.decide_metadata(out.state, replace(started, event="stream.ended", ts_ms=99))
    assert ended.state_changed and ended.state.ended_at_ms == 99 and ended.state.account_age_days == 2


def test_state_round_trips_through_its_record():
    state = StreamState(block_id="dec-1", escalation_priority="P0", account_age_days=4)
    assert StreamState.from_record(state.to_record()) == state
    assert StreamState.from_record(None) == StreamState()
