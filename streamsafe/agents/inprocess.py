"""Matches applied where they were screened, when this worker holds the stream's state.

The frame pre-filter forwards each message with a match to ``streamsafe.frame-matches``
on the partition of the stream's state, and the Faust agent that owns that partition
steps on it: one more broker round trip (send, fetch, Faust's delivery) between a known
frame and its block, the largest hop measured on the decision path. When this worker's
Faust consumer owns that partition -- assigned as an active, no rebalance under way, its
flow resumed (tables recovered) -- the pre-filter steps on the match at once, through the
same handler and the same tables, and publishes what it decided.

The forward is still sent: it is the durable copy. If this worker dies before the state
write or the decision is acknowledged, the partition's next owner reads the copy and
decides again (decisions are idempotent). When the copy reaches this worker's own agent
in the same consumer generation, it is recognised by its source record and skipped (the
step was taken; its state write and decisions are on their way, and the copy's offset is
committed only after both are acknowledged, as for any record). After any rebalance the
record of what was applied here is forgotten, so a copy arriving then is stepped on
again, as a match forwarded twice always was.

Ownership is read in the same event-loop turn as the step's read and write (the step is
synchronous), so no rebalance can come between them: Faust marks a rebalance and
suspends its flow on this loop before it gives any partition up. The table writes take
their changelog partition from Faust's current event; here that is the forwarded
record's partition, the one the agent would have written from.

The pre-filter's group and Faust's group assign partitions independently: with one
worker they coincide; with several, only the partitions both groups gave this worker
are applied here, and the rest take the forward as before (``streamsafe_prefilter_matches_total``
counts each way).
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

from faust.streams import _current_event

from streamsafe.agents.records import RecordHandler
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.models import FrameMatches
from streamsafe.pipeline.outcome import Outcome

__all__ = ["InProcessMatches"]

log = logging.getLogger(__name__)


@dataclass
class _Message:  # what Faust's tables read of the current event's message
    topic: str
    partition: int


@dataclass
class _Event:
    message: _Message


class InProcessMatches:
    """Steps on a screened match in the pre-filter when this worker's agents own its partition."""

    def __init__(self, app: Any, topic: str, handler: RecordHandler, *, most_pending: int = 100_000) -> None:
        self.app = app
        self.topic = topic  # the broker-side name of streamsafe.frame-matches
        self.handler = handler
        self.most_pending = most_pending
        self.pending: Counter[tuple[str, int, int]] = Counter()  # applied here, copy not yet seen
        self._generation: int | None = None
        self._owned: frozenset[int] = frozenset()
        metric = handler.metrics.prefilter_matches
        self._in_process = metric.labels("in_process")
        self._by_agent = metric.labels("by_agent")

    def owned(self) -> frozenset[int]:
        """The frame-matches partitions this worker's agents own now (none while rebalancing or recovering)."""
        app = self.app
        if app.rebalancing or not app.flow_control.is_active():
            return frozenset()
        generation = app.rebalancing_count
        if generation != self._generation:
            self._owned = frozenset(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == self.topic)
            self._generation = generation
            self.pending.clear()  # copies seen after a rebalance are stepped on again
        return self._owned

    def apply(self, screened: FrameMatches, source: SourceRecord) -> Outcome | None:
        """Step on a match now if its partition is owned here (``None``: it is left to the forward)."""
        partition = source.partition
        if partition not in self.owned():
            return None
        event = _Event(_Message(self.topic, partition))
        token = _current_event.set(weakref.ref(event))
        try:  # synchronous: never a record in hand across an await, so not in ``handler.in_flight``
            outcome = self.handler.apply_matches(screened, source)
        except Exception:  # the agent steps on the copy, and dead-letters it if it fails again
            log.debug("a match could not be applied in process; its forward will be", exc_info=True)
            return None
        finally:
            _current_event.reset(token)
        if len(self.pending) >= self.most_pending:
            self.pending.clear()  # copies then stepped on twice: harmless, and memory stays bounded
        self.pending[_key(source)] += 1
        self._in_process.inc()
        return outcome

    def take_copy(self, source: SourceRecord) -> bool:
        """True if the forward of ``source`` was already applied here (and is skipped)."""
        self.owned()  # forgets what was applied before a rebalance
        key = _key(source)
        applied = self.pending.get(key, 0)
        if not applied:
            self._by_agent.inc()
            return False
        if applied == 1:
            del self.pending[key]
        else:
            self.pending[key] = applied - 1
        return True


def _key(source: SourceRecord) -> tuple[str, int, int]:
    return source.topic, source.partition, source.offset
