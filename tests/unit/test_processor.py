"""The per-record path without a broker: state writes only on change, bad input dead-lettered."""

import orjson
import pytest

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet

KNOWN_MD5 = "9e107d9d372bb6826bd81d3542a419d6"
T0 = 1_764_324_000_000


class CountingDict(dict):
    writes = 0

    def __setitem__(self, key, value):
        self.writes += 1
        super().__setitem__(key, value)


@pytest.fixture
def processor(contract):
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "md5", KNOWN_MD5))
    return RecordHandler(InputDecoder(contract, 65536), banks, PolicySet(load_policy()), CountingDict(),
                         InMemoryPublisher(), clock=RecordClock())


def src(topic, offset=0):
    return SourceRecord(topic, 0, offset, T0 + offset)


def frames(stream, *digests, start=0):
    return orjson.dumps({
        "schema_version": 1, "stream_id": stream,
        "frames": [{"seq": start + i, "ts_ms": T0 + i, "md5": d} for i, d in enumerate(digests)],
    })


def signal(stream, classifier, score, ts):
    return orjson.dumps({"schema_version": 1, "stream_id": stream, "classifier": classifier,
                         "model_version": "m", "score": score, "ts_ms": ts})


async def test_benign_frames_touch_neither_state_nor_publisher(processor):
    for i in range(50):
        await processor.handle(FRAME_HASHES, b"s1", frames("s1", f"{i:032x}"), src(FRAME_HASHES, i))
    assert processor.states.writes == 0
    assert processor.publisher.decisions == [] and processor.stats.accepted[FRAME_HASHES] == 50


async def test_repeated_known_frames_block_and_report_once(processor):
    for i in range(5):
        value = frames("s1", "0" * 32, KNOWN_MD5, start=i * 2)
        await processor.handle(FRAME_HASHES, b"s1", value, src(FRAME_HASHES, i))
    assert sorted(d.action for d in processor.publisher.decisions) == ["block", "escalate", "report"]
    assert processor.publisher.decisions[0].decided_at_ms == T0


async def test_a_steady_trickle_of_low_scores_costs_one_write(processor):
    for i in range(100):
        await processor.handle(CLASSIFIER_SIGNALS, b"s1", signal("s1", "nudity", 0.3, T0 + i * 1000),
                               src(CLASSIFIER_SIGNALS, i))
    assert processor.states.writes == 1 and processor.publisher.decisions == []


async def test_bad_input_goes_to_dead_letter_with_original_bytes(processor):
    await processor.handle(USER_REPORTS, b"s1", b"not json", src(USER_REPORTS, 7))
    (dead,) = processor.publisher.dead_letters
    assert dead.reason == "malformed_json" and dead.value == b"not json"
    record = orjson.loads(dead.encode(now_ms=5))
    assert record["original_value_b64"] == "bm90IGpzb24=" and record["source"]["offset"] == 7
    assert processor.stats.rejected == {"malformed_json": 1}


async def test_context_and_signals_combine_across_topics(processor):
    started = {"schema_version": 1, "event": "stream.started", "stream_id": "s2", "ts_ms": T0,
               "broadcaster_id": "b", "visibility": "private", "account_age_days": 2}
    await processor.handle(METADATA, b"s2", orjson.dumps(started), src(METADATA))
    await processor.handle(CLASSIFIER_SIGNALS, b"s2", signal("s2", "grooming_text", 0.9, T0 + 5),
                           src(CLASSIFIER_SIGNALS, 1))
    kinds = sorted((d.action, d.priority or "") for d in processor.publisher.decisions)
    assert ("escalate", "P1") in kinds and ("restrict", "") in kinds
    assert processor.states["s2"]["p"] == "private"


async def test_shadow_policy_decisions_are_marked_and_counted(processor):
    from dataclasses import replace

    candidate = replace(load_policy(), version="candidate-9")
    processor.policies = processor.policies.with_shadow("candidate", candidate)
    await processor.handle(FRAME_HASHES, b"s3", frames("s3", KNOWN_MD5), src(FRAME_HASHES))
    shadow = [d for d in processor.publisher.decisions if d.shadow]
    live = [d for d in processor.publisher.decisions if not d.shadow]
    assert {d.policy_version for d in shadow} == {"candidate-9"} and len(shadow) == len(live) == 3


async def test_metrics_count_inputs_matches_decisions_and_latency(processor):
    metrics = processor.metrics
    await processor.handle(FRAME_HASHES, b"s9", frames("s9", KNOWN_MD5), src(FRAME_HASHES))
    await processor.handle(FRAME_HASHES, b"s9", b"{", src(FRAME_HASHES, 1))

    def value(name, **labels):
        return metrics.registry.get_sample_value(name, labels) or 0

    assert value("streamsafe_input_messages_total", topic=FRAME_HASHES, outcome="accepted", reason="") == 1
    assert value("streamsafe_input_messages_total", topic=FRAME_HASHES, outcome="dead_lettered",
                 reason="malformed_json") == 1
    assert value("streamsafe_hash_matches_total", bank="ncmec", signal_type="md5") == 1
    assert value("streamsafe_decisions_total", action="block", priority="") == 1
    assert value("streamsafe_record_to_decision_seconds_count", action="block") == 1
    assert value("streamsafe_state_writes_total") == 1


async def test_a_record_whose_processing_raises_is_dead_lettered_and_the_next_is_decided(processor, monkeypatch):
    def explode(*args, **kwargs):
        raise OverflowError("date value out of range")

    monkeypatch.setattr("streamsafe.pipeline.step.report_if_due", explode)
    value = frames("s-odd", KNOWN_MD5)
    await processor.handle(FRAME_HASHES, b"s-odd", value, src(FRAME_HASHES, 1))
    (dead,) = processor.publisher.dead_letters
    assert dead.reason == "processing_error" and dead.detail.startswith("OverflowError")
    assert dead.value == value and processor.in_flight == {}
    monkeypatch.undo()
    await processor.handle(FRAME_HASHES, b"s-next", frames("s-next", KNOWN_MD5), src(FRAME_HASHES, 2))
    assert "block" in [d.action for d in processor.publisher.decisions if d.stream_id == "s-next"]


async def test_a_microsecond_frame_time_is_dead_lettered_and_other_streams_still_block(processor):
    bad = orjson.dumps({"schema_version": 1, "stream_id": "s-us",
                        "frames": [{"seq": 1, "ts_ms": T0 * 1000, "md5": KNOWN_MD5}]})
    await processor.handle(FRAME_HASHES, b"s-us", bad, src(FRAME_HASHES, 1))
    (dead,) = processor.publisher.dead_letters
    assert dead.reason == "implausible_time" and "microseconds" in dead.detail
    await processor.handle(FRAME_HASHES, b"s-ok", frames("s-ok", KNOWN_MD5), src(FRAME_HASHES, 2))
    assert [d.action for d in processor.publisher.decisions if d.action == "block"] == ["block"]
