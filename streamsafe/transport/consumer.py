"""The consumers of StreamSafe's transport: a safe seek for every partition, and
the task-free delivery path (see the package docstring for why)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import TopicPartition
from faust.transport import consumer as _stock_consumer
from faust.transport.drivers import aiokafka as _aiokafka_driver
from faust.types import TP
from mode import Service, ServiceT

from streamsafe.transport.handoff import eager_start

__all__ = ["Consumer", "DeliveryStats", "SafeSeekConsumer", "SafeSeekConsumerThread", "settle_before_commit"]

log = logging.getLogger(__name__)

#: how long a fetch may wait at the broker for records (Faust's own: 1500 ms)
FETCH_MAX_WAIT_MS = 10
#: how long records fetched and not yet consumed may hold back the next fetch (aiokafka's: 100 ms)
PREFETCH_BACKOFF_S = 0.005
#: the app attribute naming what every offset commit awaits first (see :func:`settle_before_commit`)
SETTLE_BEFORE_COMMIT = "streamsafe_settle_before_commit"


def settle_before_commit(app: Any, settle: Callable[[], Awaitable[None]]) -> None:
    """Make every offset commit of ``app``'s consumer await ``settle()`` first (StreamSafe's
    publisher: the deliveries of records already handled, acknowledged)."""
    setattr(app, SETTLE_BEFORE_COMMIT, settle)


class SafeSeekConsumerThread(_aiokafka_driver.AIOKafkaConsumerThread):
    """The aiokafka driver's consumer thread, seeking *every* assigned partition
    (and fetching with a short broker-side wait, :data:`FETCH_MAX_WAIT_MS`, and a short
    prefetch backoff, :data:`PREFETCH_BACKOFF_S`: see :meth:`on_start`).

    Faust ends each recovery (and any fetch made while flow is stopped) with
    ``seek_to_committed``, to re-read whatever it fetched and dropped while
    flow was suspended. aiokafka's ``seek_to_committed`` only seeks partitions
    whose committed offset is > 0; a partition this group has never committed
    keeps the position those dropped fetches advanced it to, and the records
    in between are never delivered. Measured through a real broker: a worker
    started while producers were sending lost about two thirds of the frames
    of its first second on never-committed partitions, every time.

    Here a partition without a committed offset is reset by the group's
    ``auto_offset_reset`` policy (earliest, for StreamSafe: nothing this group
    processed was committed, so at-least-once means reading it again), and a
    committed offset of 0 is sought to exactly.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500. aiokafka keeps one fetch in flight
        # per broker and leaves out partitions that still hold unconsumed records, so
        # a fetch naming only idle partitions (timers, verdicts) parks for 1.5 s while
        # frames pile up on the others. Read by the fetcher aiokafka builds in start().
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka's consumer no longer has _fetch_max_wait_ms; update StreamSafe's transport")
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # aiokafka sends no fetch to a broker while any partition on it holds records
        # fetched and not yet consumed, for up to its prefetch backoff (100 ms). Faust
        # keeps its tables' changelog partitions assigned after recovery and never
        # consumes what is fetched from them, and every table write adds some: so each
        # fetch that brought changelog records held the next one back 100 ms, and a
        # forwarded match waited up to that long to be fetched (measured: p99 of the
        # frame-matches hop 65-230 ms at 3,600 msgs/s; 35 ms with 5 ms).
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_prefetch_backoff"):
            raise RuntimeError("aiokafka's fetcher no longer has _prefetch_backoff; update StreamSafe's transport")
        fetcher._prefetch_backoff = PREFETCH_BACKOFF_S

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's livelock check, skipped for a partition aiokafka holds no position for yet.
        Faust reads ``position`` of every assigned partition; right after a rebalance (a
        worker killed, another joining) a partition can be assigned before it is sought, and
        aiokafka's ``position`` then fails an assertion that ended the worker (seen in the
        scale-out bench after a ``kill -9``)."""
        try:
            consumer = self._ensure_consumer()
            assignment = consumer._fetcher._subscriptions.subscription.assignment
            state = assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment else None
        except (AttributeError, AssertionError):  # no subscription, or none yet
            return None
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_every_partition)

    async def _seek_every_partition(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        uncommitted = [tp for tp, offset in committed.items() if offset is None]
        if uncommitted:
            if self.app.conf.consumer_auto_offset_reset == "latest":
                await consumer.seek_to_end(*uncommitted)
            else:
                await consumer.seek_to_beginning(*uncommitted)
            log.debug("reset %d partitions without a committed offset", len(uncommitted))
        return committed


class SafeSeekConsumer(_aiokafka_driver.Consumer):
    """The aiokafka driver's consumer with a seek that loses nothing; delivery is
    Faust's stock path.

    At the end of a recovery Faust (``Recovery._resume_streams``, 0.15.3) resumes
    the stream partitions while the consumer's flow is already running (it was
    resumed to read the changelogs), *then* seeks each partition to its committed
    offset (one request per partition: tens of milliseconds), *then* resumes flow
    control, which clears every stream queue. Records fetched and queued in
    between are cleared, and those fetched after their partition's seek are not
    read again; the drain loop also drops re-read records below a read offset the
    seek has not reset yet. Measured through a real broker: a worker restarted
    while producers were sending lost tens of records per partition.

    So the flow is stopped before seeking. Nothing is delivered until the caller
    resumes flow (every caller in Faust does, right after clearing the queues),
    everything queued before has an offset at or past the committed one and is
    read again, and :class:`SafeSeekConsumerThread` seeks every partition.
    """

    def _new_consumer_thread(self) -> _aiokafka_driver.AIOKafkaConsumerThread:
        return SafeSeekConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        self.stop_flow()
        await super().perform_seek()

    async def _commit_offsets(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        # Records an agent handled may still have deliveries awaiting the broker's
        # acknowledgement (they are acknowledged in the background): their offsets are
        # committed only once those are acknowledged.
        settle = getattr(self.app, SETTLE_BEFORE_COMMIT, None)
        if settle is not None:
            await settle()
        return cast(bool, await super()._commit_offsets(offsets, start_new_transaction))

    def committed_offsets(self) -> Mapping[TP, int | None]:
        """The offsets this worker last committed, per partition (None: never committed).
        Faust keeps them in a private attribute; read here, behind the transport's pin."""
        return dict(getattr(self, "_committed_offset", {}))



