"""Agents give the event loop back by time, not before every event.

Faust's stream iterator (``faust._cython.streams.StreamIterator.next``, faust-streaming
0.15.3) awaits ``asyncio.sleep(0)`` before it takes each event off the stream's queue,
so an agent handles at most one event per turn of the event loop. A worker's loop turn
holds everything else that is ready: a slice of the pre-filter's frames, every other
agent's event, the producers' and fetchers' callbacks. Measured on a 2-core box at 2,700
msgs/s of the realistic mix (``bench/latency.py``), a turn took ~18 ms at the median, so
the classifier-signal agent (540 signals/s) could handle ~56 a second: it fell behind by
1.3 s in its first 5 s and kept falling (p99 4.4 s after 15 s), and every decision a
signal feeds waited with it. Frames sent through the agents instead of the pre-filter
waited 7.6 s at the median.

So the fast transport replaces that per-event yield: an agent gives the loop back once it
has run for :data:`~streamsafe.budget.BATCH_BUDGET_S` since it last did (the budget the
pre-filter's slices and the other batch loops keep), so nothing else waits longer for it
than for one of their slices. An agent whose queue is empty still suspends on it, and an
agent's own awaits (a send whose buffer is full, a lock) yield as before. The time is
kept per task (a context variable: each agent runs in its own task), on
:func:`time.monotonic`, the clock of every budget in a worker. With the budget the
signals kept up (p50 57-126 ms behind, p99 117-242 ms, same harness and rate).

Frames come first. While the frame pre-filter has a batch in hand (:func:`defer_agents_to`),
an agent about to take an event waits for that batch to be screened, for at most
:data:`DEFER_AT_MOST_S`; past that, it takes one event per turn until the batch is done,
as stock Faust's agents do. The loop's turns go to screening the frames, where the
known-material matches are, and the agents catch up when the pre-filter waits for the
next batch. Without that, when the loop had no time to spare, the agents' longer turns
starved the frames instead (probe frames p50 1.1 s in one run of the same harness).
With one event per turn while a batch was in hand, each of the batch's slices still
waited for a turn of every agent: probe frames p50 67-74 ms, p99 160-186 ms in three
runs at 2,700 msgs/s; waiting for the batch instead, in three runs alternating with
those, p50 49.5-50.9 ms, p99 109-155 ms, and the signals kept up as well (p99 120-285 ms
behind in the traffic's last 10 s, against 200-370 ms).

Frames also come first between batches. The pre-filter's fetch thread hands a batch over
with a callback on the worker's loop, which runs only after every task ready before it has
had its turn: each agent with events queued, up to a budget each. So while frames wait to be
taken (:meth:`FramesFirst.waiting`: true from the moment the thread hands them over, before
the callback has run), an agent gives the loop back before each event, and the pre-filter
takes the batch within a turn. Traced at 4,700 msgs/s of the realistic mix on a 2-core box,
a known frame waited from its fetch until the pre-filter took it p50 4.4 / 2.3 ms, p99
19.5 / 14.3 ms in two traced runs; giving the loop back (with the worker's other settings of
the time), p50 2.5 / 2.8 ms, p99 8.0 / 9.6 ms in two runs alternating with those.

Only Faust's compiled iterator is changed (its module global ``sleep``); a Faust without
it (the pure-Python ``Stream._py_aiter``) keeps its per-event yield, and the worker says
so. :func:`install_stream_yield` is called when the fast transport is built; the stock
transport (``streamsafe-stock://``, the benchmarks' stock Faust) leaves it alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from streamsafe.budget import BATCH_BUDGET_S

__all__ = ["DEFER_AT_MOST_S", "FramesFirst", "StreamYield", "defer_agents_to", "install_stream_yield",
           "installed_stream_yield", "uninstall_stream_yield"]

log = logging.getLogger(__name__)

try:
    from faust._cython import streams as _compiled_streams
except ImportError:  # a Faust built without its extension modules
    _compiled_streams = None


#: how long an agent waits for the frames' batch in hand before it takes one event per turn:
#: a batch of a few hundred frames is screened within it; the agents never wait longer
DEFER_AT_MOST_S = 0.05


class FramesFirst(Protocol):
    """What agents defer to: the frame pre-filter."""

    #: batches taken in hand so far (tells one batch from the next)
    batches: int

    def screening(self) -> bool:
        """Whether a batch of frames is in hand."""

    def waiting(self) -> bool:
        """Whether frames were fetched and not yet taken in hand."""

    async def until_screened(self, at_most_s: float) -> None:
        """Return once the batch in hand is screened, or after ``at_most_s``."""


class StreamYield:
    """The per-event ``sleep`` of Faust's stream iterator, giving the loop back by time.

    Awaited as ``sleep(0)`` before each event: yields only once the calling task has run
    ``budget_s`` since it last yielded here. Any other delay is a real :func:`asyncio.sleep`.
    """

    def __init__(self, budget_s: float = BATCH_BUDGET_S, clock: Callable[[], float] = time.monotonic,
                 defer_at_most_s: float = DEFER_AT_MOST_S) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self.defer_at_most_s = defer_at_most_s
        self._slice_started: ContextVar[float] = ContextVar("streamsafe_stream_slice_started", default=-math.inf)
        self._deferred_to: ContextVar[int] = ContextVar("streamsafe_stream_deferred_to", default=-1)
        self.yields = 0  # turns given back (tests and benchmarks read it)

    async def __call__(self, delay: float = 0, result: Any = None) -> Any:
        if delay:
            return await asyncio.sleep(delay, result)
        first = _first
        if first is not None and first.screening():
            self.yields += 1
            if self._deferred_to.get() != first.batches:  # this agent has not waited for this batch yet
                self._deferred_to.set(first.batches)
                await first.until_screened(self.defer_at_most_s)
            else:  # waited its while: one event per turn until the batch is done
                await asyncio.sleep(0)
            self._slice_started.set(self.clock())
        elif ((first is not None and first.waiting())  # frames fetched: the pre-filter takes them next turn
              or self.clock() - self._slice_started.get() >= self.budget_s):
            self.yields += 1
            await asyncio.sleep(0)
            self._slice_started.set(self.clock())
        return result


_stock_sleep = asyncio.sleep
_first: FramesFirst | None = None


def defer_agents_to(frames: FramesFirst | None) -> None:
    """While ``frames`` has a batch in hand, agents wait for it (see the module doc: the
    pre-filter's frames first). One worker per process: the last caller wins."""
    global _first
    _first = frames


def installed_stream_yield() -> StreamYield | None:
    """The :class:`StreamYield` Faust's stream iterator awaits now, if any."""
    current = getattr(_compiled_streams, "sleep", None)
    return current if isinstance(current, StreamYield) else None


def install_stream_yield(budget_s: float = BATCH_BUDGET_S,
                         clock: Callable[[], float] = time.monotonic) -> StreamYield | None:
    """Make every Faust stream in this process give the loop back by time (see the module
    doc). Returns what was installed, or None where Faust has no compiled iterator."""
    if _compiled_streams is None:
        log.warning("Faust's compiled stream iterator is missing: agents yield before every event")
        return None
    current = getattr(_compiled_streams, "sleep", None)
    if current is not _stock_sleep and not isinstance(current, StreamYield):
        raise RuntimeError("faust._cython.streams no longer awaits asyncio.sleep before each event; "
                           "update streamsafe.transport.stream_yield")
    installed = StreamYield(budget_s, clock)
    _compiled_streams.sleep = installed  # type: ignore[attr-defined]
    return installed


def uninstall_stream_yield() -> None:
    """Put Faust's per-event ``asyncio.sleep`` back (tests)."""
    if _compiled_streams is not None:
        _compiled_streams.sleep = _stock_sleep  # type: ignore[attr-defined]
