"""The per-record path without a broker: state writes only on change, bad input dead-lettered."""

import orjson
import pytest

from streamsafe.agents.processor import StreamProcessor
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.matching.banks import BankEntry, HashBanks
from streamsafe.policy.foundation import FoundationPolicy

KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"


class CountingDict(dict):
    writes = 0

    def __setitem__(self, key, value):
        self.writes += 1
        super().__setitem__(key, value)


@pytest.fixture
def processor(contract):
    banks = HashBanks()
    banks.add(BankEntry("known:1", "known", "md5", KNOWN_MD5))
    return StreamProcessor(
        InputDecoder(contract, 65536),
        banks,
        FoundationPolicy("test-1", {"csam": 0.7}),
        CountingDict(),
        InMemoryPublisher(),
    )


def src(topic, offset=0):
    return SourceRecord(topic, 0, offset, 1_764_324_000_000 + offset)


def frames(stream, *digests, start=0):
    return orjson.dumps({
        "schema_version": 1, "stream_id": stream,
        "frames": [{"seq": start + i, "ts_ms": 1000 + i, "md5": d} for i, d in enumerate(digests)],
    })


async def test_benign_frames_touch_neither_state_nor_publisher(processor):
    for i in range(50):
        await processor.handle(FRAME_HASHES, b"s1", frames("s1", f"{i:032x}"), src(FRAME_HASHES, i))
    assert processor.states.writes == 0
    assert processor.publisher.decisions == [] and processor.accepted[FRAME_HASHES] == 50


async def test_repeated_known_frames_block_once(processor):
    for i in range(5):
        value = frames("s1", "0" * 32, KNOWN_MD5, start=i * 2)
        await processor.handle(FRAME_HASHES, b"s1", value, src(FRAME_HASHES, i))
    blocks = [d for d in processor.publisher.decisions if d.action == "block"]
    assert len(blocks) == 1 and processor.states.writes == 1
    assert blocks[0].decided_at_ms == 1_764_324_000_000


async def test_bad_input_goes_to_dead_letter_with_original_bytes(processor):
    await processor.handle(USER_REPORTS, b"s1", b"not json", src(USER_REPORTS, 7))
    (dead,) = processor.publisher.dead_letters
    assert dead.reason == "malformed_json" and dead.value == b"not json"
    assert dead.source.offset == 7
    record = orjson.loads(dead.encode(now_ms=5))
    assert record["original_value_b64"] == "bm90IGpzb24=" and record["source"]["topic"] == USER_REPORTS
    assert processor.rejected == {"malformed_json": 1}


async def test_classifier_escalation_and_metadata(processor):
    started = {"schema_version": 1, "event": "stream.started", "stream_id": "s2", "ts_ms": 1,
               "broadcaster_id": "b", "visibility": "private"}
    await processor.handle(METADATA, b"s2", orjson.dumps(started), src(METADATA))
    low = {"schema_version": 1, "stream_id": "s2", "classifier": "csam", "model_version": "m",
           "score": 0.2, "ts_ms": 2}
    await processor.handle(CLASSIFIER_SIGNALS, b"s2", orjson.dumps(low), src(CLASSIFIER_SIGNALS, 1))
    assert processor.states.writes == 1 and processor.publisher.decisions == []
    high = {**low, "score": 0.75, "ts_ms": 3}
    await processor.handle(CLASSIFIER_SIGNALS, b"s2", orjson.dumps(high), src(CLASSIFIER_SIGNALS, 2))
    (decision,) = processor.publisher.decisions
    assert decision.action == "escalate" and processor.states["s2"]["visibility"] == "private"
