"""Decode and validate input messages against the contract in ``topics/``.

Order of checks, each with its own dead-letter reason:

1. ``oversized``        value larger than ``max_message_bytes``
2. ``malformed_json``   not JSON (orjson)
3. ``not_an_object``    JSON, but not an object
4. ``unknown_version``  ``schema_version`` missing, not an integer, or not one the contract lists
5. ``schema_violation`` fails the topic's JSON Schema (compiled once with fastjsonschema)
6. ``key_mismatch``     record key absent or not equal to the value's ``stream_id``

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
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    METADATA,
    REVIEW_VERDICTS,
    TIMERS,
    USER_REPORTS,
    TopicSpec,
)
from streamsafe.events.models import (
    ClassifierSignal,
    FrameBatch,
    ReviewVerdict,
    StreamMetadata,
    TimerTick,
    UserReport,
)

__all__ = ["DEAD_LETTER_REASONS", "InputDecoder", "InputEvent"]

DEAD_LETTER_REASONS = (
    "oversized",
    "malformed_json",
    "not_an_object",
    "unknown_version",
    "schema_violation",
    "key_mismatch",
)

InputEvent = FrameBatch | ClassifierSignal | UserReport | StreamMetadata | ReviewVerdict | TimerTick

_BUILDERS: Mapping[str, Callable[[dict[str, Any]], InputEvent]] = {
    FRAME_HASHES: FrameBatch.from_dict,
    CLASSIFIER_SIGNALS: ClassifierSignal.from_dict,
    USER_REPORTS: UserReport.from_dict,
    METADATA: StreamMetadata.from_dict,
    REVIEW_VERDICTS: ReviewVerdict.from_dict,
    TIMERS: TimerTick.from_dict,
}


@dataclass(frozen=True, slots=True)
class _TopicDecoder:
    validate: Callable[[Any], Any]
    versions: frozenset[int]
    build: Callable[[dict[str, Any]], InputEvent]


class InputDecoder:
    """Turns raw (key, value) bytes of an input topic into a typed event or raises
    :class:`RejectedInput` with the dead-letter reason."""

    def __init__(self, contract: Mapping[str, TopicSpec], max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._decoders = {
            name: _TopicDecoder(
                fastjsonschema.compile(dict(contract[name].schema)),
                frozenset(contract[name].schema_versions),
                build,
            )
            for name, build in _BUILDERS.items()
        }

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> InputEvent:
        """``topic`` is the contract name (without prefix)."""
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
        try:
            decoder.validate(doc)
        except fastjsonschema.JsonSchemaException as exc:
            raise RejectedInput("schema_violation", exc.message) from None
        if key is None or key != doc["stream_id"].encode():
            raise RejectedInput("key_mismatch", "record key must equal the value's stream_id")
        return decoder.build(doc)
