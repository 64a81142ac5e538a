"""One record, or one bad moment, must not stop enforcement unnoticed (through the real broker):
oversized and odd records are dead-lettered while other streams are decided, a delivery
that cannot complete turns /readyz false until it is delivered (never skipped), and
workers converge on the latest valid policy around a malformed one."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamsafe import clients
from streamsafe.control.publish import publish_policy
from streamsafe.events.contract import (
    ACTIONS,
    CLASSIFIER_SIGNALS,
    DEAD_LETTER,
    FRAME_HASHES,
    HASHBANK_ENTRIES,
    METADATA,
    POLICY,
    REVIEW_VERDICTS,
    USER_REPORTS,
)
from streamsafe.policy.loader import default_policy_text
from tests.integration.conftest import KNOWN_MD5

pytestmark = pytest.mark.integration

HUGE = b'{"schema_version": 1, "pad": "' + b"x" * 990_000 + b'"}'  # ~0.99 MB, under the broker's 1 MiB


def now_ms() -> int:
    return int(time.time() * 1000)


def known_frame(stream: str, ts_ms: int | None = None) -> dict:
    return {"schema_version": 1, "stream_id": stream,
            "frames": [{"seq": 1, "ts_ms": ts_ms or now_ms(), "md5": KNOWN_MD5}]}


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else {"text": await r.text()})


async def poll(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {timeout_s:.0f}s (last: {last!r})")


async def test_a_099_mb_record_on_every_input_and_control_topic_is_dead_lettered(pipeline, hash_list):
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    topics = (METADATA, FRAME_HASHES, CLASSIFIER_SIGNALS, USER_REPORTS, REVIEW_VERDICTS)
    for topic in topics:
        await pipeline.send(topic, b"s-huge", HUGE)
    await pipeline.send(POLICY, b"live", HUGE)
    await pipeline.send(HASHBANK_ENTRIES, b"ncmec:huge", HUGE)
    # a microsecond timestamp, then streams that must still be decided
    await pipeline.send(FRAME_HASHES, b"s-micro", known_frame("s-micro", now_ms() * 1000))
    for i in range(4):
        await pipeline.send(FRAME_HASHES, f"s-ok-{i}".encode(), known_frame(f"s-ok-{i}"))

    def done(records):
        blocked = {d["stream_id"] for d in records.on(ACTIONS) if d["action"] == "block"}
        return len(records.on(DEAD_LETTER)) >= 8 and blocked >= {f"s-ok-{i}" for i in range(4)}

    records = await pipeline.read(done, timeout_s=60, settle_s=1.0)
    dead = records.on(DEAD_LETTER)
    by_source = {(d["source"]["topic"].removeprefix(pipeline.settings.topic_prefix), d["reason"]) for d in dead}
    for topic in topics:
        assert (topic, "oversized") in by_source, (topic, by_source)
    assert (POLICY, "oversized") in by_source and (HASHBANK_ENTRIES, "oversized") in by_source
    micro = [d for d in dead if d["reason"] == "implausible_time"]
    assert len(micro) == 1 and "microseconds" in micro[0]["detail"]
    for d in dead:
        if d["reason"] == "oversized":
            assert d["original_size"] >= 990_000 and d["original_truncated"] and len(d["original_sha256"]) == 64
    blocked = [d["stream_id"] for d in records.on(ACTIONS) if d["action"] == "block"]
    assert sorted(blocked) == [f"s-ok-{i}" for i in range(4)]  # each exactly once, none for s-micro
    assert worker.alive
    assert "Traceback" not in worker.log()


async def test_readiness_goes_false_while_a_delivery_cannot_complete_and_the_decision_still_arrives(
        pipeline, hash_list):
    worker = pipeline.start_worker(hash_list, STREAMSAFE_DELIVERY_TIMEOUT_S="1",
                                   STREAMSAFE_STALL_AFTER_S="3")
    worker.wait_ready()
    readyz = f"http://127.0.0.1:{worker.http_port}/readyz"

    async def ready():
        status, body = await get(readyz)
        return status == 200 and body

    await poll(ready, 30, "ready")
    admin = clients.admin(pipeline.settings)
    await admin.start()
    actions = pipeline.topic(ACTIONS)
    try:
        # the enforcement topic disappears (auto-creation is off): the block cannot be delivered
        await admin.delete_topics([actions])
        await poll(lambda: _absent(admin, actions), 30, "enforcement topic deleted")
        await pipeline.send(FRAME_HASHES, b"s-stuck", known_frame("s-stuck"))

        async def failing():
            status, body = await get(readyz)
            return status == 503 and not body["deliveries_acknowledged"] and not body["no_record_stuck"] and body

        body = await poll(failing, 60, "readyz 503 with deliveries failing and a record stuck")
        assert body["ready"] is False
        _, metrics = await get(f"http://127.0.0.1:{worker.http_port}/metrics")
        assert 'streamsafe_stalled{cause="delivery"} 1.0' in metrics["text"]
        spec = pipeline.contract[ACTIONS]
        await admin.create_topics([NewTopic(actions, spec.partitions, 1, topic_configs=dict(spec.config))])
    finally:
        await admin.close()
    records = await pipeline.read(lambda r: any(d["stream_id"] == "s-stuck" for d in r.on(ACTIONS)),
                                  topics=(ACTIONS,), timeout_s=60)
    assert [d["action"] for d in records.on(ACTIONS) if d["stream_id"] == "s-stuck"][:1] == ["block"]
    await poll(ready, 60, "ready again once deliveries succeed")
    assert worker.alive


async def _absent(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def test_two_workers_converge_on_the_latest_valid_policy_around_a_malformed_one(pipeline, hash_list):
    v1 = default_policy_text().replace('version: "default-2026.11.1"', 'version: "conv-v1"')
    v2 = default_policy_text().replace('version: "default-2026.11.1"', 'version: "conv-v2"')
    await publish_policy(pipeline.settings, v1)
    # malformed in a way the JSON Schema allows: a section of the wrong type
    bad = {"schema_version": 1, "published_at_ms": now_ms(),
           "policy": {"version": "conv-bad", "matching": [1], "rules": [{"name": "r"}]}}
    await pipeline.send(POLICY, b"live", bad)  # signed: what is refused is the policy, not its publisher
    await publish_policy(pipeline.settings, v2)
    workers = [pipeline.start_worker(hash_list), pipeline.start_worker(hash_list)]
    for worker in workers:
        worker.wait_ready()

    async def live_version(worker) -> str | None:
        _, body = await get(f"http://127.0.0.1:{worker.http_port}/metrics")
        for line in body["text"].splitlines():
            if line.startswith('streamsafe_policy_info{role="live"') and line.endswith(" 1.0"):
                return line.split('version="', 1)[1].split('"', 1)[0]
        return None

    async def converged():
        versions = [await live_version(w) for w in workers]
        return versions if versions == ["conv-v2", "conv-v2"] else None

    await poll(converged, 30, "both workers on conv-v2")
    workers[0].stop()
    workers[0] = pipeline.start_worker(hash_list)
    workers[0].wait_ready()
    await poll(converged, 30, "both workers on conv-v2 after a restart")
    records = await pipeline.read(lambda r: len(r.on(DEAD_LETTER)) >= 3, topics=(DEAD_LETTER,), timeout_s=30)
    reasons = [d["reason"] for d in records.on(DEAD_LETTER)]
    assert reasons.count("invalid_policy") == 3  # the first two workers and the restarted one
