"""Deliveries: records sent at once, their acknowledgements awaited in the background.

A decision is sent the moment it is made; the agent goes on to the next record
while the broker acknowledges it. Each :meth:`Deliveries.send` hands its sends'
futures to a task of their own, which waits for every acknowledgement and sends
again, after a back-off, whatever failed or timed out -- for as long as it takes.
At-least-once holds because offsets are committed only after :meth:`Deliveries.settled`:
the worker's Faust consumer (``transport/consumer.py``) and the frame pre-filter both
wait for every delivery started before a commit to be acknowledged first. Meanwhile
:class:`~streamsafe.observability.liveness.DeliveryHealth` says deliveries are failing,
``/readyz`` turns 503 and the stall alert fires.

A resend after a timeout may duplicate a record (decisions carry deterministic ids:
consumers treat the copy as the same decision), and a record resent after a failure
may land after records sent later (consumers order a stream's decisions by their
``decided_at_ms``, not by offset). A record the broker refuses as too large is sent
in its smaller form if it has one (a dead letter without the original bytes), else
logged and counted as a delivery failure: StreamSafe's own records are small and
bounded, so only a topic configured below them can do that.

At most ``max_in_flight`` deliveries wait at once; the next :meth:`send` waits for
room, so a broker that stops acknowledging stops the agents instead of filling memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError

from streamsafe.events.dead_letter import DeadLetter
from streamsafe.observability.liveness import DeliveryHealth

__all__ = ["RETRY_BACKOFF_S", "TOO_LARGE", "Deliveries", "ProducerTopic", "Send", "Sendable", "dead_letter_send",
           "retry_backoff"]

log = logging.getLogger(__name__)

#: waits between resends of a delivery that failed (the last one repeats)
RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


def retry_backoff(attempt: int) -> float:
    """The wait before retry number ``attempt`` (from 0) of :data:`RETRY_BACKOFF_S`."""
    return RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]


class Sendable(Protocol):
    """What a delivery needs of a topic (a Faust topic of raw bytes is one): ``send``
    returns a future resolved when the broker acknowledges the record; ``options`` are
    the topic's own (a :class:`ProducerTopic` takes the record's ``timestamp_ms``)."""

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None, **options: Any) -> Any: ...


class ProducerTopic:
    """A topic written through a raw aiokafka producer, as a :class:`Sendable` (with the
    record's timestamp, when the sender gives one)."""

    def __init__(self, producer: Any, name: str) -> None:
        self.producer = producer
        self.name = name

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None,
                   timestamp_ms: int | None = None) -> Any:
        return await self.producer.send(self.name, value, key=key, partition=partition, timestamp_ms=timestamp_ms)


@dataclass(frozen=True, slots=True)
class Send:
    """One record to deliver."""

    topic: Sendable
    key: bytes
    value: bytes
    partition: int | None = None
    smaller: Callable[[], bytes] | None = None  # what to send instead if ``value`` is refused as too large
    options: Mapping[str, Any] = field(default_factory=dict)  # the topic's own send options


def dead_letter_send(topic: Sendable, rejected: DeadLetter) -> Send:
    """A dead letter to deliver, keyed by its source topic; if the broker refuses it as too
    large it goes again without the original bytes (their size and SHA-256 stay)."""
    return Send(topic, rejected.source.topic.encode(), rejected.encode(),
                smaller=functools.partial(rejected.encode, keep_bytes=0))


def _too_large(exc: BaseException) -> bool:
    return isinstance(exc, TOO_LARGE) or isinstance(exc.__cause__, TOO_LARGE)


def _shrunk(send: Send) -> Send | None:
    """The smaller form of a record refused as too large, if it has one."""
    if send.smaller is None:
        return None
    log.error("a dead letter was too large; sent without the original bytes")
    return replace(send, value=send.smaller(), smaller=None)


