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
agents yield before every event again, as stock Faust's do: the loop's turns go to
screening the frames, where the known-material matches are, and the agents catch up
when it waits for the next batch. Without that, when the loop had no time to spare, the
agents' longer turns starved the frames instead (probe frames p50 1.1 s in one run of
the same harness). With both, in two runs: probe frames p50 85 / 49 ms, p99 219 / 203 ms
(120-380 ms in runs of the harness before either); signals p50 65 / 33 ms behind and p99
689 / 105 ms in the traffic's last 5 s (p99 1.35 s at worst, in an earlier 5 s of the first).

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
from typing import Any

from streamsafe.budget import BATCH_BUDGET_S

__all__ = ["StreamYield", "defer_agents_to", "install_stream_yield", "installed_stream_yield",
           "uninstall_stream_yield"]

log = logging.getLogger(__name__)

try:
    from faust._cython import streams as _compiled_streams
except ImportError:  # a Faust built without its extension modules
    _compiled_streams = None


class StreamYield:
    """The per-event ``sleep`` of Faust's stream iterator, giving the loop back by time.

    Awaited as ``sleep(0)`` before each event: yields only once the calling task has run
    ``budget_s`` since it last yielded here. Any other delay is a real :func:`asyncio.sleep`.
    """

    def __init__(self, budget_s: float = BATCH_BUDGET_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self._slice_started: ContextVar[float] = ContextVar("streamsafe_stream_slice_started", default=-math.inf)
        self.yields = 0  # turns given back (tests and benchmarks read it)

    async def __call__(self, delay: float = 0, result: Any = None) -> Any:
        if delay:
            return await asyncio.sleep(delay, result)
        first = _first
        if (first is not None and first()) or self.clock() - self._slice_started.get() >= self.budget_s:
            self.yields += 1
            await asyncio.sleep(0)
            self._slice_started.set(self.clock())
        return result


_stock_sleep = asyncio.sleep
_first: Callable[[], bool] | None = None


def defer_agents_to(busy: Callable[[], bool] | None) -> None:
    """While ``busy()`` is true, agents yield before every event (see the module doc: the
    pre-filter's frames first). One worker per process: the last caller wins."""
    global _first
    _first = busy


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
