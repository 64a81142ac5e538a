"""Recorded traffic: JSONL with one record a line,

    {"topic": "livestream.frame-hashes", "key": "st-1", "value": {...}}

(``value`` null is a tombstone), and, in labelled scenario sets, one line per stream

    {"label": {"stream_id": "st-1", "harmful": true, "expected_action": "block",
               "kind": "known_hash", "harm_start_ms": 1790000000000}}

Event times inside the values are kept as recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamsafe.errors import ConfigError
from streamsafe.events.contract import load_contract

__all__ = ["AccountLabel", "Label", "RecordedEvent", "Recording", "read_recording", "write_recording"]

EXPECTED_ACTIONS = ("block", "escalate", "none")


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    topic: str
    key: str | None
    value: dict[str, Any] | None

    def event_ts_ms(self) -> int | None:
        """The record's event time (a frame batch's latest frame), or None when it has none;
        a malformed value is the worker's to reject, not a reason to stop the replay."""
        if not self.value:
            return None
        if "frames" in self.value:
            frames = self.value["frames"]
            times = [f.get("ts_ms") for f in frames if isinstance(f, dict)] if isinstance(frames, list) else []
            return max((ts for ts in times if _is_int(ts)), default=None)
        ts = self.value.get("ts_ms")
        return ts if _is_int(ts) else None

    def to_line(self) -> bytes:
        return orjson.dumps({"topic": self.topic, "key": self.key, "value": self.value})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Label:
    stream_id: str
    harmful: bool
    expected_action: str
    kind: str = ""
    harm_start_ms: int | None = None

    def to_line(self) -> bytes:
        label: dict[str, Any] = {"stream_id": self.stream_id, "harmful": self.harmful,
                                 "expected_action": self.expected_action}
        if self.kind:
            label["kind"] = self.kind
        if self.harm_start_ms is not None:
            label["harm_start_ms"] = self.harm_start_ms
        return orjson.dumps({"label": label})


@dataclass(frozen=True, slots=True)
class AccountLabel:
    """Ground truth about an account across its streams (``{"label": {"account_id", ...}}``):
    ``escalate`` when StreamSafe should act on what the account did across streams."""

    account_id: str
    harmful: bool
    expected_action: str
    kind: str = ""

    def to_line(self) -> bytes:
        label: dict[str, Any] = {"account_id": self.account_id, "harmful": self.harmful,
                                 "expected_action": self.expected_action}
        if self.kind:
            label["kind"] = self.kind
        return orjson.dumps({"label": label})


@dataclass
class Recording:
    events: list[RecordedEvent] = field(default_factory=list)
    labels: dict[str, Label] = field(default_factory=dict)
    account_labels: dict[str, AccountLabel] = field(default_factory=dict)


def read_recording(path: Path) -> Recording:
    """Read and check a recording; every bad line is reported (by number) in one error."""
    topics = set(load_contract())
    recording = Recording()
    problems: list[str] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if isinstance(doc, dict) and "label" in doc:
            label = doc["label"]
            if isinstance(label, dict) and "account_id" in label and "stream_id" not in label:
                if not isinstance(label["account_id"], str) or not isinstance(label.get("harmful"), bool) \
                        or label.get("expected_action", "none") not in EXPECTED_ACTIONS:
                    problems.append(f"line {number}: an account label needs account_id, harmful (bool) and "
                                    f"expected_action in {EXPECTED_ACTIONS}")
                    continue
                recording.account_labels[label["account_id"]] = AccountLabel(
                    label["account_id"], label["harmful"], label.get("expected_action", "none"),
                    str(label.get("kind", "")))
                continue
            if not isinstance(label, dict) or not isinstance(label.get("stream_id"), str) \
                    or not isinstance(label.get("harmful"), bool) \
                    or label.get("expected_action", "none") not in EXPECTED_ACTIONS:
                problems.append(f"line {number}: a label needs stream_id, harmful (bool) and "
                                f"expected_action in {EXPECTED_ACTIONS}")
                continue
            recording.labels[label["stream_id"]] = Label(
                label["stream_id"], label["harmful"], label.get("expected_action", "none"),
                str(label.get("kind", "")), label.get("harm_start_ms"))
            continue
        if not isinstance(doc, dict) or doc.get("topic") not in topics:
            problems.append(f"line {number}: needs a topic from topics/ (got {doc.get('topic')!r})"
                            if isinstance(doc, dict) else f"line {number}: not an object")
            continue
        value = doc.get("value")
        if value is not None and not isinstance(value, dict):
            problems.append(f"line {number}: value must be an object or null")
            continue
        key = doc.get("key")
        recording.events.append(RecordedEvent(doc["topic"], None if key is None else str(key), value))
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ConfigError(f"{path}: {shown}")
    return recording


def write_recording(path: Path, events: Iterable[RecordedEvent], labels: Iterable[Label | AccountLabel] = ()) -> int:
    count = 0
    with path.open("wb") as out:
        for event in events:
            out.write(event.to_line() + b"\n")
            count += 1
        for label in labels:
            out.write(label.to_line() + b"\n")
    return count
