"""Where a transparency report's records come from: the broker's topics, read from the
beginning up to the end offsets seen at the start (records written meanwhile wait for
the next report), or a recording (JSONL, see :mod:`streamsafe.replay.recording`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import TopicAuthorizationFailedError

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.errors import BrokerError
from streamsafe.replay.recording import RecordedEvent, read_recording
from streamsafe.settings import Settings
from streamsafe.transparency.log import SOURCE_TOPICS, EnforcementLog

__all__ = ["log_from_broker", "log_from_recording", "read_topics"]


async def read_topics(settings: Settings, topics: Iterable[str] = SOURCE_TOPICS,
                      timeout_s: float = 120.0) -> list[RecordedEvent]:
    """Every record of ``topics`` (contract names; the prefix is added) up to at least the end
    offsets seen at the start, as recorded events named by contract topic. A topic the broker does
    not have is left out (it has no records to count); one the user may not read is refused
    (TopicAuthorizationFailedError), not left out. A value that is not JSON is kept
    as a non-object, so the report counts it as unreadable."""
    names = {settings.topic_name(t): t for t in topics}
    consumer = clients.consumer(settings, max_partition_fetch_bytes=8 * 1024 * 1024)
    await clients.start(consumer)
    try:
        listed = await consumer.topics()
        present = [name for name in names if name in listed]
        for name in names:  # a topic the user may not read is not a topic without records
            if name not in listed and await clients.topic_denied(consumer, name):
                raise TopicAuthorizationFailedError(f"{name} (the transparency report needs every one of "
                                                    f"{', '.join(sorted(names))})")
        assigned = [TopicPartition(name, p) for name in present for p in await _partitions(consumer, name)]
        if not assigned:
            return []
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        pending = {tp: end for tp, end in ends.items() if end > 0}
        events: list[RecordedEvent] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {sorted(names)} did not reach the end offsets in {timeout_s:.0f}s")
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                # whole fetches, even past the end offset: some brokers (Tansu) give a batch's first
                # offset + 1 as the end of a partition whose last write was a batch of several records
                events.extend(RecordedEvent(names[tp.topic], _text(m.key), _value(m.value)) for m in messages)
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        return events
    finally:
        await stop_consumer(consumer)


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partitions of a topic the broker has (the client's metadata may not know it yet)."""
    deadline = time.monotonic() + timeout_s
    partitions = consumer.partitions_for_topic(topic)
    while not partitions and time.monotonic() < deadline:
        await clients.refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await asyncio.sleep(0.1)
    if not partitions:
        raise BrokerError(f"the broker lists topic {topic} but gives no partitions for it")
    return sorted(partitions)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _value(raw: bytes | None) -> dict | None:  # type: ignore[type-arg]
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []  # type: ignore[return-value]  # not an object: counted as unreadable


def log_from_broker(settings: Settings, timeout_s: float = 120.0) -> EnforcementLog:
    return EnforcementLog.of((e.topic, e.value) for e in asyncio.run(read_topics(settings, timeout_s=timeout_s)))


def log_from_recording(path: Path) -> EnforcementLog:
    return EnforcementLog.of((e.topic, e.value) for e in read_recording(path).events)
