"""Bytes on the wire for every record StreamSafe writes, in one place.

Records are JSON objects (UTF-8, orjson) carrying ``schema_version``; the layout of
each is in its topic's file under ``topics/``. Builders of a record's fields live
with the record's type (a decision's in ``policy/decisions.py``, a report's in
``review/reports.py``); turning fields into bytes happens here, so one encoder and
one set of options serve every topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.models import Frame, FrameMatches, Match, TimerTick

__all__ = ["encode_frame_matches", "encode_policy_message", "encode_record", "encode_tick", "frame_record"]


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A record's JSON bytes."""
    return orjson.dumps(record)


def encode_tick(tick: TimerTick) -> bytes:
    return orjson.dumps(tick.to_dict())


def encode_policy_message(document: Mapping[str, object], published_by: str, now_ms: int) -> bytes:
    """A ``streamsafe.policy`` record: the policy document and who published it when."""
    return orjson.dumps({"schema_version": 1, "policy": document, "published_by": published_by,
                         "published_at_ms": now_ms})


def frame_record(frame: Frame) -> dict[str, Any]:
    """A frame as ``livestream.frame-hashes`` carries it (hashes only where present)."""
    out: dict[str, Any] = {"seq": frame.seq, "ts_ms": frame.ts_ms}
    for name in ("pdq", "pdq_quality", "md5", "sha256"):
        value = getattr(frame, name)
        if value is not None:
            out[name] = value
    return out


def _match_record(m: Match) -> dict[str, Any]:
    record = {"bank": m.bank, "entry_id": m.entry_id, "signal_type": m.signal_type, "distance": m.distance,
              "frame_seq": m.frame_seq, "frame_ts_ms": m.frame_ts_ms, "quality": m.quality}
    if m.transform is not None:
        record["transform"] = m.transform
    return record


def encode_frame_matches(screened: FrameMatches, source: SourceRecord) -> bytes:
    """A ``streamsafe.frame-matches`` record: what the frame pre-filter decoded and matched
    (version 2 when a match came through a dihedral variant and names its transform)."""
    return orjson.dumps({
        "schema_version": 2 if any(m.transform is not None for m in screened.matches) else 1,
        "stream_id": screened.stream_id,
        "frames": [frame_record(f) for f in screened.frames],
        "matches": [_match_record(m) for m in screened.matches],
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset,
                   "timestamp_ms": source.timestamp_ms},
    })
