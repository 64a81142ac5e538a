"""Decode and validate input messages against the contract in ``topics/``.

Order of checks, each with its own dead-letter reason:

1. ``oversized``        value larger than ``max_message_bytes``
2. ``malformed_json``   not JSON (orjson)
3. ``not_an_object``    JSON, but not an object
4. ``unknown_version``  ``schema_version`` missing, not an integer, or not one the contract lists
5. ``implausible_time`` an event time before 2000 or after 2100, or more than
                        :data:`MAX_FUTURE_SKEW_MS` after the record's broker timestamp; a value
                        that looks like seconds or microseconds is named as such
6. ``schema_violation`` fails the topic's JSON Schema (compiled once with fastjsonschema)
7. ``key_mismatch``     record key absent or not equal to the value's ``stream_id``

The time check runs before the schema (which also bounds every ``ts_ms``) so the
reason can say what went wrong. Event times in the past are accepted: replays and
late producers send them; a far-future time would hold a stream's evidence and
deadlines hostage, and a unit mistake is the usual cause.

Measured per frame-hash message: orjson ~1 µs plus the compiled validator ~7 µs,
against ~110 µs for an interpreted jsonschema validator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from streamsafe.errors import RejectedInput
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    METADATA,
    REVIEW_APPEALS,
    REVIEW_VERDICTS,
    TIMERS,
    USER_REPORTS,
    TopicSpec,
)
from streamsafe.events.dead_letter import DEAD_LETTER_REASONS, SourceRecord
from streamsafe.events.models import (
    AccountFinding,
    Appeal,
    ClassifierSignal,
    Frame,
    FrameBatch,
    FrameMatches,
    Match,
    ReviewVerdict,
    StreamMetadata,
    TimerTick,
    UserReport,
)

__all__ = ["DEAD_LETTER_REASONS", "MAX_FUTURE_SKEW_MS", "InputDecoder", "InputEvent", "check_event_times",
           "decode_frame_matches"]

#: the contract's bounds on every event time (2000-01-01 .. 2100-01-01, epoch ms)
EARLIEST_MS = 946_684_800_000
LATEST_MS = 4_102_444_800_000
#: how far an event time may run ahead of its record's broker timestamp (producer clock skew)
MAX_FUTURE_SKEW_MS = 3_600_000

InputEvent = (FrameBatch | ClassifierSignal | UserReport | StreamMetadata | ReviewVerdict | Appeal | TimerTick
              | AccountFinding)

_BUILDERS: Mapping[str, Callable[[dict[str, Any]], InputEvent]] = {
    FRAME_HASHES: FrameBatch.from_dict,
    CLASSIFIER_SIGNALS: ClassifierSignal.from_dict,
    USER_REPORTS: UserReport.from_dict,
    METADATA: StreamMetadata.from_dict,
    REVIEW_VERDICTS: ReviewVerdict.from_dict,
    REVIEW_APPEALS: Appeal.from_dict,
    TIMERS: TimerTick.from_dict,
    ACCOUNT_FINDINGS: AccountFinding.from_dict,
}


@dataclass(frozen=True, slots=True)
class _TopicDecoder:
    validate: Callable[[Any], Any]
    versions: frozenset[int]
    build: Callable[[dict[str, Any]], InputEvent]
    partitions: int


class InputDecoder:
    """Turns raw (key, value) bytes of an input topic into a typed event or raises
    :class:`RejectedInput` with the dead-letter reason."""

    def __init__(self, contract: Mapping[str, TopicSpec], max_message_bytes: int,
                 partition_of: Callable[[bytes, int], int] | None = None) -> None:
        """``partition_of(key, partitions)``: the partition the producers' partitioner must give
        a key (the worker passes Kafka's default, murmur2); None: partitions are not checked."""
        self.max_message_bytes = max_message_bytes
        self.partition_of = partition_of
        self._decoders = {
            name: _TopicDecoder(
                fastjsonschema.compile(dict(contract[name].schema)),
                frozenset(contract[name].schema_versions),
                build,
                contract[name].partitions,
            )
            for name, build in _BUILDERS.items()
        }

    def decode(self, topic: str, key: bytes | None, value: bytes | None,
               record_ts_ms: int | None = None, partition: int | None = None) -> InputEvent:
        """``topic`` is the contract name (without prefix); ``record_ts_ms`` the record's
        broker timestamp, against which event times are checked (if known); ``partition``
        the record's partition, checked against the one Kafka's default partitioner gives
        its key (if known): a stream's records and state must share a partition."""
        decoder = self._decoders[topic]
        if value is None:
            raise RejectedInput("malformed_json", "record has no value")
        if len(value) > self.max_message_bytes:
            raise RejectedInput(
                "oversized", f"{len(value)} bytes exceeds the limit of {self.max_message_bytes}"
            )
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RejectedInput("malformed_json", str(exc)) from None
        if not isinstance(doc, dict):
            raise RejectedInput("not_an_object", f"top-level JSON is a {type(doc).__name__}")
        version = doc.get("schema_version")
        if type(version) is not int or version not in decoder.versions:
            raise RejectedInput(
                "unknown_version",
                f"schema_version {version!r} is not one of {sorted(decoder.versions)}",
            )
        check_event_times(doc, record_ts_ms)
        try:
            decoder.validate(doc)
        except fastjsonschema.JsonSchemaException as exc:
            raise RejectedInput("schema_violation", exc.message) from None
        if key is None or key != doc["stream_id"].encode():
            raise RejectedInput("key_mismatch", "record key must equal the value's stream_id")
        if (partition is not None and self.partition_of is not None
                and partition != (expected := self.partition_of(key, decoder.partitions))):
            raise RejectedInput("wrong_partition", (
                f"the key belongs on partition {expected} (Kafka's default partitioner, murmur2), the record "
                f"is on {partition}: the producer uses another partitioner (librdkafka's default is CRC32; "
                "set partitioner=murmur2_random)"))
        return decoder.build(doc)


def _event_times(doc: dict[str, Any]) -> list[tuple[str, int]]:
    times = [("ts_ms", doc["ts_ms"])] if type(doc.get("ts_ms")) is int else []
    frames = doc.get("frames")
    if type(frames) is list:
        times += [(f"frames[{i}].ts_ms", f["ts_ms"]) for i, f in enumerate(frames[:64])
                  if type(f) is dict and type(f.get("ts_ms")) is int]
    return times


def check_event_times(doc: dict[str, Any], record_ts_ms: int | None = None) -> None:
    """Raise ``implausible_time`` for an event time outside the contract's bounds or too far
    ahead of the record's broker time, naming a probable unit mistake."""
    latest = LATEST_MS if record_ts_ms is None else min(LATEST_MS, record_ts_ms + MAX_FUTURE_SKEW_MS)
    ts = doc.get("ts_ms")
    frames = doc.get("frames")
    if (ts is None or (type(ts) is int and EARLIEST_MS <= ts <= latest)) and (frames is None or (
            type(frames) is list and all(type(f) is not dict or type(t := f.get("ts_ms")) is not int
                                         or EARLIEST_MS <= t <= latest for f in frames[:64]))):
        return  # the common case, without building the list below
    for where, ts in _event_times(doc):
        if EARLIEST_MS <= ts <= LATEST_MS and (record_ts_ms is None or ts <= record_ts_ms + MAX_FUTURE_SKEW_MS):
            continue
        if EARLIEST_MS <= ts * 1000 <= LATEST_MS:
            unit = " (looks like seconds, not milliseconds)"
        elif EARLIEST_MS <= ts // 1000 <= LATEST_MS:
            unit = " (looks like microseconds, not milliseconds)"
        elif EARLIEST_MS <= ts // 1_000_000 <= LATEST_MS:
            unit = " (looks like nanoseconds, not milliseconds)"
        else:
            unit = ""
        if EARLIEST_MS <= ts <= LATEST_MS:
            ahead_s = (ts - (record_ts_ms or 0)) / 1000
            raise RejectedInput("implausible_time", f"{where} is {ahead_s:.0f} s ahead of the record's broker "
                                f"time (at most {MAX_FUTURE_SKEW_MS // 1000} s of producer clock skew)")
        raise RejectedInput("implausible_time", f"{where} {ts} is outside 2000-01-01..2100-01-01 in epoch "
                            f"milliseconds{unit}")


def decode_frame_matches(value: bytes | None) -> tuple[FrameMatches, SourceRecord]:
    """A ``streamsafe.frame-matches`` record back: the screened frames and where they came from.
    The pre-filter wrote it, so it is not validated against the schema again; a record this
    version cannot read is rejected (``malformed_json`` / ``schema_violation``), never guessed at."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("malformed_json", str(exc)) from None
    try:
        if doc["schema_version"] not in (1, 2):
            raise RejectedInput("unknown_version", f"schema_version {doc['schema_version']!r} is not 1 or 2")
        source = doc["source"]
        screened = FrameMatches(doc["stream_id"], tuple(Frame(**f) for f in doc["frames"]),
                                tuple(Match(**m) for m in doc["matches"]))
        return screened, SourceRecord(source["topic"], source["partition"], source["offset"],
                                      source["timestamp_ms"])
    except (KeyError, TypeError) as exc:
        raise RejectedInput("schema_violation", f"not a frame-matches record: {type(exc).__name__} {exc}") from None
