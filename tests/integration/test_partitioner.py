"""Two producers, two partitioners, two workers, one real broker: records a producer put on
another partition than Kafka's default partitioner gives their key (librdkafka's default,
CRC32) are dead-lettered ``wrong_partition`` and counted — never silently decided against
another worker's state — and everything else is decided as usual."""

from __future__ import annotations

import zlib

import aiohttp
import orjson
import pytest

from streamsafe.clients import default_partition
from streamsafe.events.contract import ACTIONS, CLASSIFIER_SIGNALS, DEAD_LETTER, FRAME_HASHES
from tests.integration.test_worker import KNOWN_MD5, frames, signal

pytestmark = pytest.mark.integration


async def misrouted_count(worker) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker.http_port}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("streamsafe_input_messages_total{") and 'reason="wrong_partition"' in line)


async def test_records_off_their_keys_partition_are_dead_lettered_and_counted_the_rest_decided(pipeline, hash_list):
    partitions = pipeline.contract[FRAME_HASHES].partitions
    workers = [pipeline.start_worker(hash_list), pipeline.start_worker(hash_list)]
    for worker in workers:
        worker.wait_ready()
    producer = await pipeline.producer()
    crc32 = {f"c-{i}": zlib.crc32(f"c-{i}".encode()) % partitions for i in range(24)}  # librdkafka's default
    misrouted = {s for s, p in crc32.items() if p != default_partition(s.encode(), partitions)}
    routed = set(crc32) - misrouted
    assert misrouted and routed
    for stream in sorted(crc32):
        for topic, value in ((FRAME_HASHES, frames(stream, {"md5": KNOWN_MD5})),
                             (CLASSIFIER_SIGNALS, signal(stream, 0.2))):
            await producer.send_and_wait(pipeline.topic(topic), orjson.dumps(value), key=stream.encode(),
                                         partition=crc32[stream])
    for i in range(6):  # the murmur2 producer (aiokafka's default, like the Java client's)
        await pipeline.send(FRAME_HASHES, f"m-{i}".encode(), frames(f"m-{i}", {"md5": KNOWN_MD5}))

    expected_blocks = routed | {f"m-{i}" for i in range(6)}

    def done(records) -> bool:
        blocked = {d["stream_id"] for d in records.on(ACTIONS) if d["action"] == "block"}
        wrong = [d for d in records.on(DEAD_LETTER) if d["reason"] == "wrong_partition"]
        return blocked >= expected_blocks and len(wrong) >= 2 * len(misrouted)

    records = await pipeline.read(until=done, topics=(ACTIONS, DEAD_LETTER), timeout_s=60, settle_s=2.0)
    # Two workers joining while records arrive may rebalance mid-run; a partition's new owner
    # re-reads from the last commit and re-sends the same decision (same id, at-least-once, as
    # the README says): one decision per stream, none for a misrouted one.
    blocks = {(d["stream_id"], d["decision_id"]) for d in records.on(ACTIONS) if d["action"] == "block"}
    assert sorted(s for s, _ in blocks) == sorted(expected_blocks)
    wrong = [d for d in records.on(DEAD_LETTER) if d["reason"] == "wrong_partition"]
    by_topic = sorted((d["source"]["topic"].removeprefix(pipeline.settings.topic_prefix), d["source"]["partition"])
                      for d in wrong)
    assert by_topic == sorted((t, crc32[s]) for s in misrouted for t in (FRAME_HASHES, CLASSIFIER_SIGNALS))
    assert all(d["original_value_b64"] for d in wrong)  # kept, with their bytes, to be re-sent
    assert sum([await misrouted_count(w) for w in workers]) == 2 * len(misrouted)
    assert all(w.alive for w in workers)
