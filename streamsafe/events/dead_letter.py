"""Encoding of dead-letter records: the original bytes, where they came from, and why."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import orjson

__all__ = ["DeadLetter", "SourceRecord"]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where an input record came from on the broker."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    source: SourceRecord
    key: bytes | None
    value: bytes | None

    def encode(self, now_ms: int | None = None) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "reason": self.reason,
                "detail": self.detail,
                "source": {
                    "topic": self.source.topic,
                    "partition": self.source.partition,
                    "offset": self.source.offset,
                    "timestamp_ms": self.source.timestamp_ms,
                },
                "original_key_b64": _b64(self.key),
                "original_value_b64": _b64(self.value),
                "original_size": len(self.value or b""),
                "dead_lettered_at_ms": now_ms if now_ms is not None else int(time.time() * 1000),
            }
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
