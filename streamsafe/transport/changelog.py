"""Table changelog records, sent in bursts with the last value per key, never holding up agents.

A Faust table write (``table[key] = value``) is synchronous; its changelog record is put on
the producer's buffer (``faust.transport.producer.ProducerBuffer``, faust-streaming 0.15.3),
which one background task sends a record at a time. Measured on a 2-core worker under the
realistic mix, that task fell behind (thousands of records), and once the buffer held more
than 100 records the conductor stopped delivering to *every* agent until it drained
(``wait_until_ebb``): decisions waited seconds behind state writes. Its ``flush`` also returns
after 0.1 s without a send even when records are still queued, so an offset commit could pass
changelog records not yet sent.

:class:`ChangelogBuffer` replaces it:

- **Coalesced.** A changelog is compacted: only the last value per key is ever read back,
  and each of StreamSafe's records is the key's whole state. A table's changelog records
  (those whose callback is the table's ``_on_changelog_sent``) are kept per (topic,
  partition, key); a newer write replaces the queued one. Other records (nothing in
  StreamSafe sends them this way) are never merged.
- **Sent in bursts.** The first record queued starts a short linger (:data:`LINGER_S`, or the
  worker's ``STREAMSAFE_CHANGELOG_LINGER_S``); then
  every queued record is handed to the producer in one pass, in slices of
  :data:`SLICE` with a loop turn between them, so aiokafka gets full batches and decisions
  sent meanwhile are not held up.
- **No stall.** The conductor waits only if the queue grows past :data:`MAX_QUEUED` distinct
  keys (a worker far behind its broker), and then for a full flush, not a timeout.
- **An honest flush.** :meth:`flush` sends every record queued before it was called (and
  waits for those sent again, below), whatever arrives meanwhile; the producer's flush then
  awaits the broker's acknowledgements. Faust flushes the producer before every offset commit
  and on rebalance, so no offset is committed before the state writes of its records are
  acknowledged (at-least-once state, as before, without the gap).

A superseded record's future is resolved with the metadata of the record that replaced it
(same topic, partition and key), so nothing awaiting one waits forever. A record the producer
refuses with a retriable error (no leader, a timeout; Faust wraps them in
``ProducerSendError``) is queued again and sent after :data:`RETRY_S`, so a commit waits for it
rather than passing it; so is every record of a burst that was cancelled before it reached the
producer. One refused for good (larger than the broker takes) fails its futures and is logged,
without its key or value; the key's next write carries its whole state again. A send that fails
after aiokafka accepted it is reported to its future, as in Faust.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage
from mode import Service

__all__ = ["LINGER_S", "MAX_QUEUED", "RETRY_S", "SLICE", "STOP_FLUSH_S", "ChangelogBuffer", "linger_changelog"]

log = logging.getLogger(__name__)

#: how long the first queued record waits for others before a burst is sent
LINGER_S = 0.01
#: records handed to the producer between two turns of the event loop
SLICE = 256
#: distinct queued keys beyond which the conductor waits for a flush
MAX_QUEUED = 20_000
#: pause before records the producer refused with a retriable error are sent again
RETRY_S = 1.0
#: how long a stopping worker tries to send what is queued
STOP_FLUSH_S = 10.0

_LINGER_ATTR = "_streamsafe_changelog_linger_s"


def linger_changelog(app: Any, seconds: float) -> None:
    """Set how long ``app``'s changelog records wait for others before a burst (the worker's setting)."""
    setattr(app, _LINGER_ATTR, seconds)


def _is_changelog(fut: FutureMessage) -> bool:
    return getattr(fut.message.callback, "__name__", None) == "_on_changelog_sent"


class ChangelogBuffer(ProducerBuffer):
    """Faust's producer buffer, coalescing changelog records and sending them in bursts."""

    max_messages = MAX_QUEUED

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queued: dict[Any, FutureMessage] = {}
        self.superseded: dict[Any, list[FutureMessage]] = {}
        #: per queued slot, the number of the first put it carries (what a flush waits for)
        self.first_put: dict[Any, int] = {}
        self._wake = asyncio.Event()
        self._sending: asyncio.Future[None] | None = None
        #: records put, records merged into a later one, bursts sent (read by tests and benchmarks)
        self.put_count = self.merged_count = self.bursts = 0

    def put(self, fut: FutureMessage) -> None:
        self.put_count += 1
        message = fut.message
        slot: Any = (id(message.channel), message.partition, message.key) if _is_changelog(fut) else self.put_count
        earlier = self.queued.pop(slot, None)
        if earlier is not None:
            self.merged_count += 1
            self.superseded.setdefault(slot, []).append(earlier)
        self.queued[slot] = fut
        self.first_put.setdefault(slot, self.put_count)
        self._wake.set()

    @property
    def size(self) -> int:
        return len(self.queued)

    async def flush(self) -> None:
        """Send every record put before this call (and any of them queued again); then return."""
        target = self.put_count
        while True:
            if self._sending is not None:
                await asyncio.shield(self._sending)
            elif any(first <= target for first in self.first_put.values()):
                await self._send_queued()
            else:
                return

    async def on_stop(self) -> None:
        try:  # a worker stopping while the broker is away must still stop
            await asyncio.wait_for(self.flush(), STOP_FLUSH_S)
        except TimeoutError:
            log.warning("stopping with %d changelog records unsent: their records' offsets were not committed, "
                        "so they are processed again", self.size)

    async def flush_atmost(self, max_messages: int | None) -> int:
        before = self.size
        await self.flush()
        return before

    async def wait_until_ebb(self) -> None:
        if self.size > self.max_messages:
            log.warning("changelog buffer holds %d keys: agents wait for it to be sent", self.size)
            await self.flush()

    @Service.task
    async def _handle_pending(self) -> None:  # in place of the stock one-record-at-a-time task
        while not self.should_stop:
            await self._wake.wait()
            await asyncio.sleep(getattr(self.app, _LINGER_ATTR, LINGER_S))
            await self.flush()

    async def _send_queued(self) -> None:
        self._wake.clear()
        queued, self.queued = self.queued, {}
        superseded, self.superseded = self.superseded, {}
        firsts, self.first_put = self.first_put, {}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sending = done
        failed: list[Exception] = []
        retried = 0
        try:
            self.bursts += 1
            for i, slot in enumerate(list(queued)):
                if i and i % SLICE == 0:
                    await asyncio.sleep(0)
                fut = queued[slot]
                try:
                    sent = await fut.message.channel.publish_message(fut, wait=False)
                except Exception as exc:  # one bad record must not stop the table's others
                    del queued[slot]
                    if _retriable(exc):
                        retried += 1
                        self._requeue(slot, fut, superseded.pop(slot, []), firsts[slot])
                        continue
                    failed.append(exc)
                    for unsent in (fut, *superseded.pop(slot, ())):
                        if not unsent.done():
                            unsent.set_exception(exc)
                    continue
                del queued[slot]
                earlier = superseded.pop(slot, None)
                if earlier:
                    sent.add_done_callback(lambda f, earlier=earlier: _resolve(f, earlier))
                self.message_sent.set()
            if retried:  # the broker is unreachable or has no leader: again after a pause, never dropped
                log.warning("%d changelog records not accepted by the producer; sent again in %.1f s",
                            retried, RETRY_S)
                await asyncio.sleep(RETRY_S)
        finally:
            for slot, fut in queued.items():  # cancelled before these reached the producer: kept
                self._requeue(slot, fut, superseded.pop(slot, []), firsts[slot])
            self._sending = None
            done.set_result(None)
            if failed:  # one line per burst, without keys or values
                log.error("%d changelog records could not be sent (the keys' next writes carry their state): %r",
                          len(failed), failed[0])

    def _requeue(self, slot: Any, fut: FutureMessage, earlier: list[FutureMessage], first: int) -> None:
        """Put a record back in the queue, unless a newer write of its key is there already."""
        if slot in self.queued:
            self.superseded.setdefault(slot, [])[:0] = [*earlier, fut]
        else:
            self.queued[slot] = fut
            if earlier:
                self.superseded[slot] = list(earlier)
        self.first_put[slot] = min(first, self.first_put.get(slot, first))
        self._wake.set()


def _retriable(exc: BaseException) -> bool:
    """A failure the same record may not meet again: a timeout, or an error Kafka marks retriable
    (Faust's producer raises them as the cause of a ``ProducerSendError``)."""
    if isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, TimeoutError | KafkaTimeoutError) or bool(getattr(exc, "retriable", False))


def _resolve(sent: asyncio.Future[Any], earlier: list[FutureMessage]) -> None:
    for fut in earlier:
        if fut.done():
            continue
        if sent.cancelled():
            fut.cancel()
        elif sent.exception() is not None:
            fut.set_exception(sent.exception())  # type: ignore[arg-type]
        else:
            fut.set_result(sent.result())
