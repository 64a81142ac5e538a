"""What ``/readyz`` knows beyond start-up: is the worker still deciding?

A worker that joined its group, recovered its tables and loaded its policies can
still stop deciding: an agent task that died, a record whose handling never
returns, a producer whose deliveries time out, partitions with lag whose committed
offsets do not move. Each is a condition here, pure and clocked by the caller
(monotonic seconds), so tests can drive it without a broker.

* :class:`DeliveryHealth` -- failing since the first delivery that timed out or was
  refused, until one succeeds again.
* :class:`AgentRoster` -- which agents' loops are running right now.
* :class:`ProgressTracker` -- per partition, when its committed offset last moved or it
  last had nothing to do; stalled when lag > 0 and neither happened for ``stall_after_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

__all__ = ["AgentRoster", "DeliveryHealth", "ProgressTracker"]

log = logging.getLogger(__name__)


@dataclass
class DeliveryHealth:
    """Deliveries to the broker: ok until one times out or is refused, ok again once one succeeds."""

    failing_since: float | None = None
    last_problem: str = ""
    failures: int = 0  # since the last success
    on_failure: Callable[[], None] | None = None  # e.g. a metric's inc

    @property
    def ok(self) -> bool:
        return self.failing_since is None

    def failed(self, problem: str, now: float) -> None:
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1
        self.last_problem = problem
        if self.on_failure is not None:
            self.on_failure()

    def delivered(self) -> None:
        if self.failing_since is not None:
            log.warning("deliveries succeed again after %d failures", self.failures)
        self.failing_since = None
        self.failures = 0


@dataclass
class AgentRoster:
    """The agents a worker runs, and which of them are running now."""

    expected: set[str] = field(default_factory=set)
    running: dict[str, int] = field(default_factory=dict)

    def started(self, name: str) -> None:
        self.running[name] = self.running.get(name, 0) + 1

    def stopped(self, name: str) -> None:
        self.running[name] = max(0, self.running.get(name, 0) - 1)

    def missing(self) -> list[str]:
        """Expected agents with no running loop."""
        return sorted(name for name in self.expected if not self.running.get(name))


@dataclass
class ProgressTracker:
    """Partitions with lag whose committed offset has not moved for ``stall_after_s``."""

    stall_after_s: float
    _moved: dict[Hashable, tuple[int | None, float]] = field(default_factory=dict)

    def observe(self, partitions: Iterable[tuple[Hashable, int, int | None]], now: float) -> None:
        """``(partition, lag, committed offset)`` of every assigned partition, now."""
        seen = set()
        for tp, behind, committed in partitions:
            seen.add(tp)
            previous = self._moved.get(tp)
            if previous is None or behind == 0 or committed != previous[0]:
                self._moved[tp] = (committed, now)
        for tp in list(self._moved):
            if tp not in seen:  # revoked: another worker answers for it
                del self._moved[tp]

    def stalled(self, now: float) -> list[Hashable]:
        return [tp for tp, (_, moved_at) in self._moved.items() if now - moved_at > self.stall_after_s]

    def last_progress(self) -> float | None:
        """The oldest partition's last progress (monotonic), or None with no partition."""
        return min((moved_at for _, moved_at in self._moved.values()), default=None)
