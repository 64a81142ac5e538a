"""The worker end to end through a real broker: decisions, dead letters, idempotence."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter

import jsonschema
import orjson
import pytest
from aiokafka import TopicPartition

from streamsafe import clients
from streamsafe.brokers.offsets import end_offsets
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import (
    ACTIONS,
    CLASSIFIER_SIGNALS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
    USER_REPORTS,
)
from tests.integration.waits import processed, wait_for_metric

pytestmark = pytest.mark.integration

KNOWN_MD5 = "5d41402abc4b2a76b9719d911017c592"
KNOWN_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.fixture
def hash_list(tmp_path):
    path = tmp_path / "known-csam.txt"
    path.write_text(f"md5:{KNOWN_MD5} case-1\nsha256:{KNOWN_SHA256} case-2\n")
    return path


def now_ms() -> int:
    return int(time.time() * 1000)


def frames(stream: str, *hashes: dict, start: int = 0) -> dict:
    return {
        "schema_version": 1, "stream_id": stream,
        "frames": [{"seq": start + i, "ts_ms": now_ms(), **h} for i, h in enumerate(hashes)],
    }


def benign(i: int) -> dict:
    return {"md5": f"{i:032x}", "pdq": f"{i:064x}", "pdq_quality": 90}


def signal(stream: str, score: float, classifier: str = "csam") -> dict:
    return {"schema_version": 1, "stream_id": stream, "classifier": classifier,
            "model_version": "m-1", "score": score, "ts_ms": now_ms(), "evidence": {"frame_seq": 3}}


def blocks_for(records, stream: str) -> list[dict]:
    return [r for r in records.on(ACTIONS) if r["stream_id"] == stream and r["action"] == "block"]


async def test_known_hash_blocks_once_and_rising_scores_escalate(pipeline, hash_list):
    worker = pipeline.start_worker(hash_list)
    await pipeline.send(METADATA, b"s-known", {
        "schema_version": 1, "event": "stream.started", "stream_id": "s-known", "ts_ms": now_ms(),
        "broadcaster_id": "acct-1", "visibility": "public"})
    for i in range(20):
        await pipeline.send(FRAME_HASHES, b"s-benign", frames("s-benign", benign(i), start=i))
    # the known frame repeats across three messages, alongside benign frames
    for i in range(3):
        await pipeline.send(FRAME_HASHES, b"s-known",
                            frames("s-known", benign(100 + i), {"md5": KNOWN_MD5}, start=2 * i))
    await pipeline.send(FRAME_HASHES, b"s-sha", frames("s-sha", {"sha256": KNOWN_SHA256}))
    for score in (0.1, 0.4, 0.69, 0.85, 0.93, 0.97):
        await pipeline.send(CLASSIFIER_SIGNALS, b"s-rising", signal("s-rising", score))
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-low", signal("s-low", 0.5))
    worker.wait_ready()

    records = await pipeline.read(
        until=lambda r: len(r.on(ACTIONS)) >= 4 and any(e["stream_id"] == "s-rising" and e["priority"] == "P0"
                                                         for e in r.on(ESCALATIONS)), settle_s=2.0)

    assert len(blocks_for(records, "s-known")) == 1
    assert len(blocks_for(records, "s-sha")) == 1
    reports = [r["stream_id"] for r in records.on(ACTIONS) if r["action"] == "report"]
    assert sorted(reports) == ["s-known", "s-sha"]
    assert {r["stream_id"] for r in records.on(ACTIONS)} == {"s-known", "s-sha", "s-rising"}
    rising = [e for e in records.on(ESCALATIONS) if e["stream_id"] == "s-rising"]
    p0 = next(e for e in rising if e["priority"] == "P0")
    assert p0["rule"] == "csam-classifier" and p0["evidence"][0]["score"] == 0.93
    assert len({e["priority"] for e in rising}) == len(rising)  # never twice at one priority
    block = blocks_for(records, "s-known")[0]
    assert block["evidence"][0] | {"ts_ms": 0} == {
        "kind": "hash_match", "ts_ms": 0, "signal_type": "md5", "bank": "known-csam",
        "entry_id": "known-csam:1", "distance": 0, "frame_seq": 1}
    assert block["rule"] == "authority-hash-strong" and block["explanation"]["risk"] > 0.99
    for name in (ACTIONS, ESCALATIONS):
        for record in records.on(name):
            jsonschema.validate(record, pipeline.contract[name].schema)
    assert not [r for r in records.on(ESCALATIONS) if r["stream_id"] in ("s-benign", "s-low")]
    assert records.on(DEAD_LETTER) == []
    assert worker.alive


async def test_bad_input_is_dead_lettered_with_distinct_reasons_and_worker_keeps_running(
    pipeline, hash_list,
):
    worker = pipeline.start_worker(hash_list)
    oversized = orjson.dumps(signal("s-x", 0.1) | {"model_version": "m" * 70_000})
    bad = {
        "malformed_json": (FRAME_HASHES, b"s-a", b'{"stream_id": "s-a", "frames": ['),
        "schema_violation": (CLASSIFIER_SIGNALS, b"s-b", orjson.dumps(signal("s-b", 4.2))),
        "oversized": (CLASSIFIER_SIGNALS, b"s-x", oversized),
        "unknown_version": (USER_REPORTS, b"s-c", orjson.dumps({
            "schema_version": 3, "stream_id": "s-c", "category": "other", "ts_ms": 1,
            "reporter_id": "r"})),
        "not_an_object": (METADATA, b"s-d", b'"stream.started"'),
        "key_mismatch": (FRAME_HASHES, b"s-other", orjson.dumps(frames("s-e", benign(1)))),
    }
    sent = {}
    for reason, (topic, key, value) in bad.items():
        metadata = await pipeline.send(topic, key, value)
        sent[reason] = (pipeline.topic(topic), metadata.partition, metadata.offset, key, value)
    # the same worker still decides on good input that follows the bad
    await pipeline.send(FRAME_HASHES, b"s-after", frames("s-after", {"md5": KNOWN_MD5}))
    worker.wait_ready()

    records = await pipeline.read(
        until=lambda r: len(r.on(DEAD_LETTER)) >= len(bad) and blocks_for(r, "s-after"))

    by_reason = {r["reason"]: r for r in records.on(DEAD_LETTER)}
    assert set(by_reason) == set(bad)
    for reason, (topic, partition, offset, key, value) in sent.items():
        record = by_reason[reason]
        assert record["source"]["topic"] == topic
        assert (record["source"]["partition"], record["source"]["offset"]) == (partition, offset)
        assert base64.b64decode(record["original_value_b64"]) == value
        assert base64.b64decode(record["original_key_b64"]) == key
        assert record["detail"]
        jsonschema.validate(record, pipeline.contract[DEAD_LETTER].schema)
    assert len(blocks_for(records, "s-after")) == 1
    assert worker.alive


async def block_then_stop(pipeline, hash_list, stream: str, **env: str) -> None:
    """A first worker blocks ``stream`` on a known hash, then stops cleanly."""
    first = pipeline.start_worker(hash_list, **env)
    await pipeline.send(FRAME_HASHES, stream.encode(), frames(stream, {"md5": KNOWN_MD5}))
    first.wait_ready()
    await pipeline.read(until=lambda r: blocks_for(r, stream))
    assert first.stop() == 0


async def test_restarted_worker_does_not_block_the_same_stream_again(
    pipeline, hash_list, requires_table_recovery,
):
    await block_then_stop(pipeline, hash_list, "s-1")
    second = pipeline.start_worker(hash_list)
    # sent while the second worker is still starting: joining, recovering the tables
    await pipeline.send(FRAME_HASHES, b"s-1", frames("s-1", {"md5": KNOWN_MD5}, start=10))
    await pipeline.send(FRAME_HASHES, b"s-1", frames("s-1", {"sha256": KNOWN_SHA256}, start=11))
    # a stream the second worker has never seen proves it is processing
    await pipeline.send(FRAME_HASHES, b"s-2", frames("s-2", {"md5": KNOWN_MD5}))
    second.wait_ready()
    # s-2 may be on another partition: its block alone does not show s-1's frames were handled
    await wait_for_metric(second, "streamsafe_hash_matches_total", lambda v: v >= 3)
    records = await pipeline.read(until=lambda r: blocks_for(r, "s-2"), settle_s=2.0)

    assert len(blocks_for(records, "s-1")) == 1
    assert len(blocks_for(records, "s-2")) == 1


@pytest.mark.parametrize("prefilter", ["true", "false"])
async def test_every_frame_sent_while_a_worker_restarts_is_decided(pipeline, hash_list, requires_table_recovery,
                                                                   prefilter):
    """At least once across a restart: frames keep arriving while the new worker
    joins, recovers its tables and seeks; each stream's known-hash frame must still
    block it, through the pre-filter and through the frame agent alone. (Before the
    safe seek in streamsafe.transport, an agent-only worker started under traffic
    lost most records of its first second on partitions the group had never
    committed, and some on the others.)"""
    await block_then_stop(pipeline, hash_list, "s-0", STREAMSAFE_PREFILTER=prefilter)
    second = pipeline.start_worker(hash_list, STREAMSAFE_PREFILTER=prefilter)
    partitions: Counter[int] = Counter()
    streams: list[str] = []

    async def send_one() -> None:
        stream = f"r-{len(streams)}"
        streams.append(stream)
        partitions[(await pipeline.send(FRAME_HASHES, stream.encode(),
                                        frames(stream, {"md5": KNOWN_MD5}))).partition] += 1

    deadline = time.monotonic() + 60
    while not second.is_ready() and time.monotonic() < deadline:
        await send_one()
        await asyncio.sleep(0.01)
    second.wait_ready()
    for _ in range(20):
        await send_one()
    records = await pipeline.read(until=lambda r: all(blocks_for(r, s) for s in streams), settle_s=1.0)

    missing = [s for s in streams if not blocks_for(records, s)]
    assert len(partitions) == pipeline.contract[FRAME_HASHES].partitions  # every partition had traffic
    assert not missing, f"{len(missing)} of {len(streams)} streams never blocked: {missing[:10]}"
    assert all(len(blocks_for(records, s)) == 1 for s in streams)


async def test_reprocessing_the_same_input_yields_byte_identical_decisions(pipeline, hash_list):
    """A re-delivery (here: a second consumer group replaying the topics from the
    start, with empty state) produces the same decision ids and records."""
    await pipeline.send(FRAME_HASHES, b"s-1", frames("s-1", benign(1), {"md5": KNOWN_MD5}))
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-2", signal("s-2", 0.95))
    first = pipeline.start_worker(hash_list, app_id=pipeline.settings.app_id + "-a")
    first.wait_ready()
    records_so_far = await pipeline.read(until=lambda r: r.on(ACTIONS) and r.on(ESCALATIONS), settle_s=2.0)
    first.stop()

    second = pipeline.start_worker(hash_list, app_id=pipeline.settings.app_id + "-b")
    second.wait_ready()
    first_run = len(records_so_far.items)
    records = await pipeline.read(until=lambda r: len(r.items) >= 2 * first_run, settle_s=1.0)

    # every record the first worker wrote, the second wrote again, byte for byte
    copies = Counter(orjson.dumps(value, option=orjson.OPT_SORT_KEYS) for _, _, value in records.items)
    assert len(records.items) == 2 * first_run
    assert set(copies.values()) == {2}
    assert {value["action"] for _, _, value in records.items} >= {"block", "escalate"}


async def test_an_offset_is_committed_only_once_its_state_writes_are_in_the_changelog(pipeline, hash_list):
    """Table writes go out coalesced, in bursts (transport/changelog.py); the commit of the records
    that made them waits for them, so a restart can never find an offset past its state. The
    bursts wait an hour here: only the commit's flush can have sent the writes."""
    worker = pipeline.start_worker(hash_list, STREAMSAFE_CHANGELOG_LINGER_S="3600")
    worker.wait_ready()
    scores = [round(0.30 + 0.05 * i, 2) for i in range(8)]  # each a step stronger: each changes the state
    for score in scores:
        await pipeline.send(CLASSIFIER_SIGNALS, b"s-cl", signal("s-cl", score, classifier="nudity"))
    await processed(pipeline, CLASSIFIER_SIGNALS)

    changelog = f"{pipeline.settings.app_id}-stream-state-changelog"
    ends = await end_offsets(pipeline.settings, (TopicPartition(changelog, p)
                                                 for p in range(pipeline.contract[CLASSIFIER_SIGNALS].partitions)))
    written = [orjson.loads(v) for k, v in await read_to(pipeline, ends) if k == b'"s-cl"']
    assert written, "no state of s-cl in the changelog although its signals' offsets are committed"
    assert written[-1]["s"]["nudity"][0] == scores[-1]  # the last write, not an earlier one
    assert len(written) <= len(scores)


async def read_to(pipeline, ends: dict) -> list[tuple[bytes, bytes]]:
    """Every record of the partitions in ``ends`` below those offsets, in order per partition."""
    consumer = clients.consumer(pipeline.settings)
    consumer.assign(list(ends))
    await consumer.start()
    out: list[tuple[bytes, bytes]] = []
    try:
        await consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in ends]
            if all(position >= ends[tp] for tp, position in zip(ends, positions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            out.extend((m.key, m.value) for tp, records in batch.items() for m in records if m.offset < ends[tp])
    finally:
        await stop_consumer(consumer)
    return out
