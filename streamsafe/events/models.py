"""Typed input events, built from messages that already passed the contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClassifierSignal", "Frame", "FrameBatch", "StreamMetadata", "UserReport"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled frame: its place in the stream and whichever hashes the producer sent."""

    seq: int
    ts_ms: int
    pdq: str | None = None
    pdq_quality: int | None = None
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class FrameBatch:
    stream_id: str
    frames: tuple[Frame, ...]

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> FrameBatch:
        return cls(value["stream_id"], tuple(Frame(**f) for f in value["frames"]))


@dataclass(frozen=True, slots=True)
class ClassifierSignal:
    stream_id: str
    classifier: str
    model_version: str
    score: float
    ts_ms: int
    frame_seq: int | None = None
    chat_message_id: str | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ClassifierSignal:
        evidence = value.get("evidence") or {}
        return cls(
            value["stream_id"],
            value["classifier"],
            value["model_version"],
            float(value["score"]),
            value["ts_ms"],
            evidence.get("frame_seq"),
            evidence.get("chat_message_id"),
        )


@dataclass(frozen=True, slots=True)
class UserReport:
    stream_id: str
    category: str
    ts_ms: int
    reporter_id: str

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> UserReport:
        return cls(value["stream_id"], value["category"], value["ts_ms"], value["reporter_id"])


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    stream_id: str
    event: str
    ts_ms: int
    broadcaster_id: str
    account_age_days: int | None = None
    age_verified: bool | None = None
    viewer_count: int | None = None
    visibility: str | None = None
    language: str | None = None
    region: str | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StreamMetadata:
        fields = {k: v for k, v in value.items() if k != "schema_version"}
        return cls(**fields)
