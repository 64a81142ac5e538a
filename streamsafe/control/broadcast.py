"""Read a control topic whole on every worker: from the beginning of every
partition, then follow it. A raw aiokafka consumer without a group (Faust agents
would split the partitions across workers, and pay ~160 µs a record).

``caught_up`` is set once everything that was in the topic at start-up has been
applied, so a worker can hold back processing until its policies (or banks) are
those in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from streamsafe import clients
from streamsafe.errors import BrokerError
from streamsafe.settings import Settings

__all__ = ["BroadcastReader", "assign_whole_topic", "stop_consumer"]

log = logging.getLogger(__name__)

OnBatch = Callable[[Sequence[ConsumerRecord]], Awaitable[None]]


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka 0.14 may raise CancelledError from stop() on a
    consumer without a group (its committed-offset reset task is cancelled late);
    that is not our task being cancelled, so it must not escape."""
    task = asyncio.current_task()
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        if task is not None and task.cancelling():
            raise


async def assign_whole_topic(consumer: AIOKafkaConsumer, topic: str,
                             timeout_s: float = 10.0) -> list[TopicPartition]:
    """Assign every partition of ``topic`` and seek to its beginning (waits for the
    topic's metadata, which a client may not have yet for a new topic)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    partitions = consumer.partitions_for_topic(topic)
    if not partitions and await clients.topic_denied(consumer, topic):
        raise TopicAuthorizationFailedError(f"{topic} (its ACLs do not let this user read it)")
    while not partitions and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        await clients.refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(topic)
    assigned = [TopicPartition(topic, p) for p in sorted(partitions or ())]
    if not assigned:
        raise BrokerError(f"topic {topic} not found on the broker")
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    return assigned


class BroadcastReader:
    def __init__(self, settings: Settings, topic: str, on_batch: OnBatch, *,
                 max_records: int = 10_000, fetch_max_wait_ms: int = 100) -> None:
        self.settings = settings
        self.topic = topic
        self.on_batch = on_batch
        self.max_records = max_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.caught_up = asyncio.Event()
        self.records_applied = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = clients.consumer(self.settings, fetch_max_wait_ms=self.fetch_max_wait_ms,
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await clients.start(consumer)
        assigned = await assign_whole_topic(consumer, self.topic)
        self._consumer = consumer
        end = await consumer.end_offsets(assigned) if assigned else {}
        self._task = asyncio.create_task(self._run(consumer, end), name=f"broadcast:{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_consumer(self._consumer)

    async def _run(self, consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> None:
        pending = {tp: offset for tp, offset in end.items() if offset > 0}
        if not pending:
            self.caught_up.set()
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
            for tp, records in batch.items():
                if not records:
                    continue
                try:
                    await self.on_batch(records)
                except Exception as exc:  # handlers dead-letter bad records; this is the last guard
                    log.error("applying %d records from %s raised %s; applying them one by one", len(records),
                              tp, type(exc).__name__)
                    for record in records:
                        try:
                            await self.on_batch([record])
                        except Exception as one:
                            log.error("record %s[%d]@%d could not be applied: %s", record.topic,
                                      record.partition, record.offset, type(one).__name__)
                self.records_applied += len(records)
                if tp in pending and records[-1].offset + 1 >= pending[tp]:
                    del pending[tp]
            if pending:
                # a compacted topic can end below its end offset: trust the position instead
                for tp in list(pending):
                    if await consumer.position(tp) >= pending[tp]:
                        del pending[tp]
            if not pending and not self.caught_up.is_set():
                log.info("caught up with %s (%d records)", self.topic, self.records_applied)
                self.caught_up.set()
