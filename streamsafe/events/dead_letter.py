"""Encoding of dead-letter records: the original bytes, where they came from, and why.

A dead letter must always be sendable, whatever arrived: the original key and value
are kept up to :data:`MAX_ORIGINAL_BYTES` / :data:`MAX_KEY_BYTES` (base64 grows them by
a third), with their full size and SHA-256, and ``original_truncated`` says when the
bytes kept are only a prefix. The detail is cut to :data:`MAX_DETAIL_CHARS`. So an
encoded dead letter stays under ~180 KiB, far below the producer's and the broker's
1 MB limits (a 1 MB input record once put a worker in a crash loop here).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass

import orjson

__all__ = ["DEAD_LETTER_REASONS", "MAX_ORIGINAL_BYTES", "DeadLetter", "SourceRecord"]

#: every reason a record can be dead-lettered for, in the order the checks run
DEAD_LETTER_REASONS = (
    "oversized",
    "malformed_json",
    "not_an_object",
    "unknown_version",
    "implausible_time",
    "schema_violation",
    "key_mismatch",
    "wrong_partition",
    "invalid_policy",
    "invalid_bank_entry",
    "bad_signature",
    "no_open_escalation",
    "processing_error",
)
MAX_ORIGINAL_BYTES = 128 * 1024
MAX_KEY_BYTES = 1024
MAX_DETAIL_CHARS = 1000


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

    def encode(self, now_ms: int | None = None, *, keep_bytes: int = MAX_ORIGINAL_BYTES) -> bytes:
        """The dead-letter record; ``keep_bytes`` bounds the original value kept (0: none)."""
        value = self.value or b""
        detail = self.detail if len(self.detail) <= MAX_DETAIL_CHARS else self.detail[:MAX_DETAIL_CHARS] + "…"
        return orjson.dumps(
            {
                "schema_version": 1,
                "reason": self.reason,
                "detail": detail,
                "source": {
                    "topic": self.source.topic,
                    "partition": self.source.partition,
                    "offset": self.source.offset,
                    "timestamp_ms": self.source.timestamp_ms,
                },
                "original_key_b64": _b64(self.key, MAX_KEY_BYTES),
                "original_value_b64": _b64(self.value, keep_bytes),
                "original_size": len(value),
                "original_sha256": hashlib.sha256(value).hexdigest() if self.value is not None else None,
                "original_truncated": len(value) > keep_bytes or len(self.key or b"") > MAX_KEY_BYTES,
                "dead_lettered_at_ms": now_ms if now_ms is not None else int(time.time() * 1000),
            }
        )


def _b64(data: bytes | None, limit: int) -> str | None:
    return None if data is None else base64.b64encode(data[:limit]).decode()
