"""Create or check the contract's topics on a broker (``streamsafe topics apply``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamsafe import clients
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
    internal: Mapping[str, TopicSpec] | None = None,
) -> list[TopicStatus]:
    """Create every missing contract topic; refuse (TopicMismatchError) when an existing
    one has another partition count, since co-partitioning by stream id depends on it.
    ``internal``: more topics by their broker-side names (a worker's table changelogs)."""
    admin = clients.admin(settings, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, OSError, Exception) as exc:
        await admin.close()
        raise BrokerError(f"cannot reach the broker at {settings.bootstrap_servers}: {exc}") from exc
    try:
        wanted = {settings.topic_name(name): spec for name, spec in contract.items()}
        wanted.update(internal or {})
        existing = await _partition_counts(admin, list(wanted))
        missing = [
            NewTopic(name, spec.partitions, replication_factor, topic_configs=dict(spec.config))
            for name, spec in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
        if missing:
            await _wait_for_leaders(admin, [t.name for t in missing], timeout_s)
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


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """New topics take a moment to elect partition leaders; producing before that
    only earns NotLeaderForPartition retries."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t.get("error_code", 0) == 0 and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise BrokerError(f"topics {names} have no partition leaders after {timeout_s:.0f}s")


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    # Describe only topics that exist: some brokers auto-create a topic named in a
    # metadata request, with their default partition count.
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    described = await admin.describe_topics(sorted(present))
    counts = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts
