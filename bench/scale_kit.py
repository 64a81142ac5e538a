"""Machinery for ``bench/scale.py``: process CPU and memory from /proc, a worker's /metrics,
the timed backlog drain, decision latency at a fixed rate, join and kill timings, the
blocked-exactly-once count, and the bank's memory per entry (see scale.py's docstring)."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from drills_kit import PARTITIONS, Sender, Tail, World, wait_ready, wait_resumed
from proc import cpu_seconds
from workloads import produce, workload

from streamsafe import clients
from streamsafe.brokers.offsets import GroupOffsets, end_offsets
from streamsafe.control.broadcast import stop_consumer
from streamsafe.demo.scenario import known_hashes
from streamsafe.events.contract import ACTIONS, FRAME_HASHES, INPUT_TOPICS, load_contract

__all__ = ["bank_memory", "block_count", "cpu_seconds", "drain", "join", "kill", "known_streams", "pct",
           "rss_bytes", "scrape", "settled_rss", "timed_mix"]

KNOWN_MD5 = known_hashes()[0][0]  # in the workers' hash list, an authority bank: a frame with it blocks


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def settled_rss(pid: int, timeout_s: float = 60.0) -> int:
    """A process's RSS once it has stopped growing (within 1 MiB over 3 s): a worker that has
    just said it is ready may still be compiling or loading."""
    samples = [rss_bytes(pid)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        samples.append(rss_bytes(pid))
        if len(samples) >= 4 and max(samples[-4:]) - min(samples[-4:]) < 2**20:
            break
    return samples[-1]


def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics: each metric name with its samples summed over labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            key = name.split("{", 1)[0]
            out[key] = out.get(key, 0.0) + float(value)
    return out


def pct(values: list[float], q: int) -> float | None:
    """The q-th percentile, or None when fewer than two values were measured (never 0.0)."""
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else None


def known_streams(messages: list[tuple[str, bytes, bytes]]) -> set[str]:
    """Streams that carry a frame whose MD5 is in the hash list: each must be blocked exactly once."""
    found = set()
    for topic, key, value in messages:
        if topic == FRAME_HASHES and KNOWN_MD5.encode() in value:
            doc = orjson.loads(value)
            if any(f.get("md5") == KNOWN_MD5 for f in doc["frames"]):
                found.add(key.decode())
    return found


def _input_partitions(world: World) -> tuple[list[TopicPartition], list[TopicPartition]]:
    """(partitions the agents' group commits, frame partitions the pre-filter's group commits)."""
    contract = load_contract()
    every = [TopicPartition(world.topic(t), p) for t in INPUT_TOPICS for p in range(contract[t].partitions)]
    if not world.settings.prefilter:
        return every, []
    frames = [tp for tp in every if tp.topic == world.topic(FRAME_HASHES)]
    return [tp for tp in every if tp not in frames], frames


async def drain(world: World, messages: list[tuple[str, bytes, bytes]], broker_pid: int) -> dict[str, Any]:
    """Produce ``messages`` as one backlog, then time the workers' consumer groups until their
    committed offsets cover it: msgs/s, and CPU seconds per 1,000 messages of every worker
    (and of the broker) over the same window. The window starts once the backlog is produced
    (the producer's CPU is not in it); messages the workers took while it was produced are
    not counted."""
    agents, frames = _input_partitions(world)
    await produce(world.settings, messages)
    target = await end_offsets(world.settings, agents + frames)
    workers = {slot: w for slot, w in world.slots.items() if w.alive}
    async with GroupOffsets(world.settings, world.settings.app_id) as by_agents, GroupOffsets(
            world.settings, world.settings.prefilter_group) as by_prefilter:

        async def done() -> int:
            committed = {**(await by_agents.committed(agents)), **(await by_prefilter.committed(frames))}
            return sum(min(committed.get(tp, 0), end) for tp, end in target.items())

        total = sum(target.values())
        cpu0 = {slot: cpu_seconds(w.process.pid) for slot, w in workers.items()}
        broker0, started, base = cpu_seconds(broker_pid), time.perf_counter(), await done()
        deadline = time.monotonic() + 900
        while (now := await done()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the backlog was not drained in 900 s ({now} of {total})")
            if dead := [slot for slot, w in workers.items() if not w.alive]:
                raise RuntimeError(f"worker slot {dead[0]} exited during the drain:\n{workers[dead[0]].log()[-3000:]}")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = {slot: cpu_seconds(w.process.pid) - cpu0[slot] for slot, w in workers.items()}
        broker_cpu = cpu_seconds(broker_pid) - broker0
    processed = total - base
    if processed < len(messages) // 10:  # a drain that measured nothing says so
        return {"messages": len(messages), "processed": processed, "msgs_per_s": None, "cpu_s_per_1k": None,
                "note": f"only {processed} of {len(messages)} messages were left when timing began"}
    return {"messages": len(messages), "processed": processed, "seconds": round(elapsed, 2),
            "msgs_per_s": round(processed / elapsed),
            "cpu_s_per_1k": round(sum(cpu.values()) / processed * 1000, 4),
            "worker_cpu_s": [round(cpu[s], 2) for s in sorted(cpu)],
            "worker_utilisation": [round(cpu[s] / elapsed, 2) for s in sorted(cpu)],
            "broker_cpu_s_per_1k": round(broker_cpu / processed * 1000, 4)}


#: the latency runs send a known-hash probe on a new stream in place of every PROBE_EVERY-th message
PROBE_EVERY = 100


async def timed_mix(world: World, tail: Tail, rate: float, seconds: float, tag: str,
                    streams: int, warmup_s: float = 2.0) -> tuple[list[float], set[str]]:
    """The mix at ``rate`` msgs/s for ``seconds`` on fresh streams ``<tag>-*``; every 100th
    message a known-hash frame on a new stream ``<tag>p-<i>``, timed from its send until its
    block is read from enforcement.actions (probes sent in the first ``warmup_s`` are not
    timed). Messages due are sent in small batches, as a platform's producer would.
    Returns (latencies in ms, every known-hash stream sent)."""
    messages = workload("mix", int(rate * seconds), streams, seed=len(tag) * 7919 + sum(map(ord, tag)),
                        prefix=f"{tag}-")
    # a message at a probe's index is replaced by the probe: a known-hash frame there is never sent
    known = known_streams([m for i, m in enumerate(messages) if i % PROBE_EVERY])
    sent: dict[str, float] = {}
    producer = clients.producer(world.settings, acks=1, linger_ms=1)
    await producer.start()
    try:
        start = time.perf_counter()
        next_i = 0
        while next_i < len(messages):
            now = time.perf_counter()
            due = min(len(messages), int((now - start) * rate) + 1)
            for i in range(next_i, due):
                topic, key, value = messages[i]
                if i % PROBE_EVERY == 0:
                    sid = f"{tag}p-{i}"
                    value = orjson.dumps({"schema_version": 1, "stream_id": sid, "frames": [
                        {"seq": 1, "ts_ms": int(time.time() * 1000), "md5": KNOWN_MD5}]})
                    topic, key = FRAME_HASHES, sid.encode()
                    known.add(sid)
                    if now - start >= warmup_s:
                        sent[sid] = time.time()
                await producer.send(world.topic(topic), value, key=key)
            next_i = due
            await asyncio.sleep(0.002)
        await producer.flush()
    finally:
        await producer.stop()
    deadline = time.monotonic() + 30
    while not set(sent) <= set(tail.seen_at) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return sorted((tail.seen_at[s] - t) * 1000 for s, t in sent.items() if s in tail.seen_at), known


def _stall(sender: Sender, tail: Tail, since: float, until: float) -> float | None:
    """The longest send -> block read of a canary sent in [since, until] (None: none was)."""
    waits = [tail.seen_at.get(s, time.time()) - t for s, (_, t) in sender.sent.items() if since <= t <= until]
    return round(max(waits), 2) if waits else None


async def join(world: World, sender: Sender, tail: Tail, slot: int) -> dict[str, Any]:
    """A worker joins while canaries flow: ``ready_s`` from its start to its /readyz 200;
    ``rebalance_s`` from its start until a canary sent after that on every partition is
    blocked (the group is stable and decisions flow again); ``stall_s``, the longest a canary
    sent meanwhile waited for its block."""
    sender.paused = False
    await wait_resumed(world, sender, tail, time.time(), 60)  # flowing before the join
    t_start = time.time()
    ready_at = await wait_ready(world.spawn(slot), 240)
    if ready_at is None:
        sender.paused = True
        return {"ready_s": None, "rebalance_s": None, "stall_s": None, "unresumed_partitions": PARTITIONS,
                "note": f"worker {slot + 1} did not become ready: {world.errors()}"}
    resume, missing = await wait_resumed(world, sender, tail, ready_at, 90)
    flowing = ready_at + (resume or 0.0)
    sender.paused = True
    return {"ready_s": round(ready_at - t_start, 2),
            "rebalance_s": round(flowing - t_start, 2) if resume is not None else None,
            "stall_s": _stall(sender, tail, t_start, flowing), "unresumed_partitions": missing}


async def kill(world: World, sender: Sender, tail: Tail, slot: int) -> dict[str, Any]:
    """SIGKILL one worker while canaries flow, no restart: ``rebalance_s`` from the kill until a
    canary sent after it on every partition is blocked (its partitions are processed again)."""
    sender.paused = False
    await wait_resumed(world, sender, tail, time.time(), 60)
    t_kill = time.time()
    world.kill(slot)
    resume, missing = await wait_resumed(world, sender, tail, t_kill, 120)
    sender.paused = True
    return {"at": t_kill, "rebalance_s": resume, "stall_s": _stall(sender, tail, t_kill, t_kill + (resume or 0.0)),
            "unresumed_partitions": missing, "session_timeout_s": world.settings.session_timeout_s}


async def block_count(world: World) -> dict[str, dict[str, int]]:
    """Every block on enforcement.actions, read from the start to its end now:
    stream -> {decision id -> copies}."""
    contract = load_contract()
    partitions = [TopicPartition(world.topic(ACTIONS), p) for p in range(contract[ACTIONS].partitions)]
    ends = await end_offsets(world.settings, partitions)
    consumer = clients.consumer(world.settings)
    await consumer.start()
    blocks: dict[str, dict[str, int]] = {}
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    doc = orjson.loads(record.value)
                    if doc.get("action") == "block":
                        ids = blocks.setdefault(doc["stream_id"], {})
                        ids[doc["decision_id"]] = ids.get(doc["decision_id"], 0) + 1
    finally:
        await stop_consumer(consumer)
    return blocks


BANK_PROBE = """
import os, random, sys, orjson
from pathlib import Path
def rss():
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith("VmRSS:"))
from streamsafe.matching.banks import BankEntry, HashBanks
n = int(sys.argv[1]); rng = random.Random(7)
def entries(start, stop):  # made as they are added: what stays is what the banks keep
    for i in range(start, stop):
        yield BankEntry(f"partner-bank:{i:012d}", "partner-bank", "pdq", f"{rng.getrandbits(256):064x}")
banks = HashBanks(); banks.add_many(entries(0, 1000)); banks._pdq.compact()  # imports, JIT, first arrays
before = rss()
banks.add_many(entries(1000, n)); banks._pdq.compact()
after = rss()
print(orjson.dumps({"entries": n - 1000, "rss_bytes": after - before, "index_bytes": banks._pdq.nbytes}).decode())
"""


def bank_memory(n: int) -> dict[str, Any]:
    """Memory a worker's banks take per PDQ entry: a fresh process builds ``HashBanks`` with
    ``n`` entries (ids as long as a real bank's), compacted as a worker does; its RSS growth
    per entry (everything the banks keep: ids, bank codes, the index, and what the allocator
    holds on to after the load) and the PDQ index's own bytes per hash."""
    result = subprocess.run([sys.executable, "-c", BANK_PROBE, str(n)], capture_output=True, text=True,
                            check=True, timeout=900)
    probe = orjson.loads(result.stdout.strip().splitlines()[-1])
    return {"entries": probe["entries"], "bytes_per_entry": round(probe["rss_bytes"] / probe["entries"], 1),
            "pdq_index_bytes_per_hash": round(probe["index_bytes"] / probe["entries"], 1)}
