"""Time budgets: a loop over a large batch gives the event loop back once its slice is spent.

A worker decides on one event loop, beside the work that comes in large batches: the
pre-filter's frames, a bank import's entries, the audit of the control topics. Done in
one go, such a batch holds every decision behind it for as long as it takes (5,000
signed bank entries: ~0.8 s of signature checks on a slow core). Cut by a budget of a
few milliseconds, a decision waits for one slice at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["BATCH_BUDGET_S", "TimeBudget"]

#: the time a slice of a batch may take before the event loop runs something else
BATCH_BUDGET_S = 0.004


class TimeBudget:
    """Measures a slice of work against ``budget_s`` (on ``clock``, monotonic seconds)."""

    def __init__(self, budget_s: float = BATCH_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self.started = clock()

    def spent(self) -> bool:
        """Whether this slice has used its budget."""
        return self.clock() - self.started >= self.budget_s

    async def next_slice(self) -> None:
        """Give the event loop back, then start a new slice."""
        await asyncio.sleep(0)
        self.started = self.clock()
