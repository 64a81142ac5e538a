"""Create or check the contract's topics on a broker (``streamsafe topics apply``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamsafe.errors import BrokerError, TopicMismatchError
from streamsafe.events.contract import TopicSpec
from streamsafe.settings import Settings

__all__ = ["TopicStatus", "apply_topics"]


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    partitions: int
    status: str  # "created" | "ok"


async def apply_topics(
    settings: Settings,
    contract: Mapping[str, TopicSpec],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[TopicStatus]:
    """Create every missing contract topic; refuse (TopicMismatchError) when an existing
    one has another partition count, since co-partitioning by stream id depends on it."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=int(timeout_s * 1000),
        **settings.security.aiokafka_kwargs(),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, OSError, Exception) as exc:
        await admin.close()
        raise BrokerError(f"cannot reach broker {settings.bootstrap_servers}: {exc!r}") from exc
    try:
        wanted = {settings.topic_name(name): spec for name, spec in contract.items()}
        existing = await _partition_counts(admin, list(wanted))
        missing = [
            NewTopic(name, spec.partitions, replication_factor, topic_configs=dict(spec.config))
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
        statuses = []
        for name, spec in wanted.items():
            have = existing.get(name)
            if have is not None and have != spec.partitions:
                raise TopicMismatchError(
                    f"topic {name} has {have} partitions, the contract says {spec.partitions}"
                )
            statuses.append(TopicStatus(name, spec.partitions, "ok" if have else "created"))
        return statuses
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    counts = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts
