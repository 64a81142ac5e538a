"""The frame pre-filter's consumer, fetching on a thread of its own.

A fetch takes several turns of the event loop that runs it: the request is written, the
response read, the records unpacked, the waiter woken, each in a turn of its own. On the
worker's loop, busy with the agents and the pre-filter's own slices, a turn took ~14 ms at
the median on a 2-core box at 2,700 msgs/s of the realistic mix (``bench/latency.py``): the
pre-filter's fetch requests took 30 ms from request to response at the median, for a
broker that answered in one or two, and a known frame waited 58 ms from its send to the
pre-filter's hands at the median, against 7 ms for a plain consumer on an idle loop.

So the aiokafka consumer lives on its own thread and event loop (:class:`FetchThread`),
where the turns are short, and fetches the next batch while the worker's loop screens the
one in hand: one batch handed over at a time (aiokafka's own prefetch buffer behind it).
What the worker's loop sees is a consumer's ``getmany``, ``commit``, ``assignment`` and
``highwater``; commits run on the thread's loop and are awaited from the worker's.

A rebalance: the listener runs on the thread's loop and awaits ``on_revoked`` on the
worker's loop (the pre-filter finishes the batch in hand and commits what it screened);
a batch handed over but not yet taken is dropped first (never screened, never committed:
the partitions' next owner fetches it again from the committed offset).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError

from streamsafe.control.broadcast import stop_consumer

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
        self._loop: asyncio.AbstractEventLoop | None = None  # the thread's
        self._main: asyncio.AbstractEventLoop | None = None  # the caller's
        self._thread: threading.Thread | None = None
        self._ready: collections.deque[Batch | BaseException] = collections.deque()  # caller's loop only
        self._waiter: asyncio.Future[None] | None = None  # caller's loop only
        self._want: asyncio.Event | None = None  # thread's loop: the caller took a batch, fetch the next
        self._pump: asyncio.Task[None] | None = None
        self.handed = 0  # batches handed over so far

    async def start(self) -> None:
        """Start the thread, then the consumer on it (errors propagate here)."""
        self._main = asyncio.get_running_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name=self.name, daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            await asyncio.to_thread(self._thread.join, 10.0)
            raise

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open(started))
            if started.exception() is None:
                loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self, started: concurrent.futures.Future[None]) -> None:
        try:
            consumer = self.make_consumer()
            consumer.subscribe([self.topic], listener=_Revoked(self))
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
        except BaseException as exc:
            started.set_exception(exc)
            return
        self.consumer = consumer
        self._want = asyncio.Event()
        self._want.set()  # the first batch
        self._pump = asyncio.get_running_loop().create_task(self._fetch_forever())
        started.set_result(None)

    async def _fetch_forever(self) -> None:
        consumer, want = self.consumer, self._want
        assert consumer is not None and want is not None
        while True:
            await want.wait()
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the caller's getmany raises it (ConsumerStoppedError on stop)
                self._hand(exc)
                return
            if batch:
                want.clear()
                self._hand(batch)

    def _hand(self, item: Batch | BaseException) -> None:
        assert self._main is not None
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to hand to
            self._main.call_soon_threadsafe(self._arrive, item)

    def _arrive(self, item: Batch | BaseException) -> None:  # on the caller's loop
        self._ready.append(item)
        self.handed += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> Batch:
        """The next batch (``{}`` if none came within ``timeout_ms``); the thread then fetches
        the one after. ``max_records`` is the thread's (set when it was made)."""
        if not self._ready:
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_ms / 1000):
                    await waiter
            self._waiter = None
            if not self._ready:
                return {}
        item = self._ready.popleft()
        if isinstance(item, BaseException):
            raise item
        self._in_thread_soon(self._want_next)
        return item

    def _want_next(self) -> None:  # on the thread's loop
        if self._want is not None:
            self._want.set()

    def _in_thread_soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    async def _in_thread(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise ConsumerStoppedError()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def revoked(self) -> None:  # on the thread's loop, from the rebalance listener
        assert self._main is not None
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._revoked_here(), self._main))

    async def _revoked_here(self) -> None:  # on the caller's loop
        dropped = [item for item in self._ready if not isinstance(item, BaseException)]
        self._ready = collections.deque(item for item in self._ready if isinstance(item, BaseException))
        try:
            await self.on_revoked()
        finally:
            if dropped:  # fetched again from the committed offsets, by whoever is assigned them next
                log.debug("dropped %d fetched batches on revocation", len(dropped))
                self._in_thread_soon(self._want_next)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (run on the thread's loop, awaited here)."""
        consumer = self.consumer
        assert consumer is not None
        await self._in_thread(consumer.commit(offsets))

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.consumer.highwater(tp) if self.consumer is not None else None

    async def stop(self) -> None:
        """Stop the consumer (leaving the group) and the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        with contextlib.suppress(ConsumerStoppedError):
            await self._in_thread(self._close())
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10.0)

    async def _close(self) -> None:  # on the thread's loop
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.consumer is not None:
            await stop_consumer(self.consumer)
