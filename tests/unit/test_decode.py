"""Decoding and validation: every kind of bad input is rejected with its own reason."""

import copy

import orjson
import pytest

from streamsafe.errors import RejectedInput
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    INPUT_TOPICS,
    METADATA,
    USER_REPORTS,
)
from streamsafe.events.decode import DEAD_LETTER_REASONS, InputDecoder
from streamsafe.events.models import ClassifierSignal, FrameBatch, StreamMetadata, UserReport

T0 = 1764324061000  # an event time in the contract's range


@pytest.fixture(scope="module")
def decoder(contract):
    return InputDecoder(contract, max_message_bytes=4096)


def reject(decoder, topic, key, value):
    with pytest.raises(RejectedInput) as info:
        decoder.decode(topic, key, value)
    assert info.value.reason in DEAD_LETTER_REASONS
    return info.value


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        (FRAME_HASHES, FrameBatch),
        (CLASSIFIER_SIGNALS, ClassifierSignal),
        (USER_REPORTS, UserReport),
        (METADATA, StreamMetadata),
    ],
)
def test_contract_examples_decode_to_typed_events(decoder, example, topic, kind):
    value = example(topic)
    event = decoder.decode(topic, value["stream_id"].encode(), orjson.dumps(value))
    assert isinstance(event, kind)
    assert event.stream_id == value["stream_id"]


def test_frame_batch_keeps_every_frame_and_hash(decoder, example):
    value = example(FRAME_HASHES)
    value["frames"].append({"seq": 121, "ts_ms": 1764324062000, "md5": "0" * 32})
    batch = decoder.decode(FRAME_HASHES, b"st-7f3a91", orjson.dumps(value))
    assert [f.seq for f in batch.frames] == [120, 121]
    assert batch.frames[1].md5 == "0" * 32 and batch.frames[1].pdq is None
    assert batch.frames[0].pdq_quality == 100


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_malformed_json(decoder, topic):
    assert reject(decoder, topic, b"k", b'{"stream_id": ').reason == "malformed_json"


def test_missing_value_is_malformed(decoder):
    assert reject(decoder, FRAME_HASHES, b"k", None).reason == "malformed_json"


def test_not_an_object(decoder):
    assert reject(decoder, FRAME_HASHES, b"k", b"[1, 2]").reason == "not_an_object"


def test_oversized_is_rejected_before_parsing(decoder, example):
    value = example(CLASSIFIER_SIGNALS, model_version="x" * 5000)
    err = reject(decoder, CLASSIFIER_SIGNALS, b"st-7f3a91", orjson.dumps(value))
    assert err.reason == "oversized" and "4096" in err.detail


@pytest.mark.parametrize("version", [3, 0, "1", None, 1.0])  # 2 adds reported_account_id
def test_unknown_version(decoder, example, version):
    value = example(USER_REPORTS, schema_version=version)
    assert reject(decoder, USER_REPORTS, b"st-7f3a91", orjson.dumps(value)).reason == "unknown_version"


def test_missing_version_is_unknown_version(decoder, example):
    value = example(USER_REPORTS)
    del value["schema_version"]
    assert reject(decoder, USER_REPORTS, b"st-7f3a91", orjson.dumps(value)).reason == "unknown_version"


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [{"seq": 1, "ts_ms": T0}],  # no hash at all
        [{"seq": 1, "ts_ms": T0, "pdq": "a" * 64}],  # pdq without quality
        [{"seq": 1, "ts_ms": T0, "pdq": "a" * 63, "pdq_quality": 90}],
        [{"seq": 1, "ts_ms": T0, "md5": "G" * 32}],
        [{"seq": 1, "ts_ms": T0, "sha256": "a" * 64, "pdq_quality": 101, "pdq": "a" * 64}],
        [{"seq": -1, "ts_ms": T0, "md5": "a" * 32}],
        [{"seq": 1, "ts_ms": "2026-11-28T10:00:00Z", "md5": "a" * 32}],
        [{"seq": 1, "ts_ms": T0, "md5": "a" * 32, "pixels": "..."}],
    ],
)
def test_frame_schema_violations(decoder, example, frames):
    value = example(FRAME_HASHES, frames=frames)
    assert reject(decoder, FRAME_HASHES, b"st-7f3a91", orjson.dumps(value)).reason == "schema_violation"


@pytest.mark.parametrize("score", [-0.1, 1.5, "high"])
def test_classifier_score_out_of_range(decoder, example, score):
    value = example(CLASSIFIER_SIGNALS, score=score)
    err = reject(decoder, CLASSIFIER_SIGNALS, b"st-7f3a91", orjson.dumps(value))
    assert err.reason == "schema_violation"


@pytest.mark.parametrize("key", [None, b"another-stream", b""])
def test_key_must_equal_stream_id(decoder, example, key):
    value = example(METADATA)
    assert reject(decoder, METADATA, key, orjson.dumps(value)).reason == "key_mismatch"


def test_violation_detail_does_not_echo_hash_values(decoder, example):
    secret = "c0ffee" * 10 + "zzzz"
    value = example(FRAME_HASHES, frames=[{"seq": 1, "ts_ms": T0, "sha256": secret}])
    err = reject(decoder, FRAME_HASHES, b"st-7f3a91", orjson.dumps(value))
    assert secret not in err.detail


@pytest.mark.parametrize(
    ("ts", "named"),
    [
        (1764324061000 * 1000, "microseconds"),
        (1764324061, "seconds"),
        (1764324061000 * 1_000_000, "nanoseconds"),
        (-5, ""),
        (5_000_000_000_000, ""),
    ],
)
def test_implausible_event_times_are_named(decoder, example, ts, named):
    for topic, value in ((METADATA, example(METADATA, ts_ms=ts)),
                         (FRAME_HASHES, example(FRAME_HASHES, frames=[{"seq": 1, "ts_ms": ts, "md5": "a" * 32}]))):
        rejected = reject(decoder, topic, b"st-7f3a91", orjson.dumps(value))
        assert rejected.reason == "implausible_time"
        assert named in rejected.detail


