"""Decision latency through a worker, and the floor beside it, at a fixed rate of live traffic
(used by ``bench/worker.py``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import ConsumerRecord
from floor import PROBE_PREFIX
from floor import READY as FLOOR_READY
from proc import busy_fraction, cpu_seconds, host_jiffies
from workloads import workload

from streamsafe import clients
from streamsafe.brokers.base import stop_process
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.bank_publish import publish_entries
from streamsafe.control.broadcast import stop_consumer
from streamsafe.demo.scenario import known_hashes
from streamsafe.events.contract import ACTIONS, FRAME_HASHES, load_contract
from streamsafe.events.models import BankEntry
from streamsafe.runner import spawn_worker, worker_environment
from streamsafe.settings import Settings

FLOOR_TOPIC = "bench.floor"  # where the floor echoes probes (under the run's topic prefix)


@dataclass(frozen=True, slots=True)
class Timed:
    """One latency run: the probes' latencies, and the CPU it took while the traffic was sent."""

    latencies_ms: list[float]  # sorted
    host_busy: float | None  # the share of the host's CPU time that was busy (every process)
    cpu_us_per_msg: float | None  # the process under test (worker or floor), per message sent
    sender_cores: float | None = None  # the traffic's sender (this process): CPU seconds per second


async def timed_probes(settings: Settings, rate: float, seconds: float, watch: str,
                       probe_of: Callable[[ConsumerRecord], str | None], pid: int, warmup_s: float = 3.0) -> Timed:
    """Mixed traffic at ``rate`` msgs/s; every 250th message a known-hash frame on a new
    stream ``lat-<i>`` (far more decisions than live traffic has), timed from its send
    until ``probe_of`` finds its stream in a record of ``watch``. Messages due are sent
    in small batches, as a platform's producer would (a per-message ``await`` costs this
    2-core box most of a core); probes sent in the first ``warmup_s`` seconds are not
    counted. While the traffic is sent, the host's busy share, the CPU of ``pid`` (the
    process under test) and this sender's own are measured too."""
    consumer = clients.consumer(settings, settings.topic_name(watch), fetch_max_wait_ms=5)
    producer = clients.producer(settings, acks=1, linger_ms=1)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    await consumer.start()
    await producer.start()
    try:
        background = workload("mix", int(rate * seconds), 2000, seed=99)
        known_md5 = known_hashes()[0][0]

        async def watcher() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        stream_id = probe_of(record)
                        if stream_id in sent:
                            got.setdefault(stream_id, now)

        watching = asyncio.create_task(watcher())
        await asyncio.sleep(1.0)
        start = time.perf_counter()
        host_before, cpu_before, own_before = host_jiffies(), cpu_seconds(pid), cpu_seconds(os.getpid())
        next_i = 0
        while next_i < len(background):
            now = time.perf_counter()
            due = min(len(background), int((now - start) * rate) + 1)
            for i in range(next_i, due):
                topic, key, value = background[i]
                if i % 250 == 0:
                    sid = f"{PROBE_PREFIX.decode()}{i}"
                    value = orjson.dumps({"schema_version": 1, "stream_id": sid, "frames": [
                        {"seq": 1, "ts_ms": int(time.time() * 1000), "md5": known_md5}]})
                    topic, key = FRAME_HASHES, sid.encode()
                    if now - start >= warmup_s:
                        sent[sid] = time.perf_counter()
                await producer.send(settings.topic_name(topic), value, key=key)
            next_i = due
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        host_busy, cpu = busy_fraction(host_before, host_jiffies()), cpu_seconds(pid) - cpu_before
        own = cpu_seconds(os.getpid()) - own_before
        deadline = time.perf_counter() + 10
        while len(got) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        watching.cancel()
        return Timed(sorted((got[s] - sent[s]) * 1000 for s in got), host_busy, cpu / len(background) * 1e6,
                     own / elapsed)
    finally:
        await producer.stop()
        await stop_consumer(consumer)


async def fresh_topics(settings: Settings, entries: list[BankEntry]) -> Settings:
    settings = settings.replace(topic_prefix=f"bench-lat-{uuid.uuid4().hex[:6]}.")
    await apply_topics(settings, load_contract())
    await publish_entries(settings, entries)
    return settings


def blocked_stream(record: ConsumerRecord) -> str | None:
    decision = orjson.loads(record.value)
    return decision["stream_id"] if decision["action"] == "block" else None


async def decision_latency(settings: Settings, rate: float, seconds: float, workdir: Path,
                           entries: list[BankEntry], prefilter: bool = True) -> Timed:
    """Probe frame send -> its block readable on enforcement.actions, through a worker,
    on fresh topics (no backlog to drain first)."""
    settings = await fresh_topics(settings, entries)
    app_id = f"bench-latency-{uuid.uuid4().hex[:6]}"
    # the worker as deployed: its default commit interval and log level
    worker = spawn_worker(settings.replace(app_id=app_id, data_dir=workdir / app_id, log_level="info",
                                           prefilter=prefilter, commit_interval_s=Settings().commit_interval_s),
                          workdir / f"{app_id}.log")
    try:
        worker.wait_ready(120)
        return await timed_probes(settings, rate, seconds, ACTIONS, blocked_stream, worker.process.pid)
    finally:
        worker.stop()


async def floor_latency(settings: Settings, rate: float, seconds: float, workdir: Path,
                        entries: list[BankEntry]) -> Timed:
    """Probe frame send -> the floor's echo readable: ``bench/floor.py``, a plain aiokafka
    consumer that produces one small record per probe at once (the two broker hops a
    decision takes, none of the work), under the same traffic."""
    settings = await fresh_topics(settings, entries)
    target = settings.topic_name(FLOOR_TOPIC)
    await apply_topics(settings, {}, internal={target: load_contract()[ACTIONS]})
    log_path = workdir / f"floor-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        floor = subprocess.Popen([sys.executable, str(Path(__file__).with_name("floor.py")), target],
                                 env=worker_environment(settings), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while FLOOR_READY not in log_path.read_text(errors="replace"):
            if floor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floor consumer did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.05)
        return await timed_probes(settings, rate, seconds, FLOOR_TOPIC,
                                  lambda record: record.key.decode() if record.key else None, floor.pid)
    finally:
        stop_process(floor, 10.0)


