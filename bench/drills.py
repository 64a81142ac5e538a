"""Fault drills against a real Apache Kafka broker this script starts (and stops).
The corpus is in drills_corpus.py, the machinery (slots, tails, sender) in drills_kit.py.

    python bench/drills.py [--quick] [--hostile N] [--kills N] [--skip-broker-restart] [--skip-scale]
                           [--worker-env KEY=VALUE ...] [--json]

Every drill runs on its own topic prefix and consumer group with real ``streamsafe worker``
processes (worker slot i has STREAMSAFE_INSTANCE_ID=drill-worker-<i>, kept across a restart
of that slot, and an HTTP port for /readyz). A worker that exits without being killed by a
drill is a crash: it is counted and its slot restarted, as a supervisor would. A figure that
could not be measured is null, never 0. Canaries are streams with one frame whose MD5 is in
the worker's hash list (an authority bank): each must be blocked exactly once.

1. hostile: ``hostile_sent`` records over the five input topics (drills_corpus.py: malformed
   JSON, non-objects, bad versions, every schema field violated, key problems, null values,
   invalid UTF-8, huge numbers, NaN-like strings, deep nesting, odd ids, micro-/second/negative
   timestamps, one ~0.99 MB record per topic) plus ~0.99 MB records on streamsafe.policy
   ("live") and hashbank.entries, with ``canaries`` known-hash streams mixed in (half after a
   stream.started with ts_ms in microseconds, which must be dead-lettered without stopping
   the block: ``dirty_canaries_blocked``). ``expected_dead_letters``
   is what the contract says must be rejected (an independent oracle); ``dead_lettered``
   counts distinct source records on streamsafe.dead-letter (``by_reason``),
   ``dead_lettered_over_hostile`` their share of hostile_sent; ``missing_dead_letters`` (by
   family; ``missing_by_topic``), ``wrong_reason`` and ``unexpected_dead_letters`` compare with
   the oracle.
   ``duplicate_blocks``: streams blocked under two decision ids; ``false_blocks``: blocks of
   non-canary streams; ``crashes`` (slot restarts), ``workers_alive``, ``traceback`` and
   ``errors`` (exception lines of the logs, digits as N, and worker crashes, counted). Then
   the two control records: ``control_dead_letters`` (reason per topic), ``control_crashes``,
   ``control_workers_alive``, ``control_errors`` (counted since then; they include whatever the
   third worker's rebalance sets off); ``control_bank_update_applied`` (a bank entry published
   afterwards blocks a new stream within 30 s) and ``control_new_worker_ready_s`` (a third
   worker started on these topics becomes ready; null if not within 90 s).
2. kill: two workers; a sender sends a canary every 50 ms (round-robin over the 8 partitions by
   aiokafka's murmur2 partitioner) and 100 benign frames/s; ``kills`` times one worker gets
   SIGKILL and its slot is restarted at once. ``time_to_resume_s`` per kill: from the kill to
   the first block of a canary sent after it, the maximum over partitions (null if a partition
   did not resume in 90 s; ``unresumed_partitions``). ``ready_s``: kill -> new worker's /readyz
   200. ``lost``: acknowledged canaries (over the whole drill; sending goes on 5 s after the
   last resume) never blocked within 45 s of the end; ``duplicates``:
   streams with two non-identical block records (``duplicate_ids``: with two decision ids);
   ``redelivered``: streams with identical copies (at-least-once re-sends, harmless).
3. broker_restart: the same traffic; the broker is stopped (SIGTERM, storage kept) and started
   again on the same ports and storage. ``downtime_s``: stop -> clients can fetch metadata;
   ``time_to_resume_s`` from then, for canaries sent after it (the sender's send() waits for
   metadata while the broker is down, so few canaries are sent then); ``lost``, ``duplicates``.
   (``streamsafe.brokers.kafka.restart_kafka`` starts it on its own storage, ports and properties.)
4. scale: one worker, then a second and a third join (``join_ready_s``), then one gets
   SIGKILL with no restart: ``time_to_resume_s`` after the kill, ``lost``, ``duplicates``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from drills_corpus import EDGE, canary_md5, compare, hostile_corpus, oversize_control
from drills_kit import (
    CANARIES,
    Context,
    Sender,
    Tail,
    World,
    block_figures,
    dead_letters,
    say,
    settle,
    wait_progress,
    wait_ready,
    wait_resumed,
)

from streamsafe import clients
from streamsafe.brokers.kafka import restart_kafka
from streamsafe.brokers.local import start_broker
from streamsafe.control.bank_publish import publish_entries
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, FRAME_HASHES, load_contract
from streamsafe.matching.banks import BankEntry


async def drill_hostile(ctx: Context, n: int, quick: bool) -> dict[str, Any]:
    """Phase 1: the input corpus with its canaries; phase 2: the ~0.99 MB control records
    (re-read by every worker that starts, so kept apart to tell the crashes apart)."""
    world = World(ctx, "hostile")
    max_bytes = int(ctx.worker_env.get("STREAMSAFE_MAX_MESSAGE_BYTES", world.settings.max_message_bytes))
    records = hostile_corpus(n, CANARIES, ctx.contract, max_bytes)
    canaries = {f"canary-{k}" for k in range(CANARIES)}
    try:
        await world.start(range(2))
        producer = clients.producer(world.settings, acks=1, linger_ms=20, max_batch_size=512 * 1024,
                                    max_request_size=1_048_576)
        await producer.start()
        async with Tail(world, DEAD_LETTER) as dead, Tail(world, ACTIONS) as actions:
            try:
                sent = await asyncio.gather(*[await producer.send(world.topic(r.topic), r.value, key=r.key)
                                              for r in records], return_exceptions=True)
                coords = {(world.topic(r.topic), m.partition, m.offset): r
                          for r, m in zip(records, sent, strict=True) if not isinstance(m, BaseException)}
                expected = {c for c, r in coords.items() if r.expect not in (None, EDGE)}
                say(f"hostile: {len(records)} records sent; waiting for dead letters and canaries")
                await wait_progress(world, dead, actions, 90 if quick else 240, 8, lambda seen: expected <= seen
                                    and canaries <= set(actions.blocks))
                figures = compare(coords, dead_letters(dead))
                blocks = actions.blocks
                figures.update(
                    send_failed=sum(isinstance(m, BaseException) for m in sent), canaries=CANARIES,
                    dead_letter_records=len(dead.records), canaries_blocked=len(canaries & set(blocks)),
                    dirty_canaries_blocked=len({f"canary-{k}" for k in range(1, CANARIES, 2)} & set(blocks)),
                    duplicate_blocks=block_figures(blocks)["duplicate_ids"], false_blocks=len(set(blocks) - canaries),
                    crashes=world.crashes, workers_alive=world.alive(), **world.errors())
                say("hostile: ~0.99 MB records on streamsafe.policy and hashbank.entries")
                control = await asyncio.gather(*[await producer.send(world.topic(t), v, key=k)
                                                 for t, k, v in oversize_control()], return_exceptions=True)
                sources = {(world.topic(t), m.partition, m.offset) for (t, _, _), m in
                           zip(oversize_control(), control, strict=True) if not isinstance(m, BaseException)}
                await wait_progress(world, dead, actions, 60, world.crashes + 4, lambda seen: sources <= seen)
                # does the control plane still apply updates, and can a new worker start on these topics?
                await publish_entries(world.settings, [BankEntry("drill:after", "known-csam", "md5", canary_md5(-1))])
                await producer.send_and_wait(world.topic(FRAME_HASHES), orjson.dumps({"schema_version": 1, "stream_id":
                    "canary-after", "frames": [{"seq": 1, "ts_ms": int(time.time() * 1000), "md5": canary_md5(-1)}]}),
                    key=b"canary-after")
                t_new = time.time()
                ready_at = await wait_ready(world.spawn(2), 90)
                await wait_progress(world, dead, actions, 30, world.crashes + 4, lambda _: "canary-after" in
                                    actions.blocks)
            finally:
                await producer.stop()
        errors = Counter(world.errors()["errors"])
        control_dead = {c[0].removeprefix(world.settings.topic_prefix): r
                        for c, r in dead_letters(dead).items() if c in sources}
        return {**figures, "control_sent": len(sources), "control_dead_letters": control_dead,
                "control_crashes": world.crashes - figures["crashes"], "control_workers_alive": world.alive(),
                "control_errors": dict(errors - Counter(figures["errors"])),
                "control_bank_update_applied": "canary-after" in actions.blocks,
                "control_new_worker_ready_s": round(ready_at - t_new, 2) if ready_at else None}
    finally:
        await world.close()


async def drill_kill(ctx: Context, kills: int) -> dict[str, Any]:
    world = World(ctx, "kill")
    try:
        await world.start(range(2))
        async with Tail(world, ACTIONS) as tail, Sender(world) as sender:
            warm, _ = await wait_resumed(world, sender, tail, time.time())
            resumes: list[float | None] = []
            ready: list[float | None] = []
            unresumed = []
            for i in range(kills):
                slot = i % 2
                if (worker := world.slots.get(1 - slot)) is not None:
                    await wait_ready(worker, 60)  # the other worker is in the group before this kill
                say(f"kill: SIGKILL slot {slot} ({i + 1}/{kills})")
                t_kill = time.time()
                world.kill(slot)
                waiting = asyncio.create_task(wait_resumed(world, sender, tail, t_kill))
                at = await wait_ready(world.spawn(slot), 90)
                resume, missing = await waiting
                resumes.append(resume)
                unresumed.append(missing)
                ready.append(round(at - t_kill, 2) if at else None)
            figures = await settle(world, sender, tail)
        measured = [r for r in resumes if r is not None]
        return {"kills": kills, "warmup_resume_s": warm, "time_to_resume_s": resumes,
                "time_to_resume_max_s": max(measured) if measured and len(measured) == len(resumes) else None,
                "unresumed_partitions": unresumed, "ready_s": ready, **figures}
    finally:
        await world.close()


async def drill_broker(ctx: Context) -> dict[str, Any]:
    world = World(ctx, "broker")
    try:
        await world.start(range(2))
        async with Tail(world, ACTIONS) as tail, Sender(world) as sender:
            warm, _ = await wait_resumed(world, sender, tail, time.time())
            say("broker_restart: stopping the broker")
            t_stop = time.time()
            await asyncio.to_thread(ctx.broker.stop)
            await asyncio.to_thread(restart_kafka, ctx.broker)
            t_back = time.time()
            say(f"broker_restart: broker back after {t_back - t_stop:.1f}s")
            resume, missing = await wait_resumed(world, sender, tail, t_back, 120)
            figures = await settle(world, sender, tail)
        return {"warmup_resume_s": warm, "downtime_s": round(t_back - t_stop, 2), "time_to_resume_s": resume,
                "unresumed_partitions": missing, **figures}
    finally:
        await world.close()


async def drill_scale(ctx: Context) -> dict[str, Any]:
    world = World(ctx, "scale")
    try:
        await world.start(range(1))
        async with Tail(world, ACTIONS) as tail, Sender(world) as sender:
            warm, _ = await wait_resumed(world, sender, tail, time.time())
            joins = []
            for slot in (1, 2):
                t_join = time.time()
                at = await wait_ready(world.spawn(slot), 120)
                joins.append(round(at - t_join, 2) if at else None)
                say(f"scale: worker {slot + 1} joined")
            await wait_resumed(world, sender, tail, time.time(), 60)
            say("scale: SIGKILL slot 0, no restart")
            t_kill = time.time()
            world.kill(0)
            resume, missing = await wait_resumed(world, sender, tail, t_kill)
            figures = await settle(world, sender, tail)
        return {"warmup_resume_s": warm, "join_ready_s": joins, "time_to_resume_s": resume,
                "unresumed_partitions": missing, **figures}
    finally:
        await world.close()


async def run(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    plan: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]] | None, float]] = [
        ("hostile", lambda: drill_hostile(ctx, args.hostile, args.quick), 600),
        ("kill", lambda: drill_kill(ctx, args.kills), 120 + 150 * args.kills),
        ("broker_restart", None if args.skip_broker_restart else lambda: drill_broker(ctx), 420),
        ("scale", None if args.skip_scale else lambda: drill_scale(ctx), 480)]
    results: dict[str, Any] = {}
    for name, drill, budget in plan:
        if drill is None:
            results[name] = None
            continue
        say(f"{name}: start")
        started = time.monotonic()
        try:
            results[name] = await asyncio.wait_for(drill(), budget)
        except Exception as exc:  # one drill failing (or over budget) does not stop the others
            results[name] = {"error": repr(exc)[:500]}
        results[name]["seconds"] = round(time.monotonic() - started, 1)
        say(f"{name}: {orjson.dumps(results[name]).decode()}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~3,000 hostile records, one kill")
    parser.add_argument("--hostile", type=int, help="hostile records (default 50,000; 3,000 with --quick)")
    parser.add_argument("--kills", type=int, help="kill -9 rounds (default 3; 1 with --quick)")
    parser.add_argument("--skip-broker-restart", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.hostile = args.hostile or (3_000 if args.quick else 50_000)
    args.kills = args.kills if args.kills is not None else (1 if args.quick else 3)
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a stopped broker is the point of drill 3
    workdir = Path(tempfile.mkdtemp(prefix="streamsafe-drills-"))
    hash_list = workdir / "known-csam.txt"  # the default policy trusts this bank as an authority
    hash_list.write_text("".join(f"md5:{canary_md5(i)}\n" for i in range(CANARIES)))
    started = time.monotonic()
    say(f"work dir {workdir}; starting Apache Kafka")
    broker = start_broker("kafka", workdir / "broker")
    ctx = Context(broker, workdir, hash_list, worker_env, dict(load_contract()))
    try:
        results = asyncio.run(run(ctx, args))
    finally:
        for worker in ctx.spawned:
            worker.stop(10)
        broker.stop()
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip() or None
    summary = {"broker": broker.kind, "head": head, "hostile_records": args.hostile, "worker_env": worker_env,
               **results, "seconds": round(time.monotonic() - started, 1), "logs": str(workdir)}
    if args.json:
        print(orjson.dumps(summary).decode())
        return
    print(f"StreamSafe fault drills on {broker.kind} at {head} ({summary['seconds']} s; logs in {workdir})")
    for name, figures in results.items():
        print(f"\n{name}: " + ("skipped" if figures is None else ""))
        for key, value in (figures or {}).items():
            print(f"  {key:<28} {'null' if value is None else value}")


if __name__ == "__main__":
    main()
