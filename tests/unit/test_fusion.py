"""Risk fusion properties: monotone in evidence, decays with age, order-independent."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streamsafe.events.models import StreamMetadata
from streamsafe.policy.loader import load_policy
from streamsafe.scoring.state import MatchRef, ScoreSlot, StreamState

MODEL = load_policy().fusion
CLASSIFIERS = ["csam", "minor_presence", "nudity", "grooming_text", "audio_distress"]
T0 = 1_764_324_000_000

observations = st.lists(
    st.one_of(
        st.tuples(st.just("score"), st.sampled_from(CLASSIFIERS), st.floats(0, 1),
                  st.integers(0, 3_600_000)),
        st.tuples(st.just("report"), st.sampled_from(["r1", "r2", "r3", "r4"]), st.just(0.0),
                  st.integers(0, 3_600_000)),
        st.tuples(st.just("weak"), st.integers(0, 20), st.just(0.0), st.integers(0, 3_600_000)),
    ),
    max_size=25,
)


def apply(state: StreamState, obs) -> StreamState:
    kind, name, value, dt = obs
    ts = T0 + dt
    if kind == "score":
        return state.with_score(MODEL, name, ScoreSlot(round(value, 3), ts, None))
    if kind == "report":
        return state.with_report(name, ts)
    return state.with_matches([], [MatchRef("partner-list", f"e{name}", "pdq", 25, name, ts)])


def build(obs_list) -> StreamState:
    state = StreamState()
    for obs in obs_list:
        state = apply(state, obs)
    return state


@settings(max_examples=150, deadline=None)
@given(observations, st.randoms())
def test_arrival_order_does_not_change_the_result(obs_list, rng):
    shuffled = list(obs_list)
    rng.shuffle(shuffled)
    a, b = build(obs_list), build(shuffled)
    assert a == b
    assert a.assess(MODEL).risk == b.assess(MODEL).risk


@settings(max_examples=150, deadline=None)
@given(observations, st.integers(0, 100))
def test_applying_an_event_twice_changes_nothing(obs_list, pick):
    state = build(obs_list)
    if obs_list:
        assert apply(state, obs_list[pick % len(obs_list)]) == state


@settings(max_examples=150, deadline=None)
@given(observations, observations)
def test_risk_is_monotone_in_positive_evidence(base, extra):
    """More evidence never lowers risk, judged at a fixed time after all of it."""
    at = T0 + 3_600_000
    before = build(base).assess(MODEL, at).risk
    after = build(base + extra).assess(MODEL, at).risk
    assert after >= before - 1e-12


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CLASSIFIERS), st.floats(0.75, 1.0), st.integers(1, 10_000_000))
def test_decay_lowers_old_evidence(classifier, score, age_ms):
    state = StreamState().with_score(MODEL, classifier, ScoreSlot(score, T0, None))
    fresh = state.assess(MODEL, T0)
    old = state.assess(MODEL, T0 + age_ms)
    assert old.log_odds <= fresh.log_odds

    def term(assessment):  # the classifier's own term: the sum may round away a tiny change
        return sum(c.log_odds for c in assessment.contributions if c.signal == f"classifier:{classifier}")

    if MODEL.classifier(classifier).strength(score) > 0:
        assert term(old) < term(fresh)


def test_independent_kinds_agreeing_outweigh_one_kind_repeated():
    nudity_only = StreamState()
    for i in range(10):
        nudity_only = nudity_only.with_score(MODEL, "nudity", ScoreSlot(0.9, T0 + i * 1000, None))
    both = (StreamState().with_score(MODEL, "nudity", ScoreSlot(0.9, T0, None))
            .with_score(MODEL, "minor_presence", ScoreSlot(0.9, T0, None)))
    at = T0 + 10_000
    repeated, agreeing = nudity_only.assess(MODEL, at), both.assess(MODEL, at)
    assert agreeing.risk > repeated.risk
    assert any(c.signal == "corroboration:minor-and-nudity" for c in agreeing.contributions)


def test_grooming_on_a_private_young_account_is_corroborated():
    meta = StreamMetadata("s", "stream.started", T0, "b", account_age_days=2, visibility="private")
    private_young = StreamState().with_metadata(meta).with_score(
        MODEL, "grooming_text", ScoreSlot(0.9, T0, "msg:1"))
    public_old = StreamState().with_metadata(
        StreamMetadata("s", "stream.started", T0, "b", account_age_days=900, visibility="public")
    ).with_score(MODEL, "grooming_text", ScoreSlot(0.9, T0, "msg:1"))
    assert private_young.assess(MODEL).risk > public_old.assess(MODEL).risk


def test_explanation_lists_top_contributions_with_signal_time_and_weight():
    state = StreamState().with_score(MODEL, "csam", ScoreSlot(0.95, T0, "frame:4"))
    explanation = state.assess(MODEL).explanation()
    top = explanation["top_contributions"][0]
    assert top["signal"] == "classifier:csam" and top["ts_ms"] == T0 and top["weight"] == 3.0
    assert top["value"] == 0.95 and 0 < explanation["risk"] < 1


def test_state_stays_small_and_round_trips():
    state = StreamState().with_metadata(StreamMetadata("s" * 40, "stream.started", T0, "b" * 40,
                                                       account_age_days=3, age_verified=False,
                                                       visibility="private"))
    for i, c in itertools.product(range(5), CLASSIFIERS):
        state = state.with_score(MODEL, c, ScoreSlot(0.5 + i / 10, T0 + i, f"frame:{i}"))
    for i in range(60):
        state = state.with_report(f"{i:012x}", T0 + i)
        state = state.with_matches([MatchRef("ncmec", f"ncmec:{i:08d}", "pdq", 3, i, T0 + i)],
                                   [MatchRef("partner", f"partner:{i:08d}", "pdq", 28, i, T0 + i)])
    for key in ("block", "report", "escalate:P0", "escalate:P1", "restrict:chat"):
        state = state.with_emitted(key, "dec-" + "0" * 32)
    import orjson

    record = state.to_record()
    assert len(orjson.dumps(record)) <= 2048
    assert StreamState.from_record(orjson.loads(orjson.dumps(record))) == state


def test_small_score_rises_are_not_written_but_big_ones_are():
    stored = StreamState().with_score(MODEL, "nudity", ScoreSlot(0.80, T0, None))
    small = stored.with_score(MODEL, "nudity", ScoreSlot(0.82, T0 + 1000, None))
    big = stored.with_score(MODEL, "nudity", ScoreSlot(0.90, T0 + 1000, None))
    assert small != stored and not small.differs_materially(stored, MODEL)
    assert big.differs_materially(stored, MODEL)
    assert StreamState().with_report("r", T0).differs_materially(StreamState(), MODEL)
