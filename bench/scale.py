"""Scale-out on one broker: the realistic mix through 1, 2 and 3 `streamsafe worker` processes
in one consumer group, in one run, with every known-hash stream blocked exactly once throughout.

    python bench/scale.py [--quick] [--json] [--save-costs PATH] [--messages N] [--streams N]
                          [--state-streams N] [--bank N] [--bank-probe N] [--latency-s S] [--latency-rate R]

One Apache Kafka broker (KRaft) on loopback, topics at replication factor 1, a PDQ bank of
``--bank`` entries (so frames are really matched) and a hash list whose MD5s block (an
authority bank). One consumer group throughout; the machinery is in scale_kit.py, the worker
slots, canary sender and topic tail are bench/drills_kit.py's.

1. memory: a fresh process builds the banks with ``--bank-probe`` PDQ entries (its RSS growth
   per entry, and the PDQ index's own bytes per hash); a worker with no bank gives the base RSS.
2. one worker: a backlog of ``--messages`` (the mix over ``--streams`` streams, 2,000: ~30
   messages each, as in bench/worker.py) is drained as a warm-up; then a backlog of two messages
   per stream over ``--state-streams`` new streams: the worker's RSS growth over it, divided by
   the streams it added (``streamsafe_active_streams``), is the memory a stream's state costs
   (``streamsafe_stream_state_bytes`` gives its serialized size beside it); then another backlog
   of ``--messages`` on the same 2,000 streams is drained and timed: msgs/s from when the backlog
   is produced until the group's committed offsets cover it, and CPU seconds per 1,000 messages
   (utime + stime of every worker, and of the broker, from /proc). Then decision latency: the
   mix at a fixed rate (half the one-worker rate, the same for every count) with a known-hash
   probe on a new stream every 100th message, send -> block read, p50/p99.
3. a second worker joins, then a third: while canaries flow (one every 50 ms, round-robin over
   the 8 partitions, plus benign frames), ``ready_s`` (start -> its /readyz), ``rebalance_s``
   (start -> a canary sent after it on every partition is blocked: the group is stable and
   decisions flow again), ``stall_s`` (the longest a canary waited meanwhile); then the timed
   drain and the latency run again, with that many workers.
4. one worker gets SIGKILL (no restart): ``rebalance_s`` until its partitions are processed again
   (a canary sent after the kill blocked on every partition; bounded below by the session timeout).
5. every block on enforcement.actions, counted per stream: each known-hash stream (backlogs,
   latency probes, canaries) must have exactly one block decision, and no other stream any.
   A violation is reported and the exit code is 1.

Ratios are against the one-worker figures of the same run. A figure that was not measured is
null ("not measured" in the table), never 0. This machine's cores are shared by the broker,
the workers and this script: the CPU seconds per 1,000 messages are the figure to plan with,
not msgs/s. ``--json`` prints one JSON line (and the table on stderr). ``--save-costs PATH``
writes the per-event costs ``streamsafe capacity`` reads, with the machine, date and commit
they were measured at. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import functools
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drills_corpus import canary_md5
from drills_kit import CANARIES, Context, Sender, Tail, World, say
from scale_kit import (
    KNOWN_MD5,
    bank_memory,
    block_count,
    drain,
    join,
    kill,
    known_streams,
    pct,
    scrape,
    settled_rss,
    timed_mix,
)
from workloads import workload

from streamsafe.brokers.local import start_broker
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.bank_publish import publish_entries
from streamsafe.events.contract import ACTIONS, load_contract
from streamsafe.events.models import BankEntry

GAUGE_S = 6.0  # a worker updates its gauges every 5 s at most
MIX = {"frame-hashes": 0.70, "classifier-signals": 0.20, "metadata": 0.07, "user-reports": 0.03}


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either was not measured."""
    return round(value / base, 2) if value is not None and base else None


def exactly_once(expected: set[str], blocks: dict[str, dict[str, int]], canaries_sent: set[str]) -> dict[str, int]:
    """Violations of "every known-hash stream blocked exactly once": known streams never blocked
    (``missing``), streams with two block decisions (``duplicates``), blocked streams that carried
    no known hash (``false_blocks``); identical copies of one decision are counted apart
    (``redelivered``: at-least-once delivery, the same decision id)."""
    return {"known_streams": len(expected), "blocked": len(set(blocks) & expected),
            "missing": len(expected - set(blocks)),
            "duplicates": sum(len(ids) > 1 for ids in blocks.values()),
            "false_blocks": len(set(blocks) - expected - canaries_sent),
            "redelivered": sum(any(n > 1 for n in ids.values()) for ids in blocks.values())}


