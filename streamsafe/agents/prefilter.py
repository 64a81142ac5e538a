"""The frame pre-filter: frames screened against the banks outside Faust.

Nearly every frame matches nothing, and a frame that matches nothing changes no
state. So with ``STREAMSAFE_PREFILTER=true`` a raw aiokafka group consumer (its own
group, ``<app id>-prefilter``) reads ``livestream.frame-hashes`` in batches, screens
them (:class:`~streamsafe.pipeline.screen.FrameScreen`: decode, validate, match; the
batch's PDQ hashes in one index call) and forwards only the messages with a match to
``streamsafe.frame-matches``, as what it found: the matched frames, their matches and
the source record's coordinates, on the same partition (the stream's state lives
there) with the source record's timestamp. The Faust agent reads that topic instead
and steps on the matches without decoding or matching the frames again; its
decisions, decision ids included, are those the agent path makes from the same input.

Guarantees: at least once. A batch's offsets are committed only after every
forwarded match and dead letter in it is acknowledged by the broker (acks=all);
a revocation waits for the batch in hand, which commits, and a commit refused by a
rebalance only means the next owner screens those frames again (forwarding a
match twice is harmless: decisions are idempotent). Bad input is dead-lettered
here, with the frame topic's coordinates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from mode import Service

from streamsafe import clients
from streamsafe.agents.records import RecordHandler
from streamsafe.control.broadcast import stop_consumer
from streamsafe.enforcement.kafka import RETRY_BACKOFF_S
from streamsafe.events.contract import DEAD_LETTER, FRAME_HASHES, FRAME_MATCHES
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.encode import encode_frame_matches
from streamsafe.observability.liveness import DeliveryHealth
from streamsafe.observability.metrics import lag
from streamsafe.settings import Settings

__all__ = ["FramePreFilter"]

log = logging.getLogger(__name__)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, prefilter: FramePreFilter) -> None:
        self.prefilter = prefilter

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # the batch in hand finishes (forwards acknowledged, offsets committed) first
        async with self.prefilter.batch_lock:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class FramePreFilter(Service):
    """Screens ``livestream.frame-hashes`` and forwards matches (see the module doc)."""

    def __init__(self, settings: Settings, handler: RecordHandler, ready: asyncio.Event, *,
                 max_batch: int = 500, health: DeliveryHealth | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.handler = handler
        self.ready = ready
        self.max_batch = max_batch
        self.group = settings.prefilter_group
        self.source = settings.topic_name(FRAME_HASHES)
        self.target = settings.topic_name(FRAME_MATCHES)
        self.dead_letters = settings.topic_name(DEAD_LETTER)
        self.batch_lock = asyncio.Lock()
        self.batch_started: float | None = None  # monotonic, while a batch is in hand
        self.running = False  # the screening loop is alive
        self.timeout_s = settings.delivery_timeout_s
        self.health = health if health is not None else DeliveryHealth()
        self.screened = 0
        self.forwarded = 0
        self.committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        self._producer = clients.producer(self.settings, linger_ms=1)
        await self._producer.start()
        self._consumer = clients.consumer(
            self.settings, group_id=self.group, max_poll_records=self.max_batch,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout_s / 3) * 1000),
            fetch_max_wait_ms=10, group_instance_id=self.settings.prefilter_instance_id,
        )
        self._consumer.subscribe([self.source], listener=_CommitOnRevoke(self))
        await self._consumer.start()
        log.info("frame pre-filter screening %s for group %s", self.source, self.group)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self.batch_lock:
                await stop_consumer(self._consumer)  # commits nothing more: every batch committed
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

    async def screen_batch(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Screen, forward, wait for the broker's acknowledgements, then commit. A batch
        whose sends fail or time out is screened again from its first offset after a
        back-off (never skipped); :attr:`health` says so meanwhile."""
        consumer = self._consumer
        assert consumer is not None
        self.batch_started = time.monotonic()
        try:
            if not await self._forward(batch):
                for tp, records in batch.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
                wait = RETRY_BACKOFF_S[max(0, min(self.health.failures, len(RETRY_BACKOFF_S)) - 1)]
                await asyncio.sleep(wait)
                return
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
            try:
                await consumer.commit(offsets)
                self.committed.update(offsets)
            except (CommitFailedError, KafkaError) as exc:  # a rebalance took the partitions: screened again
                log.warning("pre-filter commit of %d partitions refused (%s); they will be screened again",
                            len(offsets), type(exc).__name__)
        finally:
            self.batch_started = None

    async def _forward(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Send the batch's matches and dead letters; True once the broker acknowledged all."""
        producer = self._producer
        assert producer is not None
        handler = self.handler
        every = [r for records in batch.values() for r in records]
        sources = [SourceRecord(r.topic, r.partition, r.offset, r.timestamp) for r in every]
        screened = handler.screen.screen([(r.key, r.value, s) for r, s in zip(every, sources, strict=True)])
        handler.note_arrival(FRAME_HASHES)
        pending: list[asyncio.Future[Any]] = []
        try:
            for r, source, outcome in zip(every, sources, screened, strict=True):
                if outcome.dead_letter is not None:
                    pending.append(await self._send_dead_letter(outcome.dead_letter))
                elif outcome.matches is not None:
                    pending.append(await asyncio.wait_for(producer.send(
                        self.target, encode_frame_matches(outcome.matches, source), key=r.key,
                        partition=r.partition, timestamp_ms=r.timestamp), self.timeout_s))
            if pending:  # acks=all: the matches are durable before the commit
                await asyncio.wait_for(asyncio.gather(*pending), self.timeout_s)
        except Exception as exc:  # KafkaError, a timeout, or anything else: never skip the batch
            for future in pending:
                future.cancel()
            self.health.failed(type(exc).__name__, time.monotonic())
            log.error("pre-filter could not forward a batch (%s); screening it again", type(exc).__name__)
            return False
        self.health.delivered()
        # counted once the batch is through: a batch screened again after a failed send counts once
        for outcome in screened:
            if outcome.dead_letter is not None:
                handler.count_rejected(FRAME_HASHES, outcome.dead_letter)
            else:
                handler.count_input(FRAME_HASHES)
                if outcome.matches is not None:
                    self.forwarded += 1
        self.screened += len(every)
        return True

    async def _send_dead_letter(self, rejected: DeadLetter) -> asyncio.Future[Any]:
        producer = self._producer
        assert producer is not None
        key = rejected.source.topic.encode()
        try:
            return await asyncio.wait_for(producer.send(self.dead_letters, rejected.encode(), key=key),
                                          self.timeout_s)
        except (MessageSizeTooLargeError, RecordTooLargeError):
            return await asyncio.wait_for(producer.send(self.dead_letters, rejected.encode(keep_bytes=0), key=key),
                                          self.timeout_s)
