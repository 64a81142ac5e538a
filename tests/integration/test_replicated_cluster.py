"""StreamSafe's production durability on a three-node Apache Kafka cluster: with no
development override, topics and changelogs are created with 3 replicas and
``min.insync.replicas`` 2 (read back from the brokers), and a worker keeps blocking known
abuse, with every decision acknowledged by two brokers, after one broker is killed."""

from __future__ import annotations

import os
import shutil
import signal
import uuid

import pytest

from streamsafe.app import changelog_topics
from streamsafe.brokers.topics import apply_topics
from streamsafe.events.contract import ACTIONS, FRAME_HASHES, load_contract
from streamsafe.settings import Settings
from tests.integration.conftest import KNOWN_MD5, Pipeline
from tests.integration.test_durability import topic_durability_on_broker
from tests.integration.test_worker import frames

pytestmark = pytest.mark.integration

_DYNAMIC_TOPIC_CONFIG = 1


@pytest.fixture(scope="module")
def cluster():
    wanted = os.environ.get("STREAMSAFE_TEST_BROKER", "auto")
    if wanted not in ("kafka", "auto") or shutil.which("java") is None:
        if wanted == "kafka":
            pytest.fail("STREAMSAFE_TEST_BROKER=kafka but Java is not available for the three-node cluster")
        pytest.skip("a three-node cluster needs Apache Kafka (Java); STREAMSAFE_TEST_BROKER is not kafka")
    from streamsafe.brokers.kafka import start_kafka_cluster

    running = start_kafka_cluster(3)
    yield running
    running.stop()


async def test_production_durability_holds_through_the_loss_of_a_broker(cluster, tmp_path, hash_list):
    test_id = uuid.uuid4().hex[:8]
    settings = Settings(broker_url=cluster.url, topic_prefix=f"r{test_id}.", app_id=f"streamsafe-r{test_id}")
    assert settings.replication_factor is None and settings.min_insync_replicas is None  # the contract's
    contract = load_contract()
    await apply_topics(settings, contract)
    world = Pipeline(settings, tmp_path, contract)
    try:
        worker = world.start_worker(hash_list)
        worker.wait_ready(120)
        names = [settings.topic_name(t) for t in contract] + list(changelog_topics(settings, contract))
        found = await topic_durability_on_broker(settings, names)
        assert set(found) == set(names)
        assert {name: value for name, value in found.items() if value != (3, "2", _DYNAMIC_TOPIC_CONFIG)} == {}
        assert "idempotent=true; fewest replicas of any topic 3" in worker.log()

        def blocked(stream: str):
            return lambda records: any(d["stream_id"] == stream and d["action"] == "block"
                                       for d in records.on(ACTIONS))

        await world.send(FRAME_HASHES, b"r-before", frames("r-before", {"md5": KNOWN_MD5}))
        await world.read(until=blocked("r-before"), topics=(ACTIONS,), timeout_s=60)

        lost = cluster.nodes[-1]
        lost.process.send_signal(signal.SIGKILL)  # a broker dies: two of three replicas remain in sync
        lost.process.wait(30)
        await world.send(FRAME_HASHES, b"r-after", frames("r-after", {"md5": KNOWN_MD5}))
        records = await world.read(until=blocked("r-after"), topics=(ACTIONS,), timeout_s=120, settle_s=2.0)
        blocks = [d["stream_id"] for d in records.on(ACTIONS) if d["action"] == "block"]
        assert sorted(blocks) == ["r-after", "r-before"], world.log_digest()  # each once
        assert worker.alive
    finally:
        await world.close()
