"""The features a rule can test, in one table: each name, what values a rule may compare
it with, and how it is read from a stream's state. The loader validates rules against
this table and the engine evaluates them from it, so a new feature is one row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamsafe.policy.model import Policy, Predicate
from streamsafe.scoring.fusion import RiskAssessment
from streamsafe.scoring.state import MatchRef, StreamState

__all__ = ["FEATURES", "Feature", "feature_named", "trusted"]

Reader = Callable[[Policy, StreamState, Predicate, int, RiskAssessment], Any]


@dataclass(frozen=True, slots=True)
class Feature:
    name: str  # "score." stands for "score.<classifier>"
    low: float  # the range of values a rule may compare it with
    high: float
    read: Reader
    description: str


def trusted(policy: Policy, match: MatchRef, predicate: Predicate) -> bool:
    """A match counts for a predicate that names trust levels only from a bank of those levels."""
    return not predicate.trust or policy.trust_of(match.bank) in predicate.trust


def _weak_frames(policy: Policy, state: StreamState, predicate: Predicate, at_ms: int, _: RiskAssessment) -> int:
    since = at_ms - int((predicate.window_s or policy.weak_window_s) * 1000)
    return len({m.frame_seq for m in state.weak_matches if m.ts_ms >= since and trusted(policy, m, predicate)})


def _flag(name: str) -> Reader:
    return lambda policy, state, predicate, at_ms, assessment: state.context_flags(policy.fusion).get(name)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    Feature("risk", 0, 1, lambda policy, state, predicate, at_ms, assessment: assessment.risk,
            "the fused risk, 0..1"),
    Feature("score.", 0, 1,
            lambda policy, state, predicate, at_ms, assessment:
            state.decayed_score(policy.fusion, predicate.feature[6:], at_ms),
            "a classifier's strongest score, decayed to the decision's time"),
    Feature("strong_matches", 0, 10_000,
            lambda policy, state, predicate, at_ms, assessment:
            sum(1 for m in state.strong_matches if trusted(policy, m, predicate)),
            "strong hash matches (in banks of the given trust levels)"),
    Feature("weak_match_frames", 0, 10_000, _weak_frames, "frames with a weak match within the window"),
    Feature("reports.distinct", 0, 10_000,
            lambda policy, state, predicate, at_ms, assessment:
            state.distinct_reporters(at_ms - int((predicate.window_s or 600.0) * 1000)),
            "distinct reporters within the window (default 10 minutes)"),
    Feature("context.private", 0, 1, _flag("context.private"), "the stream is private"),
    Feature("context.new_account", 0, 1, _flag("context.new_account"), "the broadcaster's account is new"),
    Feature("context.unverified_age", 0, 1, _flag("context.unverified_age"), "age not verified"),
    Feature("context.account_age_days", 0, 36_500,
            lambda policy, state, predicate, at_ms, assessment: state.account_age_days,
            "the broadcaster's account age in days"),
    Feature("context.age_verified", 0, 1,
            lambda policy, state, predicate, at_ms, assessment: state.age_verified, "age verified"),
)}


@functools.lru_cache(maxsize=4096)
def feature_named(name: str) -> Feature | None:
    """The table's row for a rule's feature name (``score.<classifier>`` shares one row)."""
    if name.startswith("score.") and len(name) > 6:
        classifier = name[6:]
        valid = classifier[0].isalnum() and all(c.isalnum() or c in "_.-" for c in classifier)
        return FEATURES["score."] if valid and classifier == classifier.lower() else None
    return None if name == "score." else FEATURES.get(name)
