"""An account's state: what its streams showed, kept no longer than the policy's retention.

A broadcaster's prior blocks (when, which stream, which rule) and a viewer's grooming
evidence (one entry per stream: when, the strongest score, whether the stream's
broadcaster was not verified as an adult), user reports naming the account (when and in
which stream: never who reported), and the account actions in force (at most one per
rule). Event time throughout; everything older than the retention is dropped whenever the
state is read (:meth:`AccountState.pruned`), and the sweep deletes a state that has
nothing left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["START_HORIZON_MS", "AccountState", "Block", "Grooming", "Report", "Start"]

#: how long a stream start is kept when nothing else is known about its broadcaster: long
#: enough for a block decided on another worker to arrive after it, no longer
START_HORIZON_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Block:
    ts_ms: int
    stream_id: str
    rule: str
    decision_id: str | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """A broadcaster's stream start (so a block that arrives after a later start still counts)."""

    ts_ms: int
    stream_id: str
    decided_at_ms: int
    decided: bool = False  # the repeat-broadcaster rule already acted on it


@dataclass(frozen=True, slots=True)
class Grooming:
    ts_ms: int  # the newest signal in the stream
    stream_id: str
    score: float  # the strongest
    classifier: str
    young_target: bool  # the stream's broadcaster is not verified as an adult
    private: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """A user report that named the account (``reported_account_id``): the reporter is not kept."""

    ts_ms: int
    stream_id: str


@dataclass(frozen=True, slots=True)
class AccountState:
    blocks: tuple[Block, ...] = ()
    grooming: tuple[Grooming, ...] = ()
    actions: tuple[tuple[str, int], ...] = ()  # (rule, event time) of account actions in force
    touched_ms: int = 0  # event time of the newest entry
    starts: tuple[Start, ...] = ()  # a broadcaster's recent stream starts
    reports: tuple[Report, ...] = ()  # user reports naming the account

    @property
    def empty(self) -> bool:
        return not (self.blocks or self.grooming or self.actions or self.starts or self.reports)

    def pruned(self, since_ms: int, now_ms: int) -> AccountState:
        """Without what happened before ``since_ms`` (the retention's start), nor stream starts
        older than :data:`START_HORIZON_MS` before ``now_ms``."""
        starts_since = max(since_ms, now_ms - START_HORIZON_MS)
        kept = AccountState(tuple(b for b in self.blocks if b.ts_ms >= since_ms),
                            tuple(g for g in self.grooming if g.ts_ms >= since_ms),
                            tuple(a for a in self.actions if a[1] >= since_ms), self.touched_ms,
                            tuple(s for s in self.starts if s.ts_ms >= starts_since),
                            tuple(r for r in self.reports if r.ts_ms >= since_ms))
        return kept if kept != self else self

    def with_block(self, block: Block) -> AccountState:
        if any(b.stream_id == block.stream_id and b.rule == block.rule for b in self.blocks):
            return self
        return replace(self, blocks=(*self.blocks, block)[-50:], touched_ms=max(self.touched_ms, block.ts_ms))

    def with_grooming(self, seen: Grooming) -> AccountState:
        prior = next((g for g in self.grooming if g.stream_id == seen.stream_id), None)
        if prior is not None:
            seen = replace(seen, ts_ms=max(seen.ts_ms, prior.ts_ms), score=max(seen.score, prior.score),
                           young_target=seen.young_target or prior.young_target)
            if seen == prior:
                return self
        rest = tuple(g for g in self.grooming if g.stream_id != seen.stream_id)
        return replace(self, grooming=(*rest, seen)[-200:], touched_ms=max(self.touched_ms, seen.ts_ms))

    def with_report(self, report: Report) -> AccountState:
        return replace(self, reports=(*self.reports, report)[-200:], touched_ms=max(self.touched_ms, report.ts_ms))

    def expires_ms(self, retention_ms: int) -> int:
        """When (event time) nothing in the state is left to keep."""
        if self.blocks or self.grooming or self.actions or self.reports:
            return self.touched_ms + retention_ms + 1
        return max((s.ts_ms for s in self.starts), default=self.touched_ms) + START_HORIZON_MS + 1

    def with_start(self, start: Start) -> AccountState:
        rest = tuple(s for s in self.starts if s.stream_id != start.stream_id)
        return replace(self, starts=(*rest, start)[-20:], touched_ms=max(self.touched_ms, start.ts_ms))

    def with_action(self, rule: str, at_ms: int) -> AccountState:
        return replace(self, actions=(*(a for a in self.actions if a[0] != rule), (rule, at_ms)))

    def active(self, rule: str) -> bool:
        return any(a[0] == rule for a in self.actions)

    def to_record(self) -> dict[str, Any]:
        return {"b": [[b.ts_ms, b.stream_id, b.rule, b.decision_id] for b in self.blocks],
                "g": [[g.ts_ms, g.stream_id, g.score, g.classifier, g.young_target, g.private] for g in self.grooming],
                "a": [list(a) for a in self.actions], "t": self.touched_ms,
                "s": [[s.ts_ms, s.stream_id, s.decided_at_ms, s.decided] for s in self.starts],
                **({"r": [[r.ts_ms, r.stream_id] for r in self.reports]} if self.reports else {})}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> AccountState:
        if not record:
            return cls()
        return cls(tuple(Block(*b) for b in record.get("b", ())), tuple(Grooming(*g) for g in record.get("g", ())),
                   tuple((str(a[0]), int(a[1])) for a in record.get("a", ())), int(record.get("t", 0)),
                   tuple(Start(*s) for s in record.get("s", ())), tuple(Report(*r) for r in record.get("r", ())))
