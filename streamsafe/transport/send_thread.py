"""What the worker publishes, sent by a producer on a thread of its own.

A record sent through an aiokafka producer on the worker's event loop takes several turns
of that loop before it reaches the socket (the sender task wakes, drains the accumulator,
starts the request, writes it), and the producer keeps one request in flight per broker:
the next waits until the loop has read the last one's response. On a busy worker each of
those turns waits behind the agents and the pre-filter's slices. Traced on a 2-core box at
3,900 msgs/s of the realistic mix (``bench/latency.py``), a block took 6-21 ms at the median
and 19-103 ms at p99 (seven runs) from the moment it was handed to Faust's producer to the
moment it was readable: more than the whole path of a plain consumer-producer pair (p50 ~4,
p99 ~10-14 ms). Sent from this thread: 5-7 ms at the median, p99 15-68 ms (seven runs).

So the records StreamSafe publishes -- decisions, escalations, reports, statements, dead
letters, audit records, the pre-filter's forwards -- go through :class:`SendThread`: an
aiokafka producer (built by ``streamsafe.clients``, so configured as every other one) on a
thread and event loop of its own, which is idle but for these sends. A send hands the record
over with one call and returns at once; the thread passes records to the producer in the
order they were handed over (so a partition's records keep their order) and resolves each
send's future on the caller's loop once the broker acknowledges it. What waits for that
acknowledgement, and sends again on failure, is unchanged
(:class:`~streamsafe.enforcement.deliveries.Deliveries`).

Faust's own producer keeps the tables' changelog (:mod:`.changelog`). Stopping sends what was
handed over and waits for its acknowledgements (the producer's own stop); a send after that
fails with ``ProducerClosed``, and its delivery is not acknowledged, so its input is not committed.

A producer that can no longer deliver is replaced. aiokafka's producer does not recover when its
sender task stops on an unexpected error (every send after it fails), nor, being idempotent, when
the broker refuses its sequence numbers or its producer id for a partition (every later batch for
that partition is refused the same way). Resending, as ``Deliveries`` does, would then fail for
ever and the worker would hold its decisions until someone restarted it. So the next record after
either goes to a new producer (a new producer id, its sequences from zero), started from the same
factory; the old one is stopped in the background (what it still holds and can send, it sends).
Each replacement is logged with its cause and counted (``on_renewal``); the records that failed
are resent by ``Deliveries`` like any other failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)
from mode import Service

from streamsafe import clients
from streamsafe.enforcement.deliveries import retry_backoff
from streamsafe.transport.loop_thread import LoopThread

__all__ = ["SendThread", "ThreadTopic"]

log = logging.getLogger(__name__)

#: what the broker answers a producer whose sequence numbers or producer id it no longer accepts
BROKEN_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)
#: how long stopping (or a replaced producer) may take to send what was handed over before it is given up
FLUSH_TIMEOUT_S = 30.0

_Record = tuple[str, bytes, bytes, "int | None", "int | None", "asyncio.Future[Any]"]


class ThreadTopic:
    """A topic written through a :class:`SendThread`, as a
    :class:`~streamsafe.enforcement.deliveries.Sendable` (with the record's timestamp, when given)."""

    def __init__(self, sends: SendThread, name: str) -> None:
        self.sends = sends
        self.name = name

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None,
                   timestamp_ms: int | None = None) -> asyncio.Future[Any]:
        return self.sends.send(self.name, key, value, partition, timestamp_ms)


