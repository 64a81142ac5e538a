"""What StreamSafe remembers about one stream: the strongest evidence of each kind,
stream context, and which decisions were emitted. Kept in a changelog-backed table.

Every ``with_*`` update is idempotent (applying the same event twice changes
nothing) and order-independent (the same events in any order give the same
state), which is what makes re-deliveries and replays produce identical
decisions. Lists are capped so a stream's state stays well under 2 KB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamsafe.events.models import StreamMetadata
from streamsafe.events.values import Priority
from streamsafe.scoring.fusion import (
    Contribution,
    FusionModel,
    RiskAssessment,
    decay,
    sigmoid,
)

__all__ = ["MatchRef", "ScoreSlot", "StreamState"]

MAX_STRONG = 4
MAX_WEAK = 8
MAX_REPORTERS = 16


@dataclass(frozen=True, slots=True)
class ScoreSlot:
    score: float
    ts_ms: int
    ref: str | None = None  # str(EvidenceRef): where the classifier looked, stored compactly


@dataclass(frozen=True, slots=True)
class MatchRef:
    bank: str
    entry_id: str
    signal_type: str
    distance: int
    frame_seq: int
    ts_ms: int
    transform: str | None = None  # how the frame showed the entry's picture (None: as it is)

    def key(self) -> tuple[int, str, int]:
        return (self.ts_ms, self.entry_id, self.frame_seq)


def _rank(model: FusionModel, classifier: str, slot: ScoreSlot) -> float:
    """Strength at a common reference time: comparing these picks the observation
    that is strongest at *any* later time, whatever order they arrived in."""
    c = model.classifier(classifier)
    strength = c.strength(slot.score)
    if strength <= 0:
        return -math.inf  # not evidence of harm: ties are broken by time, then score
    return math.log2(strength) + slot.ts_ms / (c.half_life_s * 1000.0)


def _latest(items: Iterable[Any], cap: int, key: Any) -> tuple[Any, ...]:
    return tuple(sorted(set(items), key=key)[-cap:])


@dataclass(frozen=True, slots=True)
class StreamState:
    scores: Mapping[str, ScoreSlot] = field(default_factory=dict)
    strong_matches: tuple[MatchRef, ...] = ()
    weak_matches: tuple[MatchRef, ...] = ()
    reporters: tuple[tuple[str, int], ...] = ()  # (reporter digest, newest report time)
    broadcaster_id: str | None = None
    account_age_days: int | None = None
    age_verified: bool | None = None
    visibility: str | None = None
    context_ms: int = 0
    started_at_ms: int | None = None
    ended_at_ms: int | None = None
    last_event_ms: int = 0
    partition: int | None = None  # where the stream's records (and so its state) live
    touched_ms: int = 0  # processing clock: when this state was last written (for expiry)
    cooldown_until_ms: int = 0  # a reviewer found the stream benign: no re-escalation until then
    cooldown_priority: str | None = None  # ... at this priority or below
    emitted: Mapping[str, str] = field(default_factory=dict)
    shadow_emitted: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    # -- observations -------------------------------------------------------------

    def seen_at(self, ts_ms: int) -> StreamState:
        return self if ts_ms <= self.last_event_ms else replace(self, last_event_ms=ts_ms)

    def with_score(self, model: FusionModel, classifier: str, slot: ScoreSlot) -> StreamState:
        current = self.scores.get(classifier)
        state = self.seen_at(slot.ts_ms)
        if current is not None:
            new_rank, old_rank = _rank(model, classifier, slot), _rank(model, classifier, current)
            if (new_rank, slot.ts_ms, slot.score) <= (old_rank, current.ts_ms, current.score):
                return state
        return replace(state, scores={**self.scores, classifier: slot})

    def with_matches(self, strong: Iterable[MatchRef], weak: Iterable[MatchRef]) -> StreamState:
        strong, weak = tuple(strong), tuple(weak)
        state = self
        for m in (*strong, *weak):
            state = state.seen_at(m.ts_ms)
        if strong:
            state = replace(state, strong_matches=_latest(
                (*self.strong_matches, *strong), MAX_STRONG, MatchRef.key))
        if weak:
            # one weak match per frame: repeated matches of one frame are one observation
            by_frame = {m.frame_seq: m for m in sorted((*self.weak_matches, *weak), key=MatchRef.key)}
            state = replace(state, weak_matches=_latest(by_frame.values(), MAX_WEAK, MatchRef.key))
        return state

    def with_report(self, reporter_digest: str, ts_ms: int) -> StreamState:
        newest = dict(self.reporters)
        if newest.get(reporter_digest, -1) >= ts_ms:
            return self.seen_at(ts_ms)
        newest[reporter_digest] = ts_ms
        reporters = _latest(newest.items(), MAX_REPORTERS, lambda r: (r[1], r[0]))
        return replace(self.seen_at(ts_ms), reporters=reporters)

    def with_metadata(self, event: StreamMetadata) -> StreamState:
        state = self.seen_at(event.ts_ms)
        # context: the newest metadata event's values win; absent fields keep what we knew
        newer = event.ts_ms >= self.context_ms

        def pick(new: Any, old: Any) -> Any:
            return old if new is None or (old is not None and not newer) else new

        started = event.ts_ms if event.event == "stream.started" else None
        ended = event.ts_ms if event.event == "stream.ended" else None
        return replace(
            state,
            broadcaster_id=pick(event.broadcaster_id, self.broadcaster_id),
            account_age_days=pick(event.account_age_days, self.account_age_days),
            age_verified=pick(event.age_verified, self.age_verified),
            visibility=pick(event.visibility, self.visibility),
            context_ms=max(self.context_ms, event.ts_ms),
            started_at_ms=_min(self.started_at_ms, started),
            ended_at_ms=_max(self.ended_at_ms, ended),
        )

    def with_emitted(self, key: str, decision_id: str, shadow: str | None = None) -> StreamState:
        if shadow is None:
            return replace(self, emitted={**self.emitted, key: decision_id})
        mine = {**self.shadow_emitted.get(shadow, {}), key: decision_id}
        return replace(self, shadow_emitted={**self.shadow_emitted, shadow: mine})

    def emitted_for(self, shadow: str | None = None) -> Mapping[str, str]:
        return self.emitted if shadow is None else self.shadow_emitted.get(shadow, {})

    # -- features -----------------------------------------------------------------

    def decayed_score(self, model: FusionModel, classifier: str, at_ms: int) -> float | None:
        slot = self.scores.get(classifier)
        if slot is None:
            return None
        return slot.score * decay(at_ms - slot.ts_ms, model.classifier(classifier).half_life_s)

    def distinct_reporters(self, since_ms: int) -> int:
        return sum(1 for _, ts in self.reporters if ts >= since_ms)

    def weak_match_frames(self, since_ms: int) -> int:
        return len({m.frame_seq for m in self.weak_matches if m.ts_ms >= since_ms})

    def context_flags(self, model: FusionModel) -> dict[str, bool]:
        return {
            "context.private": self.visibility == "private",
            "context.new_account": self.account_age_days is not None
            and self.account_age_days < model.new_account_days,
            "context.unverified_age": self.age_verified is False,
        }

    def assess(self, model: FusionModel, at_ms: int | None = None) -> RiskAssessment:
        """The stream's risk at ``at_ms`` (default: its newest event time), explained."""
        at = self.last_event_ms if at_ms is None else at_ms
        terms: list[Contribution] = [Contribution("prior", None, 1.0, model.prior_log_odds)]
        present: dict[str, float] = {}
        for name, slot in sorted(self.scores.items()):
            c = model.classifier(name)
            strength = c.strength(slot.score)
            if strength > 0:
                left = decay(at - slot.ts_ms, c.half_life_s)
                terms.append(Contribution(f"classifier:{name}", slot.ts_ms, c.weight, strength * left,
                                          slot.score))
                present[name] = left
        if self.strong_matches:
            newest = max(self.strong_matches, key=MatchRef.key)
            left = decay(at - newest.ts_ms, model.strong_match_half_life_s)
            terms.append(Contribution(f"hash_match:strong:{newest.bank}", newest.ts_ms, 1.0,
                                      model.strong_match_log_odds * left, float(newest.distance)))
        if self.weak_matches:
            weights = sorted((decay(at - m.ts_ms, model.weak_match_half_life_s) for m in self.weak_matches),
                             reverse=True)[: model.weak_match_max_frames]
            newest = max(self.weak_matches, key=MatchRef.key)
            terms.append(Contribution("hash_match:weak", newest.ts_ms, model.weak_match_log_odds,
                                      model.weak_match_log_odds * sum(weights), float(len(weights))))
        reporters = self.distinct_reporters(at - int(model.report_window_s * 1000))
        if reporters:
            newest_report = max(ts for _, ts in self.reporters)
            terms.append(Contribution("user_reports", newest_report, model.report_weight,
                                      model.report_weight * math.log2(1 + reporters), float(reporters)))
        flags = self.context_flags(model)
        for flag, log_odds in (("context.private", model.private_log_odds),
                               ("context.new_account", model.new_account_log_odds),
                               ("context.unverified_age", model.unverified_age_log_odds)):
            if flags[flag]:
                present[flag] = 1.0
                if log_odds:
                    terms.append(Contribution(flag, None, 1.0, log_odds))
        for group in model.corroboration:
            if all(m in present and (m.startswith("context.") or present[m] > 0) for m in group.members):
                left = min(present[m] for m in group.members)
                terms.append(Contribution(f"corroboration:{group.name}", None, group.bonus,
                                          group.bonus * left))
        log_odds = sum(t.log_odds for t in terms)
        return RiskAssessment(sigmoid(log_odds), log_odds, at, tuple(terms))

    # -- storage ------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"t": self.last_event_ms}
        if self.scores:
            record["s"] = {k: [v.score, v.ts_ms, v.ref] for k, v in self.scores.items()}
        if self.strong_matches:
            record["ms"] = [_match_row(m) for m in self.strong_matches]
        if self.weak_matches:
            record["mw"] = [_match_row(m) for m in self.weak_matches]
        if self.reporters:
            record["r"] = [list(r) for r in self.reporters]
        ctx = {"b": self.broadcaster_id, "a": self.account_age_days, "v": self.age_verified,
               "p": self.visibility, "c": self.context_ms or None, "st": self.started_at_ms,
               "en": self.ended_at_ms}
        record.update({k: v for k, v in ctx.items() if v is not None})
        if self.cooldown_until_ms:
            record["cd"] = [self.cooldown_until_ms, self.cooldown_priority]
        if self.partition is not None:
            record["pt"] = self.partition
        if self.touched_ms:
            record["tc"] = self.touched_ms
        if self.emitted:
            record["e"] = dict(self.emitted)
        if self.shadow_emitted:
            record["se"] = {k: dict(v) for k, v in self.shadow_emitted.items()}
        return record

    @staticmethod
    def lifecycle_of(record: Mapping[str, Any]) -> tuple[int, bool, int | None]:
        """``(touched_ms, ended, partition)`` of a stored record, without decoding the rest
        (the expiry sweep reads every stream's record)."""
        # a record written before "tc" existed: its newest event time is the best guess
        return record.get("tc") or record.get("t", 0), record.get("en") is not None, record.get("pt")

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> StreamState:
        if not record:
            return cls()
        return cls(
            scores={k: ScoreSlot(v[0], v[1], v[2]) for k, v in record.get("s", {}).items()},
            strong_matches=tuple(MatchRef(*row) for row in record.get("ms", ())),
            weak_matches=tuple(MatchRef(*row) for row in record.get("mw", ())),
            reporters=tuple((r[0], r[1]) for r in record.get("r", ())),
            broadcaster_id=record.get("b"),
            account_age_days=record.get("a"),
            age_verified=record.get("v"),
            visibility=record.get("p"),
            context_ms=record.get("c", 0),
            started_at_ms=record.get("st"),
            ended_at_ms=record.get("en"),
            last_event_ms=record.get("t", 0),
            partition=record.get("pt"),
            touched_ms=record.get("tc", 0),
            cooldown_until_ms=(record.get("cd") or [0, None])[0],
            cooldown_priority=(record.get("cd") or [0, None])[1],
            emitted=dict(record.get("e", {})),
            shadow_emitted={k: dict(v) for k, v in record.get("se", {}).items()},
        )

    def differs_materially(self, stored: StreamState, model: FusionModel, min_rise: float = 0.05) -> bool:
        """Whether this state is worth a table write over ``stored``.

        Everything but classifier slots is written on change (those change rarely).
        A slot is written when it is new or its score is ``min_rise`` above the stored
        slot's decayed score, so a stream's steady trickle of classifier outputs does
        not cost a table write each; the stored state lags the exact one by at most
        ``min_rise`` and decisions are always made on the exact one.
        """
        if replace(self, scores={}, last_event_ms=0, touched_ms=0) != replace(stored, scores={}, last_event_ms=0,
                                                                              touched_ms=0):
            return True
        for name, slot in self.scores.items():
            old = stored.scores.get(name)
            if old is None:
                return True
            if old != slot:
                left = decay(slot.ts_ms - old.ts_ms, model.classifier(name).half_life_s)
                if slot.score >= old.score * left + min_rise:
                    return True
        return False

    def benign_cooldown(self, until_ms: int, priority: str | None) -> StreamState:
        """A reviewer closed the stream's escalations as benign: forget them (so the
        stream can be escalated again later) and hold off re-escalation until ``until_ms``."""
        emitted = {k: v for k, v in self.emitted.items() if not k.startswith("escalate:")}
        return replace(self, emitted=emitted, cooldown_until_ms=max(self.cooldown_until_ms, until_ms),
                       cooldown_priority=priority)

    def cooling_down(self, priority: str, at_ms: int) -> bool:
        return (at_ms < self.cooldown_until_ms and self.cooldown_priority is not None
                and Priority(self.cooldown_priority).at_or_above(priority))

    def escalated_at_or_above(self, priority: str, shadow: str | None = None) -> bool:
        return any(key.startswith("escalate:") and Priority(key[9:]).at_or_above(priority)
                   for key in self.emitted_for(shadow))


def _match_row(m: MatchRef) -> list[Any]:
    row = [m.bank, m.entry_id, m.signal_type, m.distance, m.frame_seq, m.ts_ms]
    return row if m.transform is None else [*row, m.transform]


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