@dataclass
class DeliveryStats:
    """How deliveries went, per consumer (cheap counters; read them in tests and benchmarks)."""

    #: finished in the synchronous first step: no task at all
    eager: int = 0
    #: suspended in the first step and handed to the ``wait_first`` race
    handed_off: int = 0
    #: handed off, then interrupted (rebalance, stop) before it finished, as stock
    #: Faust interrupts a blocked delivery; the message is read again after the seek
    interrupted: int = 0
    #: flow was suspended (rebalance): the stock path was taken
    stock: int = 0


class Consumer(SafeSeekConsumer):
    """:class:`SafeSeekConsumer` with the task-free delivery fast path."""

    stats: DeliveryStats

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = DeliveryStats()

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # A copy of faust-streaming 0.15.3 faust.transport.consumer.Consumer.
        # _drain_messages (pinned by check_faust_pin); only the delivery
        # statement is changed, between the "fast path" markers.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = _stock_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        # fast path: localized like the rest of this loop
        loop = self.loop
        suspend_flow = self.suspend_flow
        flow_suspended = suspend_flow.is_set
        stats = self.stats

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))  # type: ignore[type-arg]

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:  # noqa: SIM102 (verbatim upstream)
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # ---- fast path (the only change) ----
                            if flow_suspended():
                                # Rebalancing: exactly the stock statement.
                                stats.stock += 1
                                await self.wait_first(callback(message), suspend_flow.wait())
                            else:
                                blocked = eager_start(callback(message), loop=loop)
                                if blocked is None:
                                    stats.eager += 1
                                else:
                                    # Suspended mid-delivery: race it against a
                                    # rebalance as stock Faust races the whole
                                    # delivery (wait_first cancels the loser).
                                    stats.handed_off += 1
                                    await self.wait_first(blocked, suspend_flow.wait())
                                    if not blocked.done():
                                        # lost the race; wait_first cancelled it
                                        stats.interrupted += 1
                            # ---- end of fast path ----
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
