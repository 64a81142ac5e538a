"""Worker throughput next to a raw aiokafka consumer, measured in the same run.

    python bench/worker.py [--messages 60000] [--broker-kind kafka|tansu] [--json]

Produces a realistic mix (frame hashes, classifier signals, metadata, user
reports; a few known-hash frames) to the input topics, then measures

* raw: an aiokafka group consumer reading the same topics (the floor of what any
  Kafka consumer in Python pays), and
* worker: a `streamsafe worker` process, from "ready" until its committed offsets
  cover every message (commit interval shortened to 0.2 s for the measurement),
  with the worker's CPU time from /proc.

Prints msgs/s for each and their ratio; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamsafe.brokers.local import start_broker
from streamsafe.brokers.topics import apply_topics
from streamsafe.demo.scenario import known_hashes
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    INPUT_TOPICS,
    METADATA,
    USER_REPORTS,
    load_contract,
)
from streamsafe.settings import Settings

CLK_TCK = os.sysconf("SC_CLK_TCK")


def mixed_messages(n: int, streams: int, seed: int = 11) -> list[tuple[str, bytes, bytes]]:
    """~70% single-frame hash messages, 20% classifier signals, 7% metadata, 3% reports."""
    rng = random.Random(seed)
    known_md5 = known_hashes()[0][0]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        sid = f"st-{rng.randrange(streams):06d}"
        roll = rng.random()
        if roll < 0.70:
            md5 = known_md5 if rng.random() < 0.0005 else f"{rng.getrandbits(128):032x}"
            value = {"schema_version": 1, "stream_id": sid, "frames": [{
                "seq": i, "ts_ms": now, "pdq": f"{rng.getrandbits(256):064x}", "pdq_quality": 90,
                "md5": md5, "sha256": f"{rng.getrandbits(256):064x}"}]}
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
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20,
                                max_batch_size=256 * 1024, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_name(t), v, key=k) for t, k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consumer_rate(settings: Settings, n: int) -> float:
    consumer = AIOKafkaConsumer(*(settings.topic_name(t) for t in INPUT_TOPICS),
                                bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", max_poll_records=5000,
                                session_timeout_ms=int(settings.session_timeout_s * 1000),
                                rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000))
    await consumer.start()
    try:
        seen, started, first = 0, 0.0, 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            count = sum(len(m) for m in batch.values())
            if count and not first:
                # the group has joined and data flows: measure from here, without this batch
                started, first = time.perf_counter(), count
            seen += count
        return (n - first) / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def committed_total(admin: AIOKafkaAdminClient, group: str, topics: set[str]) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic in topics and meta.offset > 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def worker_rate(settings: Settings, n: int, hash_list: Path, workdir: Path) -> tuple[float, float]:
    env = {**os.environ, "STREAMSAFE_BROKER": settings.broker_url,
           "STREAMSAFE_TOPIC_PREFIX": settings.topic_prefix, "STREAMSAFE_APP_ID": settings.app_id,
           "STREAMSAFE_HASH_LIST": str(hash_list), "STREAMSAFE_COMMIT_INTERVAL_S": "0.2",
           "STREAMSAFE_DATA_DIR": str(workdir / "data"), "STREAMSAFE_LOG_LEVEL": "warning",
           "STREAMSAFE_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
           "STREAMSAFE_REBALANCE_TIMEOUT_S": str(settings.rebalance_timeout_s),
           "STREAMSAFE_HTTP_PORT": "0"}
    log_path = workdir / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamsafe", "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    topics = {settings.topic_name(t) for t in INPUT_TOPICS}
    try:
        started = cpu_start = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log_path.read_text()[-3000:]}")
            done = await committed_total(admin, settings.app_id, topics)
            if started is None and done > 0:
                # first commit: the worker is consuming; measure from here
                started, cpu_start, base = time.perf_counter(), cpu_seconds(proc.pid), done
            if done >= n and started is not None:
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(proc.pid) - cpu_start
                processed = n - base
                return processed / elapsed, cpu / max(processed, 1) * 1e6
            await asyncio.sleep(0.05)
        raise RuntimeError("worker did not finish in time")
    finally:
        await admin.close()
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--streams", type=int, default=2_000)
    parser.add_argument("--broker-kind", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="streamsafe-bench-"))
    hash_list = workdir / "known.txt"
    hash_list.write_text("".join(f"md5:{m}\n" for m, _ in known_hashes()))
    messages = mixed_messages(args.messages, args.streams)
    with start_broker(args.broker_kind, workdir / "broker") as broker:
        tansu = args.broker_kind == "tansu"
        settings = Settings(broker_url=broker.url, topic_prefix="bench.", app_id="bench-worker",
                            session_timeout_s=2.0 if tansu else 10.0,
                            rebalance_timeout_s=2.0 if tansu else 10.0)
        asyncio.run(apply_topics(settings, load_contract()))
        asyncio.run(produce(settings, messages))
        # median of three: one raw pass takes well under a second, so noise dominates a single one
        raw = statistics.median(asyncio.run(raw_consumer_rate(settings, args.messages)) for _ in range(3))
        worker, cpu_us = asyncio.run(worker_rate(settings, args.messages, hash_list, workdir))
    result = {"broker": broker.kind, "messages": args.messages,
              "worker_msgs_per_s": round(worker), "worker_cpu_us_per_msg": round(cpu_us, 1),
              "raw_msgs_per_s": round(raw), "ratio": round(worker / raw, 4)}
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"broker: {result['broker']}, {args.messages} mixed messages")
        print(f"raw aiokafka consumer : {raw:>10,.0f} msgs/s")
        print(f"streamsafe worker     : {worker:>10,.0f} msgs/s  ({cpu_us:.0f} µs CPU/msg)")
        print(f"ratio worker/raw      : {worker / raw:>10.3f}")


if __name__ == "__main__":
    main()
