"""Durability on a real broker: topics and changelogs are created with the replication factor
and ``min.insync.replicas`` the contract and settings ask for (read back from the broker), a
cluster too small for the contract's production default is refused at once with the cause,
topic creation can be left to the cluster's own tooling, and producers are idempotent where
the broker grants producer ids."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamsafe import clients
from streamsafe.app import changelog_topics
from streamsafe.brokers.topics import apply_topics
from streamsafe.errors import BrokerError, TopicMismatchError
from streamsafe.events.contract import ACTIONS
from streamsafe.settings import Settings

pytestmark = pytest.mark.integration

_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs (v1+) config source of a value set on the topic itself



async def topic_durability_on_broker(settings: Settings, names: list[str]) -> dict[str, tuple[int, str, int]]:
    """Per topic: the fewest replicas of any partition, its min.insync.replicas, and where the
    broker says that value comes from."""
    admin = clients.admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        replicas = {t["topic"]: min(len(p["replicas"]) for p in t["partitions"]) for t in described}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None}) for name in names])
    finally:
        await admin.close()
    found = {}
    for response in responses:
        for _code, _message, _type, name, entries in response.resources:
            for entry in entries:
                if entry[0] == "min.insync.replicas":
                    # DescribeConfigs v1+ entry: name, value, read_only, config_source, is_sensitive, synonyms
                    assert len(entry) == 6, entry
                    found[name] = (replicas[name], entry[1], entry[3])
    return found


async def test_topics_and_changelogs_carry_the_configured_replication_and_min_isr(pipeline, hash_list):
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    names = [pipeline.topic(t) for t in pipeline.contract]
    changelogs = list(changelog_topics(pipeline.settings, pipeline.contract))
    found = await topic_durability_on_broker(pipeline.settings, names + changelogs)
    assert set(found) == set(names + changelogs)
    for name, (replicas, min_insync, source) in found.items():
        # the development override (one broker): 1 replica, so min ISR 1 — set on the topic
        # by StreamSafe, not the broker's default that happens to be the same number
        assert (replicas, min_insync, source) == (1, "1", _DYNAMIC_TOPIC_CONFIG), name
    assert "durability: producers acks=all, idempotent=true" in worker.log()


async def test_the_contract_default_on_a_one_broker_cluster_is_refused_at_once_with_the_cause(broker):
    settings = Settings(broker_url=broker.url, topic_prefix=f"d{uuid.uuid4().hex[:8]}.")
    assert settings.replication_factor is None  # the contract's production default: 3
    started = time.monotonic()
    with pytest.raises(BrokerError) as refused:
        await apply_topics(settings, {ACTIONS: pipeline_contract()[ACTIONS]})
    assert time.monotonic() - started < 10  # not the 30 s wait for leaders that never come
    message = str(refused.value)
    assert "1 broker" in message and "replication factor 3" in message
    assert "STREAMSAFE_REPLICATION_FACTOR" in message
    admin = clients.admin(settings)
    await admin.start()
    try:
        assert settings.topic_name(ACTIONS) not in await admin.list_topics()
    finally:
        await admin.close()


async def test_with_topic_creation_off_a_missing_topic_is_an_error_naming_it(broker):
    settings = Settings(broker_url=broker.url, topic_prefix=f"d{uuid.uuid4().hex[:8]}.", replication_factor=1,
                        create_topics=False)
    with pytest.raises(TopicMismatchError, match=settings.topic_name(ACTIONS)):
        await apply_topics(settings, {ACTIONS: pipeline_contract()[ACTIONS]})


async def test_producers_are_idempotent_where_the_broker_grants_producer_ids(broker):
    settings = await clients.resolve_idempotence(Settings(broker_url=broker.url))
    expected = "false" if "Tansu" in broker.kind else "true"  # Tansu refuses InitProducerId
    assert settings.idempotent_producer == expected
    producer = clients.producer(settings)
    await producer.start()  # an idempotent producer asks the broker for its producer id here
    try:
        assert (producer._txn_manager is not None) is (expected == "true")  # aiokafka's idempotence state
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


def pipeline_contract():
    from streamsafe.events.contract import load_contract

    return load_contract()
