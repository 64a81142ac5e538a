"""Create or check the contract's topics on a broker (``streamsafe topics apply``).

Durability comes from the contract (each topic's ``replication_factor`` and
``min.insync.replicas``: 3 and 2 in production), overridden for development by
``STREAMSAFE_REPLICATION_FACTOR`` / ``STREAMSAFE_MIN_INSYNC_REPLICAS`` (1 and 1 on a one-broker
cluster). A cluster with fewer brokers than a new topic's replication factor is refused at once,
naming the cause, instead of waiting for partition leaders that will never be elected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streamsafe import clients
from streamsafe.errors import BrokerError, ConfigError, TopicMismatchError
from streamsafe.events.contract import TopicSpec
from streamsafe.settings import Settings

__all__ = ["TopicStatus", "apply_topics", "topic_durability"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class TopicStatus:
    name: str
    partitions: int
    status: str  # "created" | "ok"
    replicas: int = 0  # read back from the broker (0: not known)
    replication_factor: int = 0  # what the contract and settings ask for


def topic_durability(spec: TopicSpec, settings: Settings) -> tuple[int, dict[str, str]]:
    """The replication factor and topic config (with ``min.insync.replicas``) to create ``spec``
    with: the settings' values where set, else the contract's; an unset min ISR is the contract's
    but at most ``replication_factor - 1`` (so one replica may be down), and at least 1."""
    replication = settings.replication_factor or spec.replication_factor
    min_insync = settings.min_insync_replicas or min(spec.min_insync_replicas, max(1, replication - 1))
    if min_insync > replication:
        raise ConfigError(f"topic {spec.name}: min.insync.replicas {min_insync} exceeds replication factor "
                          f"{replication}: no acks=all send could succeed")
    return replication, {**spec.config, "min.insync.replicas": str(min_insync)}


async def apply_topics(
    settings: Settings,
    contract: Mapping[str, TopicSpec],
    *,
    timeout_s: float = 30.0,
    internal: Mapping[str, TopicSpec] | None = None,
) -> list[TopicStatus]:
    """Create every missing contract topic (unless ``settings.create_topics`` is off: then a
    missing topic is an error naming it); refuse (TopicMismatchError) when an existing one has
    another partition count, since co-partitioning by stream id depends on it. An existing
    topic with fewer replicas than asked for is logged, not changed.
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
        durability = {name: topic_durability(spec, settings) for name, spec in wanted.items()}
        existing = await _describe(admin, list(wanted))
        missing = [NewTopic(name, spec.partitions, durability[name][0], topic_configs=durability[name][1])
                   for name, spec in wanted.items() if name not in existing]
        if missing and not settings.create_topics:
            raise TopicMismatchError(
                f"topics missing and topic creation is off (STREAMSAFE_CREATE_TOPICS=false): "
                f"{', '.join(t.name for t in missing)}; create them as the contract says (streamsafe topics apply, "
                "or the cluster's own tooling)")
        if missing:
            await _create(admin, missing, timeout_s)
            await _wait_for_leaders(admin, [t.name for t in missing], timeout_s)
        statuses = []
        for name, spec in wanted.items():
            have = existing.get(name)
            if have is not None and have[0] != spec.partitions:
                raise TopicMismatchError(
                    f"topic {name} has {have[0]} partitions, the contract says {spec.partitions}"
                )
            wanted_replicas = durability[name][0]
            if have is not None and have[1] < wanted_replicas:
                log.warning("topic %s has %d replicas, %d are asked for: it is not changed here (raise it with "
                            "the cluster's reassignment tooling)", name, have[1], wanted_replicas)
            replicas = have[1] if have is not None else wanted_replicas
            statuses.append(TopicStatus(name, spec.partitions, "ok" if have else "created", replicas,
                                        wanted_replicas))
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


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic], timeout_s: float) -> None:
    """Create ``topics``, refusing first what the cluster cannot hold, and raising the broker's
    own reason for any topic it did not create (one that already exists is fine: another
    worker was first)."""
    brokers = len((await admin.describe_cluster()).get("brokers") or ())
    needs = max(t.replication_factor for t in topics)
    if brokers and needs > brokers:
        raise BrokerError(
            f"the cluster has {brokers} broker{'s' if brokers != 1 else ''} and the topics need replication "
            f"factor {needs} (the contract's production default): add brokers, or for development set "
            f"STREAMSAFE_REPLICATION_FACTOR={brokers} (and STREAMSAFE_MIN_INSYNC_REPLICAS at most that)")
    try:
        response = await admin.create_topics(topics, timeout_ms=int(timeout_s * 1000))
    except TopicAlreadyExistsError:
        return
    failed = [(e[0], e[1], e[2] if len(e) > 2 else None) for e in getattr(response, "topic_errors", ())
              if e[1] not in (0, _TOPIC_ALREADY_EXISTS)]
    if failed:
        name, code, message = failed[0]
        reason = message or getattr(for_code(code), "__name__", f"error {code}")
        raise BrokerError(f"the broker refused to create topic {name}: {reason}"
                          + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, tuple[int, int]]:
    """Partition count and replicas (the fewest of any partition) of each topic that exists."""
    # Describe only topics that exist: some brokers auto-create a topic named in a
    # metadata request, with their default partition count.
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    described = await admin.describe_topics(sorted(present))
    found = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            partitions = topic["partitions"]
            found[topic["topic"]] = (len(partitions), min(len(p.get("replicas") or ()) for p in partitions))
    return found
