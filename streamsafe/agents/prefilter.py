"""The frame pre-filter: frames screened against the banks outside Faust.

Nearly every frame matches nothing, and a frame that matches nothing changes no
state. So with ``STREAMSAFE_PREFILTER=true`` a raw aiokafka group consumer (its own
group, ``<app id>-prefilter``, fetching on a thread of its own:
:class:`~streamsafe.agents.fetch_thread.FetchThread`) reads ``livestream.frame-hashes`` in batches, screens
them (:class:`~streamsafe.pipeline.screen.FrameScreen`: decode, validate, match; a
slice's PDQ hashes in one index call) and forwards only the messages with a match to
``streamsafe.frame-matches``, as what it found: the matched frames, their matches and
the source record's coordinates, on the same partition (the stream's state lives
there) with the source record's timestamp. The Faust agent reads that topic instead
and steps on the matches without decoding or matching the frames again; its
decisions, decision ids included, are those the agent path makes from the same input.

Where this worker's agents own the match's partition, the pre-filter also steps on it at
once (:class:`~streamsafe.agents.inprocess.InProcessMatches`), so its decision does not
wait for the forward's round trip; the forward stays the durable copy.

Latency: a batch is screened in slices cut by a time budget (:data:`~streamsafe.budget.BATCH_BUDGET_S`: the
slice sizes follow the measured cost per frame, :class:`SliceSizer`), and each
slice's matches are sent as soon as it is screened, the event loop free in between,
so a match never waits for hundreds of unrelated frames -- nor do the agents'
decisions, which wait for the batch in hand only so long
(:func:`~streamsafe.transport.stream_yield.defer_agents_to`). Forwards, dead letters and in-process
decisions go out through the worker's publishing thread (:mod:`~streamsafe.transport.send_thread`), not a
producer waiting for the worker's loop; acknowledgements are awaited in the background
(:class:`~streamsafe.enforcement.deliveries.Deliveries`: resent until acknowledged).

Guarantees: at least once. Offsets are committed every ``commit_interval_s`` (and
when idle, on revocation and on stop), and only after every forward and dead letter
sent before is acknowledged by the broker (acks=all); a commit refused by a
rebalance only means the next owner screens those frames again (forwarding a match
twice is harmless: decisions are idempotent). Bad input is dead-lettered here, with
the frame topic's coordinates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError
from mode import Service

from streamsafe import clients
from streamsafe.agents.fetch_thread import FetchThread
from streamsafe.agents.inprocess import InProcessMatches
from streamsafe.agents.records import RecordHandler
from streamsafe.budget import BATCH_BUDGET_S
from streamsafe.enforcement.deliveries import Deliveries, ProducerTopic, Send, Sendable, dead_letter_send
from streamsafe.events.contract import DEAD_LETTER, FRAME_HASHES, FRAME_MATCHES
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.encode import encode_frame_matches
from streamsafe.observability.liveness import DeliveryHealth
from streamsafe.observability.metrics import lag
from streamsafe.pipeline.outcome import Outcome
from streamsafe.settings import Settings
from streamsafe.transport.send_thread import SendThread

__all__ = ["BATCH_BUDGET_S", "FRAME_FETCH_MIN_BYTES", "FRAME_FETCH_WAIT_MS", "FramePreFilter", "SliceSizer"]

log = logging.getLogger(__name__)

#: How long the broker may hold a fetch of frames for more to arrive (ms), and how much ends
#: the wait at once. In live traffic a fetch answered at its first record brought a handful of
#: frames (~250 fetches a second at 3,300 frames/s), and each fetch costs the fetch thread CPU
#: and GIL time the worker's loop then waits for; a backlog is there at once, so a drain's
#: fetches are full-sized either way. Four alternating pairs at 4,700 msgs/s of the mix
#: (``bench/latency.py``): probe p99 36.0 / 38.6 / 33.2 / 34.8 ms against 38.9 / 49.4 / 35.1 /
#: 36.2 answered at once, p50 unchanged, ~4 µs less CPU per message.
FRAME_FETCH_WAIT_MS = 5
FRAME_FETCH_MIN_BYTES = 64 * 1024


class SliceSizer:
    """How many frames fit in a slice's time budget, from the cost per frame measured on
    the slices before (an exponentially weighted mean)."""

    def __init__(self, budget_s: float, *, first: int = 32, most: int = 500) -> None:
        self.budget_s = budget_s
        self.first = first
        self.most = most
        self.cost_s: float | None = None  # per frame

    def size(self) -> int:
        if self.cost_s is None:
            return min(self.first, self.most)
        if self.cost_s <= 0:  # slices too quick for the clock to see
            return self.most
        return max(1, min(self.most, int(self.budget_s / self.cost_s)))

    def observe(self, frames: int, elapsed_s: float) -> None:
        if frames <= 0:
            return
        cost = elapsed_s / frames
        self.cost_s = cost if self.cost_s is None else 0.8 * self.cost_s + 0.2 * cost


class FramePreFilter(Service):
    """Screens ``livestream.frame-hashes`` and forwards matches (see the module doc)."""

    def __init__(self, settings: Settings, handler: RecordHandler, ready: asyncio.Event, *,
                 max_batch: int = 500, budget_s: float = BATCH_BUDGET_S, health: DeliveryHealth | None = None,
                 clock: Callable[[], float] = time.monotonic, in_process: InProcessMatches | None = None,
                 sends: SendThread | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.handler = handler
        self.ready = ready
        self.max_batch = max_batch
        self.sizer = SliceSizer(budget_s, most=max_batch)
        self.clock = clock
        self.in_process = in_process  # steps on a match here when this worker's agents own its partition
        self.sends = sends  # the worker's publishing thread (else a producer of its own, on the worker's loop)
        self.group = settings.prefilter_group
        self.source = settings.topic_name(FRAME_HASHES)
        self.target = settings.topic_name(FRAME_MATCHES)
        self.dead_letters = settings.topic_name(DEAD_LETTER)
        self.batch_lock = asyncio.Lock()
        self.commit_lock = asyncio.Lock()
        self._committing: asyncio.Future[None] | None = None
        self.batch_started: float | None = None  # monotonic, while a batch is in hand
        self.batches = 0  # taken in hand so far
        self._no_batch = asyncio.Event()  # set while no batch is in hand
        self._no_batch.set()
        self.running = False  # the screening loop is alive
        self.timeout_s = settings.delivery_timeout_s
        self.commit_interval_s = settings.commit_interval_s
        self.deliveries = Deliveries(timeout_s=self.timeout_s, health=health)
        self.health = self.deliveries.health
        self.screened = 0
        self.forwarded = 0
        self.slices = 0
        self.screened_to: dict[TopicPartition, int] = {}  # next offset, screened and sent
        self.committed: dict[TopicPartition, int] = {}
        self.last_commit = 0.0
        self._consumer: FetchThread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._forward_to: Sendable | None = None
        self._dead_letter_to: Sendable | None = None
    async def on_start(self) -> None:
        if self.sends is not None:
            self._forward_to, self._dead_letter_to = self.sends.topic(self.target), self.sends.topic(self.dead_letters)
        else:
            self._producer = clients.producer(self.settings, linger_ms=1)
            await self._producer.start()
            self._forward_to = ProducerTopic(self._producer, self.target)
            self._dead_letter_to = ProducerTopic(self._producer, self.dead_letters)
        settings = self.settings
        self._consumer = FetchThread(
            lambda: clients.consumer(
                settings, group_id=self.group, max_poll_records=self.max_batch,
                session_timeout_ms=int(settings.session_timeout_s * 1000),
                rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
                heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
                fetch_max_wait_ms=FRAME_FETCH_WAIT_MS, fetch_min_bytes=FRAME_FETCH_MIN_BYTES,
                group_instance_id=settings.prefilter_instance_id),
            self.source, self._commit_on_revoke, max_records=self.max_batch)
        await self._consumer.start()
        log.info("frame pre-filter screening %s for group %s", self.source, self.group)

    async def _commit_on_revoke(self) -> None:
        # the batch in hand finishes, then what was screened is committed once acknowledged
        async with self.batch_lock:
            await self.commit()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self.batch_lock:
                try:  # what was screened, once acknowledged; if the broker is gone, screened again later
                    await asyncio.wait_for(self.commit(), self.timeout_s)
                except (TimeoutError, KafkaError) as exc:
                    log.warning("pre-filter could not commit on stop (%s); those frames will be screened again",
                                type(exc).__name__)
                await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    @Service.task
    async def _screen_forever(self) -> None:
        await self.ready.wait()  # match with the banks and policies in force
        consumer = self._consumer
        assert consumer is not None
        self.running = True
        try:
            while not self.should_stop:
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                except ConsumerStoppedError:
                    return  # the worker is stopping
                if batch:
                    async with self.batch_lock:
                        await self.screen_batch(batch)
                if self.commit_due(idle=not batch):
                    self.commit_in_background()
        finally:
            self.running = False

    def lag(self) -> dict[TopicPartition, int]:
        """Frames not yet screened and committed, per assigned partition."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lags[tp] = lag(highwater, self.committed.get(tp))
        return lags

    def screening(self) -> bool:
        """Whether a batch of frames is in hand (agents defer to it: see
        :func:`~streamsafe.transport.stream_yield.defer_agents_to`)."""
        return self.batch_started is not None

    def waiting(self) -> bool:
        """Whether frames were fetched and not yet taken in hand (agents give the loop back
        at once: see :func:`~streamsafe.transport.stream_yield.defer_agents_to`)."""
        consumer = self._consumer
        return self.running and consumer is not None and consumer.waiting()

    async def until_screened(self, at_most_s: float) -> None:
        """Return once the batch in hand is screened (at once if none is), or after ``at_most_s``."""
        if self._no_batch.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._no_batch.wait()

    def oldest_in_hand(self) -> float | None:
        """When (monotonic) the batch in hand, or the oldest forward not yet acknowledged, started."""
        times = [t for t in (self.batch_started, self.deliveries.oldest()) if t is not None]
        return min(times, default=None)

    async def screen_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Screen a batch slice by slice (see the module doc), sending each slice's matches
        and dead letters as soon as it is screened."""
        every = [r for records in batch.values() for r in records]
        self.batch_started = time.monotonic()
        self.batches += 1
        self._no_batch.clear()
        try:
            self.handler.note_arrival(FRAME_HASHES)
            start = 0
            while start < len(every):
                piece = every[start:start + self.sizer.size()]
                began = self.clock()
                await self._screen_slice(piece)
                self.sizer.observe(len(piece), self.clock() - began)
                self.slices += 1
                start += len(piece)
                await asyncio.sleep(0)  # the slice's sends go out; agents and timers run
            # committed (under the batch lock, as is this) once those sends are acknowledged
            self.screened_to.update((tp, records[-1].offset + 1) for tp, records in batch.items() if records)
        finally:
            self.batch_started = None
            self._no_batch.set()

    async def _screen_slice(self, records: list[ConsumerRecord]) -> None:
        handler = self.handler
        sources = [SourceRecord(r.topic, r.partition, r.offset, r.timestamp) for r in records]
        screened = handler.screen.screen([(r.key, r.value, s) for r, s in zip(records, sources, strict=True)])
        sends: list[Send] = []
        decided: list[tuple[Outcome, ConsumerRecord, SourceRecord]] = []
        for r, source, outcome in zip(records, sources, screened, strict=True):
            if outcome.dead_letter is not None:
                assert self._dead_letter_to is not None
                sends.append(dead_letter_send(self._dead_letter_to, outcome.dead_letter))
                handler.count_rejected(FRAME_HASHES, outcome.dead_letter)
            else:
                handler.count_input(FRAME_HASHES)
                handler.count_allow(outcome)
                if outcome.matches is not None:
                    if self.in_process is not None:
                        here = self.in_process.apply(outcome.matches, source)
                        if here is not None:
                            decided.append((here, r, source))
                    assert self._forward_to is not None
                    sends.append(Send(self._forward_to, r.key or b"", encode_frame_matches(outcome.matches, source),
                                      partition=r.partition, options={"timestamp_ms": r.timestamp}))
                    self.forwarded += 1
        for here, r, source in decided:  # decisions first: the forwards are the durable copies
            await handler.publish_applied(here, r.key, r.value, source)
        if sends:
            await self.deliveries.send(sends)
        self.screened += len(records)

    def commit_due(self, *, idle: bool) -> bool:
        """Something screened is not committed, no commit is under way, and the interval has
        passed (or no frames came)."""
        return (self.screened_to != self.committed and (self._committing is None or self._committing.done())
                and (idle or self.clock() - self.last_commit >= self.commit_interval_s))

    def commit_in_background(self) -> None:
        """:meth:`commit` without holding up the screening: waiting for the acknowledgements
        of the forwards and for the broker's commit once held every frame behind it (and the
        matches among them) for that round trip, once per commit interval."""
        self._committing = task = asyncio.ensure_future(self.commit())
        task.add_done_callback(_log_failure)

    async def commit(self) -> None:
        """Commit what was screened, once every forward and dead letter sent before is
        acknowledged (one commit at a time, so committed offsets never go back)."""
        async with self.commit_lock:
            await self._commit()

    async def _commit(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = dict(self.screened_to)
        await self.deliveries.settled()  # those sent before this point: the frames up to ``offsets``
        self.last_commit = self.clock()
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        self.screened_to = {tp: offset for tp, offset in self.screened_to.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, KafkaError) as exc:  # a rebalance took the partitions: screened again
            log.warning("pre-filter commit of %d partitions refused (%s); they will be screened again",
                        len(offsets), type(exc).__name__)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:  # commit() handles the broker's refusals itself
        log.warning("pre-filter commit failed (%r); those frames will be screened again", task.exception())