def test_event_time_far_ahead_of_the_broker_time_is_implausible(decoder, example):
    value = orjson.dumps(example(METADATA, ts_ms=T0 + 2 * 3_600_000))
    with pytest.raises(RejectedInput) as info:
        decoder.decode(METADATA, b"st-7f3a91", value, T0)
    assert info.value.reason == "implausible_time" and "ahead of the record's broker time" in info.value.detail
    # a minute of producer clock skew, and any past time, are fine
    decoder.decode(METADATA, b"st-7f3a91", orjson.dumps(example(METADATA, ts_ms=T0 + 60_000)), T0)
    decoder.decode(METADATA, b"st-7f3a91", orjson.dumps(example(METADATA, ts_ms=T0 - 86_400_000 * 300)), T0)


@pytest.mark.parametrize("stream_id", ["st\u202eevil", "st\x1b[31m", "st 1", "st\nx", "", "x" * 129, "-lead"])
def test_unsafe_identifiers_are_schema_violations(decoder, example, stream_id):
    stream_id = stream_id.encode().decode("unicode_escape")
    value = example(METADATA, stream_id=stream_id)
    rejected = reject(decoder, METADATA, stream_id.encode(), orjson.dumps(value))
    assert rejected.reason == "schema_violation"
    for field in ("broadcaster_id",):
        bad = example(METADATA, **{field: stream_id})
        assert reject(decoder, METADATA, b"st-7f3a91", orjson.dumps(bad)).reason == "schema_violation"


def dihedral_example(contract) -> dict:
    (value,) = [e for e in contract[FRAME_HASHES].examples if e["schema_version"] == 2]
    return copy.deepcopy(value)


def test_version_2_frames_carry_their_dihedral_variants(decoder, contract):
    value = dihedral_example(contract)
    batch = decoder.decode(FRAME_HASHES, b"st-7f3a91", orjson.dumps(value))
    assert batch.frames[0].pdq_dihedral == value["frames"][0]["pdq_dihedral"]
    value["frames"].append({"seq": 122, "ts_ms": T0, "md5": "0" * 32})  # variants are optional per frame
    assert decoder.decode(FRAME_HASHES, b"st-7f3a91", orjson.dumps(value)).frames[1].pdq_dihedral is None


def test_frames_without_variants_decode_as_before(decoder, example):
    batch = decoder.decode(FRAME_HASHES, b"st-7f3a91", orjson.dumps(example(FRAME_HASHES)))
    assert batch.frames[0].pdq_dihedral is None


@pytest.mark.parametrize("change", ["version_1", "identity_key", "unknown_key", "empty", "short", "no_pdq"])
def test_dihedral_variants_outside_the_contract_are_schema_violations(decoder, contract, change):
    value = dihedral_example(contract)
    frame = value["frames"][0]
    secret = frame["pdq_dihedral"]["flipy"]
    if change == "version_1":
        value["schema_version"] = 1  # version 1 has no pdq_dihedral: an older worker would reject it
    elif change == "identity_key":
        frame["pdq_dihedral"]["identity"] = frame["pdq"]  # the identity is pdq itself
    elif change == "unknown_key":
        frame["pdq_dihedral"]["rotate45"] = frame["pdq"]
    elif change == "empty":
        frame["pdq_dihedral"] = {}
    elif change == "short":
        frame["pdq_dihedral"]["flipy"] = secret[:63]
    else:
        del frame["pdq"], frame["pdq_quality"]
        frame["md5"] = "0" * 32
    rejected = reject(decoder, FRAME_HASHES, b"st-7f3a91", orjson.dumps(value))
    assert rejected.reason == "schema_violation" and secret not in rejected.detail


def test_kafkas_default_partitioner_is_murmur2_as_in_kafkas_own_tests():
    from streamsafe.clients import default_partition

    signed = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536, b"abc": 479470107}
    for key, murmur in signed.items():  # Kafka's Utils.murmur2 test vectors; partition = positive part % n
        assert default_partition(key, 8) == (murmur & 0x7FFFFFFF) % 8


def test_a_record_on_another_partition_than_its_keys_is_refused_as_wrong_partition(contract):
    import zlib

    from streamsafe.clients import default_partition

    checking = InputDecoder(contract, max_message_bytes=4096, partition_of=default_partition)
    partitions = contract[CLASSIFIER_SIGNALS].partitions
    # a librdkafka producer's default (consistent_random: CRC32) puts some keys elsewhere
    stream = next(f"st-{i}" for i in range(100)
                  if zlib.crc32(f"st-{i}".encode()) % partitions != default_partition(f"st-{i}".encode(), partitions))
    key = stream.encode()
    value = orjson.dumps({"schema_version": 1, "stream_id": stream, "classifier": "nudity", "model_version": "m",
                          "score": 0.5, "ts_ms": T0})
    right = default_partition(key, partitions)
    assert isinstance(checking.decode(CLASSIFIER_SIGNALS, key, value, T0, right), ClassifierSignal)
    with pytest.raises(RejectedInput) as wrong:
        checking.decode(CLASSIFIER_SIGNALS, key, value, T0, zlib.crc32(key) % partitions)
    assert wrong.value.reason == "wrong_partition" and f"partition {right}" in wrong.value.detail
    # without a partitioner to check against (unit tests of the logic), partitions are not checked
    assert isinstance(InputDecoder(contract, 4096).decode(CLASSIFIER_SIGNALS, key, value, T0, right + 1),
                      ClassifierSignal)
