"""The frame pre-filter through the real broker: the same decisions as the agent
path, bad frames dead-lettered with their own coordinates, only matches forwarded,
and the pre-filter's offsets committed."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest
from aiokafka import TopicPartition

from streamsafe.brokers.offsets import GroupOffsets, end_offsets
from streamsafe.events.contract import ACTIONS, CLASSIFIER_SIGNALS, DEAD_LETTER, FRAME_HASHES, FRAME_MATCHES
from tests.integration.test_worker import KNOWN_MD5, KNOWN_SHA256, benign, frames, signal
from tests.integration.waits import metric, processed

pytestmark = pytest.mark.integration


@pytest.fixture
def hash_list(tmp_path):
    path = tmp_path / "known-csam.txt"
    path.write_text(f"md5:{KNOWN_MD5} case-1\nsha256:{KNOWN_SHA256} case-2\n")
    return path


async def topic_end(pipeline, name: str) -> dict[TopicPartition, int]:
    topic = pipeline.topic(name)
    return await end_offsets(pipeline.settings,
                             [TopicPartition(topic, p) for p in range(pipeline.contract[name].partitions)])


async def test_prefilter_decides_exactly_what_the_agent_path_decides(pipeline, hash_list):
    matching = {f"m-{i}" for i in range(6)}
    for i in range(60):
        await pipeline.send(FRAME_HASHES, f"b-{i % 20}".encode(), frames(f"b-{i % 20}", benign(i), benign(i + 1000)))
    for i, stream in enumerate(sorted(matching)):
        digest = {"md5": KNOWN_MD5} if i % 2 else {"sha256": KNOWN_SHA256}
        await pipeline.send(FRAME_HASHES, stream.encode(), frames(stream, benign(i), digest, start=5))
        await pipeline.send(FRAME_HASHES, stream.encode(), frames(stream, digest, start=9))  # repeats: no 2nd block
    await pipeline.send(FRAME_HASHES, b"bad-1", b"{not json")
    await pipeline.send(FRAME_HASHES, b"bad-2", frames("someone-else", benign(3)))
    await pipeline.send(CLASSIFIER_SIGNALS, b"c-1", signal("c-1", 0.97))

    base = pipeline.settings.app_id

    def done(copies: int):
        def check(r) -> bool:
            blocks = Counter(v["stream_id"] for v in r.on(ACTIONS) if v["action"] == "block")
            return all(blocks[s] == copies for s in matching) and len(r.on(DEAD_LETTER)) == 2 * copies
        return check

    def decisions(r) -> Counter:
        return Counter((t, orjson.dumps(v, option=orjson.OPT_SORT_KEYS)) for t, _, v in r.items if t != DEAD_LETTER)

    agents = pipeline.start_worker(hash_list, app_id=base + "-agents", STREAMSAFE_PREFILTER="false")
    agents.wait_ready()
    by_agents = await pipeline.read(until=done(1), settle_s=2.0)
    assert agents.stop() == 0
    prefilter = pipeline.start_worker(hash_list, app_id=base + "-pf", STREAMSAFE_PREFILTER="true")
    prefilter.wait_ready()
    both = await pipeline.read(until=done(2), settle_s=2.0)

    # every decision record the agent path wrote, the pre-filter path wrote too, byte for byte
    assert {v["stream_id"] for v in by_agents.on(ACTIONS)} >= matching
    assert decisions(both) - decisions(by_agents) == decisions(by_agents)
    # bad frames dead-lettered by both paths, with the frame topic's coordinates
    dead = Counter((v["reason"], v["source"]["topic"], v["source"]["offset"]) for v in both.on(DEAD_LETTER))
    assert {reason for reason, _, _ in dead} == {"malformed_json", "key_mismatch"}
    assert all(topic == pipeline.topic(FRAME_HASHES) for _, topic, _ in dead) and set(dead.values()) == {2}

    # only the 12 messages with a match were forwarded; the pre-filter committed every frame
    forwarded = await topic_end(pipeline, FRAME_MATCHES)
    assert sum(forwarded.values()) == 2 * len(matching)
    frames_end = await topic_end(pipeline, FRAME_HASHES)
    deadline = time.monotonic() + 10
    async with GroupOffsets(pipeline.settings, pipeline.settings.replace(app_id=base + "-pf").prefilter_group) \
            as offsets:
        while (committed := await offsets.committed(list(frames_end))) != frames_end and time.monotonic() < deadline:
            time.sleep(0.2)
    assert committed == frames_end
    assert prefilter.stop() == 0


async def test_a_match_is_stepped_on_where_it_was_screened_and_its_forward_skipped(pipeline, hash_list):
    """One worker: both of its groups hold every partition, so each match is decided by the
    pre-filter at once (no round trip through streamsafe.frame-matches) and its forwarded copy,
    read back by the agent, decides nothing again."""
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()

    def blocked(streams):
        def check(r) -> bool:
            found = Counter(v["stream_id"] for v in r.on(ACTIONS) if v["action"] == "block")
            return all(found[s] >= 1 for s in streams)
        return check

    await pipeline.send(FRAME_HASHES, b"warm", frames("warm", {"md5": KNOWN_MD5}))  # the agents are flowing
    await pipeline.read(until=blocked({"warm"}))
    await processed(pipeline, FRAME_MATCHES)
    before = {a: await metric(worker, "streamsafe_prefilter_matches_total", applied=a) for a in ("in_process",
                                                                                               "by_agent")}
    rebalances = await metric(worker, "streamsafe_rebalances_total")

    streams = [f"k-{i}" for i in range(4)]
    for i, stream in enumerate(streams):
        await pipeline.send(FRAME_HASHES, stream.encode(), frames(stream, benign(i), {"md5": KNOWN_MD5}, start=1))
        await pipeline.send(FRAME_HASHES, stream.encode(), frames(stream, {"sha256": KNOWN_SHA256}, start=9))
    records = await pipeline.read(until=blocked(streams), settle_s=1.0)
    await processed(pipeline, FRAME_MATCHES)  # every forwarded copy read back by the agents

    found = Counter(v["stream_id"] for v in records.on(ACTIONS) if v["action"] == "block")
    assert all(found[s] == 1 for s in streams)  # each once, though each match also went through the agent
    after = {a: await metric(worker, "streamsafe_prefilter_matches_total", applied=a) for a in before}
    assert await metric(worker, "streamsafe_rebalances_total") == rebalances
    assert after["in_process"] - before["in_process"] == 2 * len(streams)
    assert after["by_agent"] == before["by_agent"]  # every copy recognised and skipped
    assert worker.stop() == 0
