"""`streamsafe demo`: embedded broker, topics, a worker, a scenario, live decisions, a summary."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.markup import escape

from streamsafe.brokers.local import start_broker
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.demo.player import open_producer, play
from streamsafe.demo.scenario import Scenario, build_demo_scenario, known_hashes
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, load_contract
from streamsafe.runner import spawn_worker
from streamsafe.settings import Settings

__all__ = ["run_demo"]

_STYLE = {"block": "bold red", "restrict": "red", "escalate": "bold yellow", "report": "bold magenta"}


@dataclass
class Observed:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def complete(self, scenario: Scenario) -> bool:
        blocked = {d["stream_id"] for d in self.decisions if d["action"] == "block"}
        escalated = {d["stream_id"] for d in self.decisions if d["action"] == "escalate"}
        return (scenario.expected_blocks <= blocked and scenario.expected_escalations <= escalated
                and len(self.dead_letters) >= scenario.malformed)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _watch(settings: Settings, observed: Observed, console: Console | None,
                 scenario: Scenario, stop: asyncio.Event) -> None:
    names = {settings.topic_name(t): t for t in (ACTIONS, ESCALATIONS, DEAD_LETTER)}
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=settings.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            received_ms = time.time() * 1000
            for tp, messages in batch.items():
                for message in messages:
                    record = orjson.loads(message.value)
                    if names[tp.topic] == DEAD_LETTER:
                        observed.dead_letters.append(record)
                        if console:
                            console.print(f"[dim]dead-letter[/]  {record['reason']:<17} "
                                          f"from {record['source']['topic']}")
                        continue
                    latency = received_ms - record["event_ts_ms"]
                    observed.decisions.append(record)
                    observed.latencies_ms.append(latency)
                    if console:
                        action = record["action"] + (f" {record['priority']}" if "priority" in record else "")
                        style = _STYLE.get(record["action"], "bold")
                        console.print(f"[{style}]{action:<11}[/] {record['stream_id']:<18} "
                                      f"{escape(record['reasons'][0])}  [dim]({latency:.0f} ms)[/]")
            if observed.complete(scenario):
                stop.set()
    finally:
        await stop_consumer(consumer)


async def _drive(settings: Settings, scenario: Scenario, console: Console | None,
                 timeout_s: float) -> Observed:
    observed = Observed()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, observed, console, scenario, stop))
    producer = await open_producer(settings)
    try:
        await play(producer, settings, scenario.events, rate_per_s=400)
    finally:
        await producer.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)
    stop.set()
    await watcher
    return observed


def run_demo(*, as_json: bool = False, broker_kind: str = "tansu", streams: int = 40) -> bool:
    """Returns True when every expected decision and dead letter was seen."""
    console = None if as_json else Console(highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="streamsafe-demo-"))
    scenario = build_demo_scenario(benign=max(streams - 4, 0))
    hash_list = workdir / "demo-known.txt"
    hash_list.write_text("".join(f"md5:{md5}\nsha256:{sha}\n" for md5, sha in known_hashes()))
    started = time.monotonic()
    say = console.print if console else (lambda *a, **k: None)
    say(f"[bold]StreamSafe demo[/]: starting the embedded {broker_kind} broker…")
    with start_broker(broker_kind, workdir / "broker") as broker:
        tansu = broker_kind == "tansu"
        settings = Settings(broker_url=broker.url, app_id="streamsafe-demo", http_port=0,
                            session_timeout_s=2.0 if tansu else 10.0,
                            rebalance_timeout_s=2.0 if tansu else 10.0)
        asyncio.run(apply_topics(settings, load_contract()))
        say(f"broker {broker.bootstrap} ready, topics created; starting a worker…")
        worker = spawn_worker(settings.replace(hash_list=hash_list, data_dir=workdir / "data"),
                              workdir / "worker.log")
        try:
            worker.wait_ready(60)
            say(f"worker ready; playing {len(scenario.events)} events from {len(scenario.streams)} "
                "live streams (including malformed input)\n")
            observed = asyncio.run(_drive(settings, scenario, console, timeout_s=30))
        finally:
            worker.stop()
    decisions = Counter(d["action"] for d in observed.decisions)
    blocks = Counter(d["stream_id"] for d in observed.decisions if d["action"] == "block")
    ok = observed.complete(scenario) and all(n == 1 for n in blocks.values())
    summary = {
        "ok": ok,
        "broker": broker_kind,
        "streams": len(scenario.streams),
        "events": len(scenario.events),
        "decisions": dict(sorted(decisions.items())),
        "dead_lettered": len(observed.dead_letters),
        "latency_ms": {"p50": round(_percentile(observed.latencies_ms, 50), 1),
                       "p99": round(_percentile(observed.latencies_ms, 99), 1)},
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        say(f"\n[bold]{'done' if ok else 'INCOMPLETE'}[/]: {summary['streams']} streams, "
            f"decisions {summary['decisions']}, {summary['dead_lettered']} dead-lettered, "
            f"input-to-decision latency p50 {summary['latency_ms']['p50']} ms / "
            f"p99 {summary['latency_ms']['p99']} ms, {summary['seconds']} s")
    return ok
