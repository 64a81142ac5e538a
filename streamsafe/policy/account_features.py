"""The features an account rule (the policy's ``accounts.rules``) can test, in one table, like
:mod:`streamsafe.policy.features` for streams: each name, whose history it reads, and the
entries of an account's state it counts. A condition's ``window`` narrows the entries to
those that recent (default: the whole retention); the loader validates rules against this
table and :mod:`streamsafe.accounts.rules` evaluates them from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamsafe.accounts.state import AccountState

__all__ = ["ACCOUNT_FEATURES", "MAX_COUNT", "AccountFeature", "Entry"]

MAX_COUNT = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing an account's state holds that a feature counts (for the decision's evidence)."""

    ts_ms: int
    stream_id: str
    detail: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class AccountFeature:
    name: str
    role: str | None  # whose history it is: broadcaster, viewer, or either (None)
    entries: Callable[[AccountState], Iterable[Entry]]
    distinct_streams: bool  # count streams rather than entries
    description: str

    def within(self, state: AccountState, since_ms: int) -> list[Entry]:
        """The entries since ``since_ms`` (event time), oldest first; one per stream when the
        feature counts streams."""
        kept = sorted((e for e in self.entries(state) if e.ts_ms >= since_ms), key=lambda e: e.ts_ms)
        if self.distinct_streams:
            kept = list({e.stream_id: e for e in kept}.values())
        return kept


ACCOUNT_FEATURES: dict[str, AccountFeature] = {f.name: f for f in (
    AccountFeature("account.prior_blocks", "broadcaster",
                   lambda s: (Entry(b.ts_ms, b.stream_id, (("rule", b.rule),)) for b in s.blocks), False,
                   "the broadcaster's streams blocked (live blocks) within the window"),
    AccountFeature("viewer.young_targets", "viewer",
                   lambda s: (Entry(g.ts_ms, g.stream_id, (("classifier", g.classifier), ("score", g.score)))
                              for g in s.grooming if g.young_target), True,
                   "streams of broadcasters not verified as adults the viewer's grooming signals reached"),
    AccountFeature("viewer.streams_with_grooming", "viewer",
                   lambda s: (Entry(g.ts_ms, g.stream_id, (("classifier", g.classifier), ("score", g.score)))
                              for g in s.grooming), True,
                   "streams the viewer's grooming signals reached (any broadcaster)"),
    AccountFeature("account.user_reports", None, lambda s: (Entry(r.ts_ms, r.stream_id) for r in s.reports), False,
                   "user reports that named the account (reported_account_id) within the window"),
    AccountFeature("account.reported_streams", None, lambda s: (Entry(r.ts_ms, r.stream_id) for r in s.reports),
                   True, "streams in which users reported the account within the window"),
)}
