"""Machinery for ``bench/drills.py``: worker slots with a crash supervisor, readiness, a
broker restart on the same ports and storage, topic tails, the canary sender, and the
resume / loss / duplicate arithmetic (see the figures in drills.py's docstring)."""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from drills_corpus import canary_md5

from streamsafe import clients
from streamsafe.brokers.base import BrokerProcess, free_port
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.control.signing import generate_key
from streamsafe.errors import StreamSafeError
from streamsafe.events.contract import FRAME_HASHES, TopicSpec
from streamsafe.runner import WorkerProcess, spawn_worker
from streamsafe.settings import Settings

PARTITIONS = 8
CANARIES = 50


def say(message: str) -> None:
    print(f"[drills {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def partition_of(key: bytes) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS  # aiokafka's DefaultPartitioner


def readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Context:
    broker: BrokerProcess
    workdir: Path
    hash_list: Path
    worker_env: dict[str, str]
    contract: dict[str, TopicSpec]
    spawned: list[WorkerProcess] = field(default_factory=list)


class World:
    """One drill's topics, consumer group and worker slots."""

    def __init__(self, ctx: Context, name: str) -> None:
        uid = uuid.uuid4().hex[:6]
        self.ctx, self.name, self.runs, self.crashes = ctx, name, 0, 0
        # bank updates are signed: the drill's own key, trusted by its workers
        key, public, _ = generate_key(ctx.workdir / f"{name}-{uid}-keys", "control")
        self.settings = Settings(broker_url=ctx.broker.url, topic_prefix=f"drill-{name}-{uid}.",
                                 replication_factor=1, trusted_control_keys=public, signing_key_file=key,
                                 app_id=f"drill-{name}-{uid}", hash_list=ctx.hash_list, http_host="127.0.0.1",
                                 log_format="text", data_dir=ctx.workdir / f"{name}-data")
        self.slots: dict[int, WorkerProcess] = {}
        self.logs: list[WorkerProcess] = []

    def topic(self, name: str) -> str:
        return self.settings.topic_name(name)

    def spawn(self, slot: int) -> WorkerProcess:
        self.runs += 1
        worker = spawn_worker(self.settings.replace(http_port=free_port()),
                              self.ctx.workdir / f"{self.name}-slot{slot}-run{self.runs}.log",
                              STREAMSAFE_INSTANCE_ID=f"drill-worker-{slot}", **self.ctx.worker_env)
        self.slots[slot] = worker
        self.logs.append(worker)
        self.ctx.spawned.append(worker)
        return worker

    def kill(self, slot: int) -> None:
        worker = self.slots.pop(slot)
        worker.process.kill()
        worker.process.wait(10)

    def supervise(self, budget: int = 8) -> None:
        """Restart slots whose worker exited on its own (a crash), at most ``budget`` times."""
        for slot, worker in list(self.slots.items()):
            if not worker.alive and self.crashes < budget:
                self.crashes += 1
                say(f"{self.name}: worker slot {slot} exited ({worker.process.returncode}); restarting it")
                self.spawn(slot)

    def alive(self) -> int:
        return sum(w.alive for w in self.slots.values())

    def errors(self) -> dict[str, Any]:
        """Whether a worker log has a traceback; its exception lines (digits as N) and worker crashes, counted."""
        found: Counter[str] = Counter()
        for worker in self.logs:
            text = worker.log()
            for block in text.split("Traceback (most recent call last):")[1:]:
                line = next((x for x in block.splitlines() if x and not x[0].isspace()), "?")
                if "CancelledError" not in line and "Producer not Running" not in line:
                    found[re.sub(r"\d+", "N", re.sub(r"[0-9a-f]{32,}", "<hex>", line))[:160]] += 1
            found["worker crashed"] += text.count("We experienced a crash!")
        return {"traceback": "Traceback (most recent" in "".join(w.log() for w in self.logs),
                "errors": dict(x for x in found.most_common(10) if x[1])}

    async def start(self, slots: range) -> None:
        await apply_topics(self.settings, self.ctx.contract)
        workers = [self.spawn(s) for s in slots]
        if None in await asyncio.gather(*(wait_ready(w, 240) for w in workers)):
            raise StreamSafeError(f"{self.name}: a worker did not become ready: {self.errors()}")

    async def close(self) -> None:
        for worker in self.slots.values():
            worker.process.terminate()
        await asyncio.gather(*(asyncio.to_thread(w.stop, 15) for w in self.slots.values()))


async def wait_ready(worker: WorkerProcess, timeout_s: float) -> float | None:
    """Wall time when the worker has logged ready and /readyz answers 200; None if it died or timed out."""
    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.to_thread(worker.wait_ready, timeout_s)
    except StreamSafeError:
        return None
    while time.monotonic() < deadline and worker.alive:
        if await asyncio.to_thread(readyz, worker.http_port):
            return time.time()
        await asyncio.sleep(0.1)
    return None


class Tail:
    """Reads one topic from the start in the background: (partition, timestamp s, key, decoded value)."""

    def __init__(self, world: World, topic: str) -> None:
        self.records: list[tuple[int, float, bytes | None, dict[str, Any]]] = []
        self.blocks: dict[str, list[tuple[float, bytes]]] = {}  # stream -> its block records (emit time, bytes)
        self.seen_at: dict[str, float] = {}  # stream -> wall time its first block was read here
        self.consumer = clients.consumer(world.settings, world.topic(topic), fetch_max_wait_ms=50)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tail:
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            try:
                batch = await self.consumer.getmany(timeout_ms=200)
            except Exception as exc:  # a broker restart: keep reading
                say(f"tail: {exc!r}")
                await asyncio.sleep(0.5)
                continue
            for messages in batch.values():
                for m in messages:
                    doc = orjson.loads(m.value)
                    self.records.append((m.partition, m.timestamp / 1000, m.key, doc))
                    if doc.get("action") == "block":
                        self.blocks.setdefault(doc["stream_id"], []).append((m.timestamp / 1000, m.value))
                        self.seen_at.setdefault(doc["stream_id"], time.time())

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
        await stop_consumer(self.consumer)


def block_figures(blocks: dict[str, list[tuple[float, bytes]]]) -> dict[str, int]:
    """Streams with non-identical block records, with two decision ids, with identical copies."""
    return {"duplicates": sum(len({raw for _, raw in b}) > 1 for b in blocks.values()),
            "duplicate_ids": sum(len({orjson.loads(raw)["decision_id"] for _, raw in b}) > 1 for b in blocks.values()),
            "redelivered": sum(len(b) > len({raw for _, raw in b}) for b in blocks.values())}


class Sender:
    """A canary every ``interval`` s (round-robin over partitions) plus benign frames."""

    def __init__(self, world: World, interval: float = 0.05, benign: int = 5) -> None:
        self.world, self.interval, self.benign = world, interval, benign
        self.sent: dict[str, tuple[int, float]] = {}  # stream -> (partition, wall time the send began)
        self.acked: set[str] = set()
        self.failed = 0
        self.stopping = False
        self.paused = False  # while True, nothing is sent (a benchmark's measured window)
        self.producer = clients.producer(world.settings, acks=1, linger_ms=5, request_timeout_ms=40_000)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sender:
        await self.producer.start()
        self.task = asyncio.create_task(self._run())
        return self

    def _done(self, stream: str, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
        else:
            self.acked.add(stream)

    async def _run(self) -> None:
        rng, n, topic = random.Random(3), 0, self.world.topic(FRAME_HASHES)
        while not self.stopping:
            if self.paused:
                await asyncio.sleep(self.interval)
                continue
            j = 0
            while partition_of(f"c{n}-{j}".encode()) != n % PARTITIONS:
                j += 1
            stream = f"c{n}-{j}"
            frame = {"seq": 1, "ts_ms": int(time.time() * 1000), "md5": canary_md5(n % CANARIES)}
            self.sent[stream] = (n % PARTITIONS, time.time())
            n += 1
            try:
                future = await self.producer.send(topic, orjson.dumps(
                    {"schema_version": 1, "stream_id": stream, "frames": [frame]}), key=stream.encode())
                future.add_done_callback(lambda f, s=stream: self._done(s, f))
                for _ in range(self.benign):
                    sid = f"b{rng.randrange(5000)}"
                    await self.producer.send(topic, orjson.dumps({"schema_version": 1, "stream_id": sid, "frames": [
                        {"seq": n, "ts_ms": frame["ts_ms"], "md5": f"{rng.getrandbits(128):032x}",
                         "pdq": f"{rng.getrandbits(256):064x}", "pdq_quality": 90}]}), key=sid.encode())
            except Exception as exc:
                self.failed += 1
                say(f"sender: {exc!r}")
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.task is not None:
            await asyncio.wait([self.task], timeout=45)
        try:
            await asyncio.wait_for(self.producer.stop(), 45)
        except Exception as error:
            say(f"sender stop: {error!r}")

    def resumed(self, tail: Tail, since: float) -> dict[int, float]:
        """Partition -> seconds from ``since`` to the first block of a canary sent after it."""
        first: dict[int, float] = {}
        for stream, blocks in tail.blocks.items():
            sent = self.sent.get(stream)
            if sent is not None and sent[1] >= since:
                first[sent[0]] = min(first.get(sent[0], 1e9), min(ts for ts, _ in blocks) - since)
        return first


async def wait_resumed(world: World, sender: Sender, tail: Tail, since: float,
                       timeout_s: float = 90) -> tuple[float | None, int]:
    """(time_to_resume_s, partitions that did not resume in time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        first = sender.resumed(tail, since)
        if len(first) == PARTITIONS:
            return round(max(first.values()), 2), 0
        if time.monotonic() > deadline:
            return None, PARTITIONS - len(first)
        world.supervise()
        await asyncio.sleep(0.2)


async def settle(world: World, sender: Sender, tail: Tail, timeout_s: float = 45, more_s: float = 5) -> dict[str, Any]:
    """Send ``more_s`` longer, stop, wait (bounded) for every acknowledged canary to be blocked; the figures."""
    await asyncio.sleep(more_s)
    await sender.__aexit__()
    deadline = time.monotonic() + timeout_s
    while not sender.acked <= set(tail.blocks) and time.monotonic() < deadline:
        world.supervise()
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # late duplicates
    blocks = tail.blocks
    return {"canaries_sent": len(sender.acked), "send_failed": sender.failed,
            "lost": len(sender.acked - set(blocks)), **block_figures(blocks),
            "false_blocks": len(set(blocks) - set(sender.sent)), "crashes": world.crashes,
            "workers_alive": world.alive(), **world.errors()}


def dead_letters(dead: Tail) -> dict[tuple[str, int, int], str]:
    return {(d["source"]["topic"], d["source"]["partition"], d["source"]["offset"]): d["reason"]
            for _, _, _, d in dead.records}


async def wait_progress(world: World, dead: Tail, actions: Tail, timeout_s: float, budget: int,
                        done: Callable[[set[tuple[str, int, int]]], bool]) -> None:
    """Until ``done(dead-lettered sources)`` and 3 s without news, 40 s without news, or the timeout."""
    deadline, last, last_at = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_at < 40:
        world.supervise(budget)
        if (progress := len(dead.records) + len(actions.records)) != last:
            last, last_at = progress, time.monotonic()
        if done(set(dead_letters(dead))) and time.monotonic() - last_at > 3:
            return
        await asyncio.sleep(0.5)
