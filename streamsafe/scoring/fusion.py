"""Risk fusion: every signal about a stream combined into one explainable risk.

The model is a log-odds sum, the usual way to combine independent evidence:

    log_odds(T) = prior
                + Σ_classifiers  w_c · max(0, logit(cal_c(score))) · decay_c(T - t)
                + Σ_hash kinds   strong / weak match evidence       · decay(T - t)
                + w_r · log2(1 + distinct reporters in the window)
                + context terms (private stream, young account, ...)
                + Σ_groups       bonus_g · min(decay of its members)   if every member is present
    risk(T) = sigmoid(log_odds(T))

* ``cal_c`` calibrates a raw classifier score to a probability (Platt scaling:
  ``sigmoid(slope · (score - midpoint))``); only evidence for harm (p > 0.5) counts.
* ``decay`` halves evidence every half-life of its kind; ``T`` is the newest event
  time seen on the stream, never the wall clock, so replays give the same risk.
* Each classifier keeps one slot, its strongest observation at a common reference
  time (``strength · 2^(t / half_life)``), so repeating one signal does not add up,
  and arrival order does not change the result for the same event times.
* Corroboration: independent kinds agreeing (minor presence *and* nudity; grooming
  text *and* a private stream *and* a new account) earn a bonus one kind repeated
  cannot.

Pure code: no Faust, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "Calibration",
    "ClassifierModel",
    "Contribution",
    "CorroborationGroup",
    "FusionModel",
    "RiskAssessment",
    "decay",
    "logit",
    "sigmoid",
]


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def decay(age_ms: float, half_life_s: float) -> float:
    """Fraction of evidence left after ``age_ms`` (evidence from the future counts fully)."""
    if age_ms <= 0:
        return 1.0
    return 0.5 ** (age_ms / (half_life_s * 1000.0))


@dataclass(frozen=True, slots=True)
class Calibration:
    """Platt scaling from a raw score in [0, 1] to a probability."""

    slope: float = 10.0
    midpoint: float = 0.7

    def probability(self, score: float) -> float:
        return sigmoid(self.slope * (score - self.midpoint))


@dataclass(frozen=True, slots=True)
class ClassifierModel:
    calibration: Calibration = field(default_factory=Calibration)
    weight: float = 1.0
    half_life_s: float = 600.0

    def strength(self, score: float) -> float:
        """Log-odds evidence of one observation before decay (0 when it is not evidence of harm)."""
        return self.weight * max(0.0, logit(self.calibration.probability(score)))


@dataclass(frozen=True, slots=True)
class CorroborationGroup:
    """Members are classifier names or context flags (``context.private``,
    ``context.new_account``, ``context.unverified_age``)."""

    name: str
    members: tuple[str, ...]
    bonus: float


@dataclass(frozen=True, slots=True)
class Contribution:
    """One term of the risk sum, for explanations."""

    signal: str
    ts_ms: int | None
    weight: float
    log_odds: float
    value: float | None = None

    def as_record(self) -> dict[str, object]:
        record: dict[str, object] = {"signal": self.signal, "weight": round(self.weight, 4),
                                     "log_odds": round(self.log_odds, 4)}
        if self.ts_ms is not None:
            record["ts_ms"] = self.ts_ms
        if self.value is not None:
            record["value"] = round(self.value, 4)
        return record


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    risk: float
    log_odds: float
    at_ms: int
    contributions: tuple[Contribution, ...]

    def top(self, n: int = 5) -> tuple[Contribution, ...]:
        return tuple(sorted(self.contributions, key=lambda c: -c.log_odds)[:n])

    def explanation(self, n: int = 5) -> dict[str, object]:
        return {"risk": round(self.risk, 4), "log_odds": round(self.log_odds, 4), "at_ms": self.at_ms,
                "top_contributions": [c.as_record() for c in self.top(n)]}


@dataclass(frozen=True, slots=True)
class FusionModel:
    prior_log_odds: float = -6.0
    classifiers: Mapping[str, ClassifierModel] = field(default_factory=dict)
    default_classifier: ClassifierModel = field(default_factory=ClassifierModel)
    strong_match_log_odds: float = 12.0
    strong_match_half_life_s: float = 86_400.0
    weak_match_log_odds: float = 2.0
    weak_match_max_frames: int = 5
    weak_match_half_life_s: float = 1_800.0
    report_weight: float = 1.0
    report_window_s: float = 600.0
    private_log_odds: float = 0.5
    new_account_days: int = 7
    new_account_log_odds: float = 0.5
    unverified_age_log_odds: float = 0.0
    corroboration: tuple[CorroborationGroup, ...] = ()

    def classifier(self, name: str) -> ClassifierModel:
        return self.classifiers.get(name, self.default_classifier)