class SendThread(Service):
    """An aiokafka producer on a thread and event loop of its own (see the module doc)."""

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer], *, name: str = "publish",
                 on_renewal: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.make_producer = make_producer  # called on the thread: aiokafka binds the loop it is made on
        self.on_renewal = on_renewal  # called on the thread with each replacement's cause
        self._broken: str | None = None  # why the current producer must be replaced, once known
        self._retiring: set[asyncio.Task[None]] = set()
        self._main: asyncio.AbstractEventLoop | None = None  # the caller's
        self._thread = LoopThread(name)
        self._queue: asyncio.Queue[_Record] | None = None  # the thread's
        self._pump: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    def topic(self, name: str) -> ThreadTopic:
        """``name`` (as the broker knows it) as a sendable topic."""
        return ThreadTopic(self, name)

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None,
             timestamp_ms: int | None = None) -> asyncio.Future[Any]:
        """Hand a record over; the future (on the caller's loop) resolves with its metadata once the
        broker acknowledges it, or with the error that kept it from being sent."""
        result: asyncio.Future[Any] = (self._main or asyncio.get_running_loop()).create_future()
        queue = self._queue
        if queue is None or not self._thread.call_soon(queue.put_nowait,
                                                       (topic, key, value, partition, timestamp_ms, result)):
            result.set_exception(ProducerClosed())
        return result

    async def on_start(self) -> None:
        self._main = asyncio.get_running_loop()
        await self._thread.start(self._open)

    async def on_stop(self) -> None:
        await self._thread.stop(self._close())  # handed-over records go out, then the producer stops

    async def _open(self) -> None:  # on the thread
        self._producer = await clients.start(self.make_producer())
        queue = self._queue = asyncio.Queue()
        self._pump = asyncio.get_running_loop().create_task(self._send_forever(queue))

    async def _send_forever(self, queue: asyncio.Queue[_Record]) -> None:
        while True:  # one at a time, in the order handed over
            topic, key, value, partition, timestamp_ms, result = await queue.get()
            try:
                producer = self._producer
                assert producer is not None
                if self._broken is not None or _sender_stopped(producer):
                    producer = await self._renewed(producer)
                sent = await producer.send(topic, value, key=key, partition=partition, timestamp_ms=timestamp_ms)
            except asyncio.CancelledError:
                self._settle(result, ProducerClosed())
                raise
            except Exception as exc:  # refused before it was sent (too large, unknown topic...): the caller decides
                self._settle(result, exc)
            else:
                sent.add_done_callback(functools.partial(self._settle_with, result, producer))
            finally:
                queue.task_done()

    async def _renewed(self, producer: AIOKafkaProducer) -> AIOKafkaProducer:  # on the thread
        """A new producer in place of ``producer``, which can no longer deliver (see the module doc)."""
        cause = self._broken or "SenderStopped"  # (aiokafka logged why its sender stopped)
        log.error("the publishing producer can no longer deliver (%s); sending through a new one", cause)
        if self.on_renewal is not None:
            self.on_renewal(cause)
        self._broken = None
        retiring = asyncio.get_running_loop().create_task(_retire(producer))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        attempt = 0
        while True:
            try:
                self._producer = await clients.start(self.make_producer())
                return self._producer
            except Exception as exc:  # a broker that is down: the records wait, Deliveries counts the failures
                wait = retry_backoff(attempt)
                log.warning("a new publishing producer could not start (%s); trying again in %.1f s",
                            type(exc).__name__, wait)
                attempt += 1
                await asyncio.sleep(wait)

    def _settle_with(self, result: asyncio.Future[Any], producer: AIOKafkaProducer,
                     done: asyncio.Future[Any]) -> None:  # on the thread
        if done.cancelled():
            self._settle(result, ProducerClosed())
            return
        exc = done.exception()
        if isinstance(exc, BROKEN_PRODUCER) and producer is self._producer and self._broken is None:
            self._broken = type(exc).__name__
        self._settle(result, exc if exc is not None else done.result())

    def _settle(self, result: asyncio.Future[Any], outcome: Any) -> None:  # on the thread
        main = self._main
        assert main is not None
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            main.call_soon_threadsafe(_resolve, result, outcome)

    async def _close(self) -> None:  # on the thread
        queue, pump = self._queue, self._pump
        if queue is not None and pump is not None and not pump.done():
            with contextlib.suppress(TimeoutError):  # every record handed over so far is with the producer
                await asyncio.wait_for(queue.join(), FLUSH_TIMEOUT_S)  # (unless no producer can start)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._queue = None
        if self._producer is not None:
            await self._producer.stop()  # sends what it holds and waits for the acknowledgements
        if self._retiring:
            await asyncio.wait(set(self._retiring))
        if queue is not None:
            while not queue.empty():  # handed over while stopping: never sent
                self._settle(queue.get_nowait()[5], ProducerClosed())


def _resolve(result: asyncio.Future[Any], outcome: Any) -> None:  # on the caller's loop
    if result.done():
        return
    if isinstance(outcome, BaseException):
        result.set_exception(outcome)
    else:
        result.set_result(outcome)


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    """Whether ``producer``'s sender task has ended: after that aiokafka fails every send.
    (aiokafka has no public call for it; a change there degrades to "never stopped".)"""
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return isinstance(task, asyncio.Future) and task.done()


async def _retire(producer: AIOKafkaProducer) -> None:
    """Stop a replaced producer: it sends what it still holds, within :data:`FLUSH_TIMEOUT_S`."""
    try:
        await asyncio.wait_for(producer.stop(), FLUSH_TIMEOUT_S)
    except Exception as exc:  # given up: what it held failed or timed out, and Deliveries sends it again
        log.warning("a replaced publishing producer did not stop cleanly (%s)", type(exc).__name__)
