"""The frame pre-filter's consumer, fetching on a thread of its own.

A fetch takes several turns of the event loop that runs it: the request is written, the
response read, the records unpacked, the waiter woken, each in a turn of its own. On the
worker's loop, busy with the agents and the pre-filter's own slices, a turn took ~14 ms at
the median on a 2-core box at 2,700 msgs/s of the realistic mix (``bench/latency.py``): the
pre-filter's fetch requests took 30 ms from request to response at the median, for a
broker that answered in one or two, and a known frame waited 58 ms from its send to the
pre-filter's hands at the median, against 7 ms for a plain consumer on an idle loop.

So the aiokafka consumer lives on its own thread and event loop (:class:`FetchThread`),
where the turns are short, and keeps fetching while the worker's loop screens the batch in
hand: what arrives meanwhile is fetched within a round trip and waits on the worker's side,
and the worker's next ``getmany`` takes all of it at once, merged per partition. A frame
then waits for the rest of the batch in hand, not for that batch and a fetched-ahead one
after it (handing over one batch at a time, a frame that arrived early in a batch's
screening was fetched only once the worker took the batch ahead of it: traced at the same
rate, send to the pre-filter's hands p50 25 ms). At most ``max_records`` records are
fetched and not yet taken; then the thread waits, and aiokafka's own fetching stops once
its buffer is full. What the worker's loop sees is a consumer's ``getmany``, ``commit``,
``assignment`` and ``highwater``; commits run on the thread's loop and are awaited from
the worker's.

A rebalance: the listener runs on the thread's loop and awaits ``on_revoked`` on the
worker's loop (the pre-filter finishes the batch in hand and commits what it screened);
records handed over but not yet taken are dropped first (never screened, never committed:
the partitions' next owner fetches them again from the committed offset).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError

from streamsafe.control.broadcast import stop_consumer
from streamsafe.transport.loop_thread import LoopThread

__all__ = ["FetchThread"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Batch = dict[TopicPartition, list[ConsumerRecord]]


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, thread: FetchThread) -> None:
        self.thread = thread

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.thread.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class FetchThread:
    """An aiokafka group consumer on its own thread and loop, handing batches to the caller's loop."""

    def __init__(self, make_consumer: Callable[[], AIOKafkaConsumer], topic: str,
                 on_revoked: Callable[[], Awaitable[None]], *, max_records: int, name: str = "frame-fetch") -> None:
        self.make_consumer = make_consumer  # called on the thread: aiokafka binds the loop it is made on
        self.topic = topic
        self.on_revoked = on_revoked  # awaited on the caller's loop, before the partitions go
        self.max_records = max_records
        self.name = name
        self.consumer: AIOKafkaConsumer | None = None
        self._thread = LoopThread(name)
        self._main: asyncio.AbstractEventLoop | None = None  # the caller's
        self._ready: collections.deque[Batch | BaseException] = collections.deque()  # caller's loop only
        self._waiter: asyncio.Future[None] | None = None  # caller's loop only
        self._room: asyncio.Event | None = None  # thread's loop: fewer than max_records not taken
        self._outstanding = 0  # thread's loop: records handed over, not yet taken (or dropped)
        self._pump: asyncio.Task[None] | None = None
        self.handed = 0  # batches handed over so far (caller's loop)
        # batches fetched for the caller / taken or dropped by it: written on one thread each,
        # read from either (a plain int under the GIL), so the caller's loop learns that frames
        # wait before the hand-over's callback has had its turn (see :meth:`waiting`)
        self._fetched = 0
        self._taken_batches = 0

    async def start(self) -> None:
        """Start the thread, then the consumer on it (errors propagate here)."""
        self._main = asyncio.get_running_loop()
        await self._thread.start(self._open)

    async def _open(self) -> None:  # on the thread's loop
        consumer = self.make_consumer()
        consumer.subscribe([self.topic], listener=_Revoked(self))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer
        self._room = asyncio.Event()
        self._room.set()
        self._pump = asyncio.get_running_loop().create_task(self._fetch_forever())

    async def _fetch_forever(self) -> None:
        consumer, room = self.consumer, self._room
        assert consumer is not None and room is not None
        while True:
            await room.wait()
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records - self._outstanding)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the caller's getmany raises it (ConsumerStoppedError on stop)
                self._hand(exc)
                return
            if batch:
                self._outstanding += sum(len(records) for records in batch.values())
                if self._outstanding >= self.max_records:
                    room.clear()
                self._hand(batch)

    def _taken(self, count: int) -> None:  # on the thread's loop: the caller took (or dropped) ``count``
        self._outstanding -= count
        if self._room is not None and self._outstanding < self.max_records:
            self._room.set()

    def _hand(self, item: Batch | BaseException) -> None:
        assert self._main is not None
        if not isinstance(item, BaseException):
            self._fetched += 1
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to hand to
            self._main.call_soon_threadsafe(self._arrive, item)

    def _arrive(self, item: Batch | BaseException) -> None:  # on the caller's loop
        self._ready.append(item)
        self.handed += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> Batch:
        """Every record fetched and not yet taken, merged per partition in offset order (``{}``
        if none came within ``timeout_ms``). ``max_records`` is the thread's (set when it was
        made): at most that many are fetched ahead."""
        if not self._ready:
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_ms / 1000):
                    await waiter
            self._waiter = None
            if not self._ready:
                return {}
        if isinstance(self._ready[0], BaseException):
            raise self._ready.popleft()
        taken: list[Batch] = []
        while self._ready and not isinstance(self._ready[0], BaseException):
            batch = self._ready.popleft()
            assert not isinstance(batch, BaseException)  # for the type checker
            taken.append(batch)
        self._taken_batches += len(taken)
        self._in_thread_soon(functools.partial(self._taken, sum(len(rs) for b in taken for rs in b.values())))
        if len(taken) == 1:  # the common case: handed over as fetched, nothing to merge
            return taken[0]
        merged: Batch = {}
        for batch in taken:
            for tp, records in batch.items():
                merged.setdefault(tp, []).extend(records)
        return merged

    def _in_thread_soon(self, callback: Callable[[], None]) -> None:
        self._thread.call_soon(callback)

    async def _in_thread(self, coro: Coroutine[Any, Any, _T]) -> _T:
        done = self._thread.submit(coro)
        if done is None:
            raise ConsumerStoppedError()
        return await done

    async def revoked(self) -> None:  # on the thread's loop, from the rebalance listener
        assert self._main is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._revoked_here(), self._main))

    async def _revoked_here(self) -> None:  # on the caller's loop
        batches = [item for item in self._ready if not isinstance(item, BaseException)]
        dropped = sum(len(records) for batch in batches for records in batch.values())
        self._taken_batches += len(batches)
        self._ready = collections.deque(item for item in self._ready if isinstance(item, BaseException))
        try:
            await self.on_revoked()
        finally:
            if dropped:  # fetched again from the committed offsets, by whoever is assigned them next
                log.debug("dropped %d fetched records on revocation", dropped)
                self._in_thread_soon(functools.partial(self._taken, dropped))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (run on the thread's loop, awaited here)."""
        consumer = self.consumer
        assert consumer is not None
        await self._in_thread(consumer.commit(offsets))

    def waiting(self) -> bool:
        """Whether a batch was fetched and not yet taken by the caller: true from the moment
        the thread hands it over, before the hand-over runs on the caller's loop."""
        return self._fetched != self._taken_batches

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp) if self.consumer is not None else None

    async def stop(self) -> None:
        """Stop the consumer (leaving the group) and the thread."""
        await self._thread.stop(self._close())

    async def _close(self) -> None:  # on the thread's loop
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.consumer is not None:
            await stop_consumer(self.consumer)