def missing_detail(stream: str, sender: Sender, killed_at: float) -> str:
    """Where a known-hash stream that was never blocked came from (canaries: their partition and
    send time from the kill)."""
    if stream in sender.sent:
        partition, sent_at = sender.sent[stream]
        return f"{stream}: canary, partition {partition}, sent {sent_at - killed_at:+.1f} s from the kill"
    head = stream.split("-", 1)[0]
    kind = ("latency probe" if head.endswith("p") else "latency run's mix" if head.startswith("l")
            else "backlog")
    return f"{stream}: {kind}"


def violations(check: dict[str, int]) -> int:
    return check["missing"] + check["duplicates"] + check["false_blocks"]


def with_ratios(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each worker count's figures with its ratios to the one-worker phase of the same run."""
    base = phases[0]
    for p in phases:
        p["throughput_x"] = ratio(p["drain"].get("msgs_per_s"), base["drain"].get("msgs_per_s"))
        p["cpu_per_1k_x"] = ratio(p["drain"].get("cpu_s_per_1k"), base["drain"].get("cpu_s_per_1k"))
        p["p99_x"] = ratio(p["p99_ms"], base["p99_ms"])
    return phases


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else "MemTotal: 0 kB"
    mem_kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal")))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "os": platform.platform(), "python": platform.python_version()}


def costs_from(result: dict[str, Any]) -> dict[str, Any]:
    """The per-event costs ``streamsafe capacity`` plans with, from a run's result: the
    one-worker drain's CPU (no other worker competing for the two cores), the memory figures."""
    one = result["phases"][0]
    memory = result["memory"]
    if one["drain"].get("cpu_s_per_1k") is None or memory["stream_state_bytes"] is None:
        raise ValueError("this run did not measure the one-worker CPU or the per-stream state: no costs to save")
    return {
        "cpu_s_per_event": round(one["drain"]["cpu_s_per_1k"] / 1000, 8),
        "worker_base_rss_bytes": memory["worker_base_rss_bytes"],
        "bank_bytes_per_entry": memory["bank"]["bytes_per_entry"],
        "pdq_index_bytes_per_hash": memory["bank"]["pdq_index_bytes_per_hash"],
        "stream_state_bytes": memory["stream_state_bytes"],
        "stream_state_serialized_bytes": memory["stream_state_serialized_bytes"],
        "worker_msgs_per_s": one["drain"]["msgs_per_s"],
        "frames_per_message": 1, "mix": MIX,
        "provenance": {"measured_at": result["measured_at"], "command": result["command"], "head": result["head"],
                       "machine": result["machine"], "broker": result["broker"],
                       "bank_probe_entries": memory["bank"]["entries"],
                       "load_before": result["load_before"], "load_after": result["load_after"]}}


async def run(ctx: Context, args: argparse.Namespace, bank: dict[str, Any]) -> dict[str, Any]:
    contract = load_contract()
    bare = World(ctx, "bare")  # no bank: the base RSS of a worker
    await bare.start(range(1))
    base_rss = await settled_rss(bare.slots[0].process.pid)
    await bare.close()
    say(f"worker base RSS {base_rss / 2**20:.0f} MiB")
    world = World(ctx, "scale")
    world.settings = world.settings.replace(commit_interval_s=0.2)
    await apply_topics(world.settings, contract)
    rng = random.Random(5)
    await publish_entries(world.settings, [
        BankEntry(f"bench:{i}", "partner-bench", "pdq", f"{rng.getrandbits(256):064x}") for i in range(args.bank)])
    await world.start(range(1))
    banked_rss = await settled_rss(world.slots[0].process.pid)
    expected: set[str] = set()
    phases: list[dict[str, Any]] = []

    async def timed_drain(seed: int, n: int, streams: int, prefix: str = "st-") -> dict[str, Any]:
        messages = workload("mix", n, streams, seed=seed, prefix=prefix)
        expected.update(known_streams(messages))
        say(f"{len(world.slots)} worker(s): draining a backlog of {len(messages)} over {streams} streams")
        return await drain(world, messages, ctx.broker.process.pid)

    async with Tail(world, ACTIONS) as tail, Sender(world) as sender:
        sender.paused = True
        warm = await timed_drain(1, args.messages, args.streams)  # the streams' states exist from here on
        port, pid = world.slots[0].http_port, world.slots[0].process.pid
        await asyncio.sleep(GAUGE_S)  # the worker's gauges (active streams) catch up
        rss_before, before = await settled_rss(pid), scrape(port)
        new = await timed_drain(2, 2 * args.state_streams, args.state_streams, "new-")
        await asyncio.sleep(GAUGE_S)
        rss_after, after = await settled_rss(pid), scrape(port)
        new_streams = after.get("streamsafe_active_streams", 0) - before.get("streamsafe_active_streams", 0)
        writes = after.get("streamsafe_stream_state_bytes_count", 0)
        memory = {"worker_base_rss_bytes": base_rss, "worker_rss_with_bank_bytes": banked_rss,
                  "bank_entries": args.bank, "bank": bank, "new_streams": int(new_streams),
                  "stream_state_bytes": round((rss_after - rss_before) / new_streams) if new_streams > 0
                  and rss_after > rss_before else None,
                  "stream_state_serialized_bytes": round(after["streamsafe_stream_state_bytes_sum"] / writes)
                  if writes else None}
        timed = await timed_drain(3, args.messages, args.streams)
        rate = args.latency_rate or (timed["msgs_per_s"] / 2 if timed.get("msgs_per_s") else 200.0)
        for count in (1, 2, 3):
            joined = None
            if count > 1:
                say(f"worker {count} joins")
                joined = await join(world, sender, tail, count - 1)
                timed = await timed_drain(2 + count, args.messages, args.streams)
            say(f"{count} worker(s): decision latency at {rate:.0f} msgs/s")
            latencies, known = await timed_mix(world, tail, rate, args.latency_s, f"l{count}", args.streams)
            expected.update(known)
            phases.append({"workers": count, "join": joined, "drain": timed, "latency_rate": round(rate),
                           "decisions_timed": len(latencies), "p50_ms": pct(latencies, 50),
                           "p99_ms": pct(latencies, 99)})
        say("SIGKILL worker 1 (no restart)")
        killed = await kill(world, sender, tail, 0)
        await sender.__aexit__()
        expected.update(sender.acked)
        t_end = time.time()
        deadline = time.monotonic() + args.settle_s
        while not expected <= set(tail.blocks) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # late duplicates
        blocks = await block_count(world)
        check = exactly_once(expected, blocks, set(sender.sent))
        check["settled_s"] = round(time.time() - t_end, 1)
        check["missing_streams"] = [missing_detail(s, sender, killed["at"])
                                    for s in sorted(expected - set(blocks))[:10]]
        errors = world.errors()
    await world.close()
    return {"warmup_drain": warm, "new_streams_drain": new, "phases": with_ratios(phases), "kill": killed,
            "memory": memory, "exactly_once": check, "violations": violations(check), "crashes": world.crashes,
            **errors}


def show(result: dict[str, Any], out: Any = sys.stdout) -> None:
    print = functools.partial(builtins.print, file=out)

    def fig(value: Any, unit: str = "") -> str:
        return "not measured" if value is None else f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"

    print(f"StreamSafe scale-out on {result['broker']} at {result['head']} ({result['command']}; "
          f"{result['seconds']} s); machine: {result['machine']['cores']} cores, {result['machine']['cpu']}")
    print(f"load average (1, 5, 15 min) before {result['load_before']}, after {result['load_after']}")
    print(f"{'workers':>7} {'msgs/s':>8} {'x1':>5} {'CPU-s/1k':>9} {'x1':>5} {'worker CPU util':>17} "
          f"{'broker CPU-s/1k':>15} {'p50 ms':>7} {'p99 ms':>7} {'p99 x1':>6} {'join ready s':>12} "
          f"{'rebalance s':>11} {'stall s':>7}")
    for p in result["phases"]:
        d, j = p["drain"], p["join"] or {}
        util = ",".join(f"{u:.2f}" for u in d.get("worker_utilisation", [])) or "-"
        print(f"{p['workers']:>7} {fig(d.get('msgs_per_s')):>8} {fig(p['throughput_x']):>5} "
              f"{fig(d.get('cpu_s_per_1k')):>9} {fig(p['cpu_per_1k_x']):>5} {util:>17} "
              f"{fig(d.get('broker_cpu_s_per_1k')):>15} {fig(p['p50_ms']):>7} {fig(p['p99_ms']):>7} "
              f"{fig(p['p99_x']):>6} {fig(j.get('ready_s')) if j else '-':>12} "
              f"{fig(j.get('rebalance_s')) if j else '-':>11} {fig(j.get('stall_s')) if j else '-':>7}")
        if d.get("note"):
            print(f"        {p['workers']} worker(s): {d['note']}")
    new = result["new_streams_drain"]
    print(f"backlogs of {result['messages_per_backlog']:,} over {result['streams']:,} streams; one of "
          f"{new['messages']:,} over new streams (two each, every one a new state) with one worker: "
          f"{fig(new.get('msgs_per_s'))} msgs/s, {fig(new.get('cpu_s_per_1k'))} CPU-s/1k")
    lat = result["phases"][0]
    print(f"latency: {lat['latency_rate']} msgs/s of the mix with a known-hash probe every 100th message, "
          f"{', '.join(str(p['decisions_timed']) for p in result['phases'])} blocks timed")
    k = result["kill"]
    print(f"kill -9 of one of 3 workers: partitions processed again after {fig(k['rebalance_s'], ' s')} "
          f"(session timeout {k['session_timeout_s']} s; {k['unresumed_partitions']} partitions not resumed), "
          f"longest wait {fig(k['stall_s'], ' s')}")
    m = result["memory"]
    mib = 2**20
    print(f"memory: worker base RSS {m['worker_base_rss_bytes'] / mib:.0f} MiB (no bank), "
          f"{m['worker_rss_with_bank_bytes'] / mib:.0f} MiB with {m['bank_entries']:,} PDQ entries; banks "
          f"{m['bank']['bytes_per_entry']} B per entry ({m['bank']['entries']:,} entries in a fresh process; PDQ "
          f"index {m['bank']['pdq_index_bytes_per_hash']} B per hash); stream state "
          f"{fig(m['stream_state_bytes'], ' B')} per stream (RSS growth over {m['new_streams']:,} new streams; "
          f"serialized {fig(m['stream_state_serialized_bytes'], ' B')})")
    c = result["exactly_once"]
    print(f"blocked exactly once: {c['known_streams']:,} known-hash streams, {c['blocked']:,} blocked; "
          f"missing {c['missing']}, two decisions {c['duplicates']}, false blocks {c['false_blocks']} "
          f"(identical redelivered copies {c['redelivered']}); counted {c['settled_s']} s after the last send; "
          f"worker crashes {result['crashes']}"
          + (f"; never blocked: {'; '.join(c['missing_streams'])}" if c["missing_streams"] else "")
          + (f"; errors {result['errors']}" if result["errors"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, bank and latency runs (a few minutes)")
    parser.add_argument("--messages", type=int, help="per backlog (default 60,000; 20,000 with --quick)")
    parser.add_argument("--streams", type=int, default=2_000, help="streams the backlogs are spread over")
    parser.add_argument("--state-streams", type=int, help="new streams for the state memory figure (default 20,000; "
                        "10,000 with --quick)")
    parser.add_argument("--bank", type=int, help="PDQ bank entries the workers load (default 100,000; 20,000 quick)")
    parser.add_argument("--bank-probe", type=int, help="entries for the bank memory probe (default 1,000,000; "
                        "200,000 quick)")
    parser.add_argument("--latency-s", type=float, help="seconds per latency run (default 20; 10 with --quick)")
    parser.add_argument("--latency-rate", type=float, help="msgs/s (default: half the one-worker drain rate)")
    parser.add_argument("--settle-s", type=float, default=180.0, help="at the end, how long to wait for every "
                        "known-hash stream's block before counting (default 180)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save-costs", type=Path, metavar="PATH", help="write the costs streamsafe capacity reads")
    args = parser.parse_args()
    q = args.quick
    args.messages = args.messages or (20_000 if q else 60_000)
    args.state_streams = args.state_streams or (10_000 if q else 20_000)
    args.bank = args.bank if args.bank is not None else (20_000 if q else 100_000)
    args.bank_probe = args.bank_probe or (200_000 if q else 1_000_000)
    args.latency_s = args.latency_s or (10.0 if q else 20.0)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # not its retries while new topics elect leaders
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="streamsafe-scale-"))
    hash_list = workdir / "known-csam.txt"  # the default policy trusts this bank as an authority
    hash_list.write_text("".join(f"md5:{canary_md5(i)}\n" for i in range(CANARIES)) + f"md5:{KNOWN_MD5}\n")
    say(f"work dir {workdir}; bank memory probe ({args.bank_probe:,} entries)")
    bank = bank_memory(args.bank_probe)
    broker = start_broker("kafka", workdir / "broker")
    ctx = Context(broker, workdir, hash_list, {}, dict(load_contract()))
    try:
        result = asyncio.run(run(ctx, args, bank))
    finally:
        for worker in ctx.spawned:
            worker.stop(10)
        broker.stop()
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip() or None
    result = {"broker": broker.kind, "head": head, "command": "bench/scale.py" + (" --quick" if q else ""),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
              "messages_per_backlog": args.messages, "streams": args.streams,
              "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
              "seconds": round(time.monotonic() - started), "logs": str(workdir), **result}
    if args.save_costs:
        args.save_costs.write_text(orjson.dumps(costs_from(result), option=orjson.OPT_INDENT_2).decode() + "\n")
    if args.json:
        print(orjson.dumps(result).decode())
        show(result, sys.stderr)  # the table too, apart from the one JSON line
    else:
        show(result)
    if result["violations"]:
        sys.exit(f"{result['violations']} violations of 'every known-hash stream blocked exactly once': "
                 f"{result['exactly_once']}")


if __name__ == "__main__":
    main()
