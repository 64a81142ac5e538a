"""The benchmarks' workloads: the realistic mix and frame-only messages, as (topic, key, value)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson

from streamsafe import clients
from streamsafe.demo.scenario import known_hashes
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS
from streamsafe.matching.dihedral import VARIANTS as VARIANTS_OF_A_FRAME
from streamsafe.settings import Settings


def frame(rng: random.Random, seq: int, now: int, md5: str | None = None, dihedral: bool = False) -> dict[str, Any]:
    record = {"seq": seq, "ts_ms": now, "pdq": f"{rng.getrandbits(256):064x}", "pdq_quality": 90,
              "md5": md5 or f"{rng.getrandbits(128):032x}", "sha256": f"{rng.getrandbits(256):064x}"}
    if dihedral:
        record["pdq_dihedral"] = {t: f"{rng.getrandbits(256):064x}" for t in VARIANTS_OF_A_FRAME}
    return record


def workload(kind: str, n: int, streams: int, seed: int = 11, prefix: str = "st-") -> list[tuple[str, bytes, bytes]]:
    """``n`` messages over ``streams`` stream ids ``<prefix>NNNNNN``."""
    rng = random.Random(seed)
    known_md5 = known_hashes()[0][0]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        sid = f"{prefix}{rng.randrange(streams):06d}"
        roll = rng.random() if kind == "mix" else 0.0
        if roll < 0.70:
            count = 5 if kind == "five" else 1
            md5 = known_md5 if rng.random() < 0.0005 else None
            dihedral = kind == "dihedral"
            value: dict[str, Any] = {"schema_version": 2 if dihedral else 1, "stream_id": sid, "frames": [
                frame(rng, i * 5 + k, now, md5, dihedral) for k in range(count)]}
            topic = FRAME_HASHES
        elif roll < 0.90:
            value = {"schema_version": 1, "stream_id": sid, "classifier": "nudity", "model_version": "n-1",
                     "score": round(rng.random() * 0.95, 3), "ts_ms": now}
            topic = CLASSIFIER_SIGNALS
        elif roll < 0.97:
            value = {"schema_version": 1, "event": "stream.updated", "stream_id": sid, "ts_ms": now,
                     "broadcaster_id": "acct-1", "viewer_count": rng.randrange(1000),
                     "visibility": rng.choice(["public", "private"])}
            topic = METADATA
        else:
            value = {"schema_version": 1, "stream_id": sid, "category": "other", "ts_ms": now,
                     "reporter_id": f"acct-{rng.randrange(10**6)}"}
            topic = USER_REPORTS
        out.append((topic, sid.encode(), orjson.dumps(value)))
    return out


async def produce(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = clients.producer(settings, acks=1, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_name(t), v, key=k) for t, k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