class Deliveries:
    """Sends now, acknowledges in the background (see the module doc)."""

    def __init__(self, *, timeout_s: float = 10.0, health: DeliveryHealth | None = None,
                 max_in_flight: int = 1000) -> None:
        self.timeout_s = timeout_s
        self.health = health if health is not None else DeliveryHealth()
        self.max_in_flight = max_in_flight
        self._in_flight: dict[asyncio.Task[None], float] = {}  # -> when it was sent (monotonic)
        self._failing: set[asyncio.Task[None] | None] = set()  # deliveries whose last attempt failed

    @property
    def in_flight(self) -> int:
        """Deliveries not acknowledged yet."""
        return len(self._in_flight)

    def oldest(self) -> float | None:
        """When (monotonic) the oldest delivery not acknowledged yet was sent, if any."""
        return min(self._in_flight.values(), default=None)

    async def send(self, sends: Sequence[Send]) -> None:
        """Send all now, in order; returns once they are handed to the producer, not acknowledged.
        A record too large for the producer with no smaller form raises here, as sending it would."""
        while len(self._in_flight) >= self.max_in_flight:
            await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
        sent_at = time.monotonic()
        started = await self._send_all(sends)
        task = asyncio.get_running_loop().create_task(self._acknowledged(started))
        self._in_flight[task] = sent_at
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    async def settled(self) -> None:
        """Returns once every delivery started before the call is acknowledged."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _send_all(self, sends: Sequence[Send]) -> list[tuple[Send, Any]]:
        """Each send with its future, or with the error that kept it from being sent."""
        started: list[tuple[Send, Any]] = []
        for send in sends:
            while True:
                try:
                    sending = send.topic.send(key=send.key, value=send.value, partition=send.partition,
                                              **send.options)
                    # asyncio.timeout, not wait_for: no task and no trip round the event loop per
                    # send (a send that does not wait for metadata or buffer room never suspends)
                    async with asyncio.timeout(self.timeout_s):
                        future = await sending
                except (ProducerSendError, KafkaError, TimeoutError) as exc:  # Faust wraps what aiokafka raised
                    if _too_large(exc):
                        smaller = _shrunk(send)
                        if smaller is None:
                            if isinstance(exc, TOO_LARGE):
                                raise
                            raise exc.__cause__ from exc  # type: ignore[misc]
                        send = smaller
                        continue
                    started.append((send, exc))
                else:
                    started.append((send, future))
                break
        return started

    async def _acknowledged(self, started: list[tuple[Send, Any]]) -> None:
        me = asyncio.current_task()
        try:
            await self._until_acknowledged(started, me)
        except Exception:  # nothing a resend can fix (it would have raised at the first send): say so
            self.health.failed("undeliverable", time.monotonic())
            log.exception("%d records could not be delivered", len(started))
        finally:
            self._failing.discard(me)
        if not self._failing:  # healthy again only once no delivery is failing
            self.health.delivered()

    async def _until_acknowledged(self, started: list[tuple[Send, Any]], me: asyncio.Task[Any] | None) -> None:
        attempt = 0
        while True:
            failed: list[tuple[Send, BaseException]] = []
            for send, future in started:
                if isinstance(future, BaseException):
                    failed.append((send, future))
                    continue
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await asyncio.shield(future)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # KafkaError, a timeout, anything: sent again, never dropped
                    if _too_large(exc):
                        smaller = _shrunk(send)
                        if smaller is None:  # counted as a delivery failure, and logged
                            self.health.failed(type(exc).__name__, time.monotonic())
                            log.error("the broker refused a record as too large (%s); it cannot be delivered",
                                      type(exc).__name__)
                            continue
                        failed.append((smaller, exc))
                        continue
                    failed.append((send, exc))
            if not failed:
                return
            problem = type(failed[0][1]).__name__
            if not any(_too_large(exc) for _, exc in failed):
                self._failing.add(me)
                self.health.failed(problem, time.monotonic())
                wait = retry_backoff(attempt)
                log.error("%d of %d deliveries failed (%s); sending them again in %.1f s", len(failed),
                          len(started), problem, wait)
                attempt += 1
                await asyncio.sleep(wait)
            started = await self._send_all([send for send, _ in failed])
