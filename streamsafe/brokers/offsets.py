"""Committed offsets of a consumer group, read the way every broker here answers.

The admin client's OffsetFetch is not understood by every Kafka-compatible broker
(Tansu closes the connection); a group-less read through a consumer is.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.settings import Settings

__all__ = ["GroupOffsets", "end_offsets"]


async def end_offsets(settings: Settings, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The next offset to be written on each partition."""
    consumer = clients.consumer(settings)
    await consumer.start()
    try:
        return await consumer.end_offsets(list(partitions))
    finally:
        await stop_consumer(consumer)


class GroupOffsets:
    """Reads a group's committed offsets without joining the group."""

    def __init__(self, settings: Settings, group: str) -> None:
        self._consumer = clients.consumer(settings, group_id=group)

    async def __aenter__(self) -> GroupOffsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_consumer(self._consumer)

    async def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset to consume per partition (0 where nothing was committed)."""
        return {tp: (await self._consumer.committed(tp)) or 0 for tp in partitions}
