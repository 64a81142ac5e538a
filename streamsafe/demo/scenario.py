"""Synthetic live-stream traffic, deterministic for a seed.

A scenario is a list of :class:`ScenarioEvent`. Values are dicts whose event
times are stamped when they are sent (so latency is measured from a real
send), or raw bytes for deliberately malformed input.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS

__all__ = ["Scenario", "ScenarioEvent", "build_demo_scenario", "known_hashes", "stamp"]


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    topic: str
    key: bytes | None
    value: dict[str, Any] | bytes
    note: str = ""


@dataclass(slots=True)
class Scenario:
    events: list[ScenarioEvent] = field(default_factory=list)
    streams: set[str] = field(default_factory=set)
    expected_blocks: set[str] = field(default_factory=set)
    expected_escalations: set[str] = field(default_factory=set)
    malformed: int = 0


def known_hashes(seed: int = 7, count: int = 3) -> list[tuple[str, str]]:
    """(md5, sha256) pairs standing in for a bank of known material."""
    return [
        (hashlib.md5(f"known-{seed}-{i}".encode()).hexdigest(),
         hashlib.sha256(f"known-{seed}-{i}".encode()).hexdigest())
        for i in range(count)
    ]


def _frame(rng: random.Random, seq: int, md5: str | None = None, sha: str | None = None) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts_ms": 0,
        "pdq": f"{rng.getrandbits(256):064x}",
        "pdq_quality": rng.randint(60, 100),
        "md5": md5 or f"{rng.getrandbits(128):032x}",
        "sha256": sha or f"{rng.getrandbits(256):064x}",
    }


def _stream_events(
    rng: random.Random, stream_id: str, frames: int, scores: list[float], classifier: str,
    known: tuple[str, str] | None = None, known_from: int = 0,
) -> Iterator[ScenarioEvent]:
    key = stream_id.encode()
    yield ScenarioEvent(METADATA, key, {
        "schema_version": 1, "event": "stream.started", "stream_id": stream_id, "ts_ms": 0,
        "broadcaster_id": f"acct-{rng.randint(1000, 99999)}", "account_age_days": rng.randint(0, 2000),
        "age_verified": rng.random() < 0.5, "viewer_count": rng.randint(0, 500),
        "visibility": rng.choice(["public", "public", "private"]), "language": "en", "region": "GB",
    })
    for seq in range(frames):
        hit = known if known is not None and seq >= known_from else None
        frame = _frame(rng, seq, *(hit or (None, None)))
        value = {"schema_version": 1, "stream_id": stream_id, "frames": [frame]}
        yield ScenarioEvent(FRAME_HASHES, key, value, "known hash" if hit else "")
        if seq < len(scores):
            yield ScenarioEvent(CLASSIFIER_SIGNALS, key, {
                "schema_version": 1, "stream_id": stream_id, "classifier": classifier,
                "model_version": f"{classifier}-2026.10", "score": scores[seq], "ts_ms": 0,
                "evidence": {"frame_seq": seq},
            })
    if rng.random() < 0.2:
        yield ScenarioEvent(USER_REPORTS, key, {
            "schema_version": 1, "stream_id": stream_id, "category": "other", "ts_ms": 0,
            "reporter_id": f"acct-{rng.randint(1000, 99999)}",
        })
    yield ScenarioEvent(METADATA, key, {
        "schema_version": 1, "event": "stream.ended", "stream_id": stream_id, "ts_ms": 0,
        "broadcaster_id": "acct-0",
    })


def build_demo_scenario(
    seed: int = 7, benign: int = 36, known_hash_streams: int = 2, rising_streams: int = 2,
    frames_per_stream: int = 6,
) -> Scenario:
    """Benign streams, streams that hit a known hash (repeatedly), streams whose
    classifier scores rise past the threshold, and malformed input; interleaved."""
    rng = random.Random(seed)
    scenario = Scenario()
    per_stream: list[list[ScenarioEvent]] = []
    known = known_hashes(seed, known_hash_streams)
    for i in range(benign):
        sid = f"st-benign-{i:03d}"
        scores = [round(rng.uniform(0.01, 0.4), 3) for _ in range(3)]
        per_stream.append(list(_stream_events(rng, sid, frames_per_stream, scores, "nudity")))
        scenario.streams.add(sid)
    for i in range(known_hash_streams):
        sid = f"st-knownhash-{i:03d}"
        per_stream.append(list(_stream_events(rng, sid, frames_per_stream, [], "nudity",
                                              known=known[i], known_from=2)))
        scenario.streams.add(sid)
        scenario.expected_blocks.add(sid)
    for i in range(rising_streams):
        sid = f"st-rising-{i:03d}"
        scores = [0.12, 0.35, 0.61, 0.83, 0.97, 0.99][:frames_per_stream]
        per_stream.append(list(_stream_events(rng, sid, frames_per_stream, scores, "csam")))
        scenario.streams.add(sid)
        scenario.expected_escalations.add(sid)
    # Round-robin the streams so they are live at the same time, as on a platform.
    while any(per_stream):
        for events in per_stream:
            if events:
                scenario.events.append(events.pop(0))
    bad = [
        ScenarioEvent(FRAME_HASHES, b"st-bad-1", b'{"schema_version": 1, "stream_id": ', "malformed JSON"),
        ScenarioEvent(CLASSIFIER_SIGNALS, b"st-bad-2", {
            "schema_version": 1, "stream_id": "st-bad-2", "classifier": "nudity",
            "model_version": "n", "score": 7.5, "ts_ms": 0}, "schema violation"),
        ScenarioEvent(USER_REPORTS, b"st-bad-3", {
            "schema_version": 9, "stream_id": "st-bad-3", "category": "other", "ts_ms": 0,
            "reporter_id": "x"}, "unknown version"),
        ScenarioEvent(FRAME_HASHES, b"st-bad-4", b'{"pad": "' + b"x" * 70_000 + b'"}', "oversized"),
    ]
    for i, event in enumerate(bad):
        scenario.events.insert((i + 1) * len(scenario.events) // (len(bad) + 1), event)
    scenario.malformed = len(bad)
    return scenario


def stamp(value: dict[str, Any] | bytes, now_ms: int) -> dict[str, Any] | bytes:
    """Set every event time in ``value`` to ``now_ms`` (frames a few ms apart)."""
    if isinstance(value, bytes):
        return value
    out = dict(value)
    if "ts_ms" in out:
        out["ts_ms"] = now_ms
    if "frames" in out:
        out["frames"] = [{**f, "ts_ms": now_ms} for f in out["frames"]]
    return out
