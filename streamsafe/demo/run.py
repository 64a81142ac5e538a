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
from rich.console import Console
from rich.markup import escape

from streamsafe import clients
from streamsafe.brokers.local import start_broker
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.control.signing import SigningKey, generate_key
from streamsafe.demo.player import open_producer, play
from streamsafe.demo.scenario import Scenario, build_demo_scenario, known_hashes
from streamsafe.enforcement.statements_topic import read_statements
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, REPORTS, REVIEW_VERDICTS, load_contract
from streamsafe.events.values import Priority
from streamsafe.review.statements import STATEMENT_ACTIONS
from streamsafe.runner import spawn_worker
from streamsafe.settings import Settings

__all__ = ["run_demo"]

_STYLE = {"block": "bold red", "restrict": "red", "escalate": "bold yellow", "report": "bold magenta"}


@dataclass
class Observed:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def complete(self, scenario: Scenario) -> bool:
        blocked = {d["stream_id"] for d in self.decisions if d["action"] == "block"}
        escalated = {d["stream_id"] for d in self.decisions if d["action"] == "escalate"}
        return (scenario.expected_blocks <= blocked and scenario.expected_escalations <= escalated
                and len(self.dead_letters) >= scenario.malformed)

    def add_report(self, record: dict[str, Any]) -> None:
        """One entry per report: a report sent again, completed (``revision``), replaces the first."""
        for i, seen in enumerate(self.reports):
            if seen["report_id"] == record["report_id"]:
                if record.get("revision", 1) > seen.get("revision", 1):
                    self.reports[i] = record
                return
        self.reports.append(record)

    def escalation_of(self, stream_id: str) -> dict[str, Any] | None:
        mine = [d for d in self.decisions if d["stream_id"] == stream_id and d["action"] == "escalate"]
        return max(mine, key=lambda d: Priority(d["priority"]).rank, default=None)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _watch(settings: Settings, observed: Observed, console: Console | None,
                 scenario: Scenario, stop: asyncio.Event) -> None:
    names = {settings.topic_name(t): t for t in (ACTIONS, ESCALATIONS, DEAD_LETTER, REPORTS)}
    consumer = clients.consumer(settings, *names, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            received_ms = time.time() * 1000
            for tp, messages in batch.items():
                for message in messages:
                    record = orjson.loads(message.value)
                    observed.changed.set()
                    if names[tp.topic] == REPORTS:
                        observed.add_report(record)
                        if console:
                            label = "REPORT+" if record.get("revision") else "REPORT "
                            console.print(f"[bold magenta]{label}[/]     {record['stream_id']:<18} "
                                          f"{record['report_id']} {record['incident_type']} "
                                          f"{record.get('category', '')}, {len(record['hash_matches'])} hash "
                                          f"matches, {len(record['decisions'])} decisions ({record['trigger']})")
                        continue
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
    finally:
        await stop_consumer(consumer)


async def _until(observed: Observed, done: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        observed.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observed.changed.wait(), min(remaining, 0.5))
    return True


async def _drive(settings: Settings, scenario: Scenario, console: Console | None,
                 timeout_s: float, reviewer: SigningKey) -> Observed:
    observed = Observed()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(settings, observed, console, scenario, stop))
    producer = await open_producer(settings)
    try:
        await play(producer, settings, scenario.events, rate_per_s=400)
        await _until(observed, lambda: observed.complete(scenario), timeout_s)
        # a reviewer looks at the escalated streams: confirms one, finds the other benign
        reviewed = sorted(scenario.expected_escalations)
        for stream_id, verdict in zip(reviewed, ("confirmed", "benign"), strict=False):
            escalation = observed.escalation_of(stream_id)
            value: dict[str, Any] = {"schema_version": 1, "stream_id": stream_id, "verdict": verdict,
                                     "reviewer_id": "demo-reviewer", "ts_ms": int(time.time() * 1000)}
            if escalation:
                value["escalation_id"] = escalation["decision_id"]
            if verdict == "confirmed":
                value["category"] = "A2"
            if console:
                console.print(f"[bold]reviewer[/]    {stream_id:<18} {verdict}")
            key = stream_id.encode()  # the review tool signs its verdicts
            await producer.send_and_wait(settings.topic_name(REVIEW_VERDICTS),
                                         reviewer.sign_bytes(REVIEW_VERDICTS, key, value), key=key)
        expected_reports = len(scenario.expected_blocks) + 1
        await _until(observed, lambda: len(observed.reports) >= expected_reports, timeout_s)
    finally:
        await producer.stop()
    stop.set()
    await watcher
    return observed


def _record(settings: Settings, path: Path) -> int:
    from streamsafe.replay.recording import write_recording
    from streamsafe.transparency.source import read_topics

    events = asyncio.run(read_topics(settings))
    return write_recording(path, (e for e in events if e.value is None or isinstance(e.value, dict)))


async def _statements(settings: Settings, observed: Observed, timeout_s: float) -> list[dict[str, Any]]:
    """The statements of reasons on their topic, once every block/restrict seen has one (or time is up)."""
    wanted = {d["decision_id"] for d in observed.decisions if d["action"] in STATEMENT_ACTIONS}
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_statements(settings)
        if wanted <= {r["decision_id"] for r in records} or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.5)


def run_demo(*, as_json: bool = False, broker_kind: str = "tansu", streams: int = 40,
             reports_out: Path | None = None, record: Path | None = None,
             statements_out: Path | None = None) -> bool:
    """Returns True when every expected decision and dead letter was seen, and every block and
    restriction has its statement of reasons. ``reports_out`` / ``statements_out``: files for the
    report packets and statements of reasons the demo made, one JSON line each, as the topics hold
    them. ``record``: write what the run left on the enforcement, verdict and dead-letter topics there
    as a recording (the input of ``streamsafe transparency --recording``)."""
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
        # nothing runs unsigned: a bank/policy admin's key (the worker signs confirmed hashes with
        # it) and the review tool's, made for this run
        control_key, control_pub, _ = generate_key(workdir / "keys", "demo-control")
        review_key, review_pub, _ = generate_key(workdir / "keys", "demo-review")
        settings = Settings(broker_url=broker.url, app_id="streamsafe-demo", http_port=0, replication_factor=1,
                            session_timeout_s=2.0 if tansu else 10.0,
                            rebalance_timeout_s=2.0 if tansu else 10.0, trusted_control_keys=control_pub,
                            trusted_verdict_keys=review_pub, signing_key_file=control_key)
        asyncio.run(apply_topics(settings, load_contract()))
        say(f"broker {broker.bootstrap} ready, topics created; starting a worker…")
        worker = spawn_worker(settings.replace(hash_list=hash_list, data_dir=workdir / "data"),
                              workdir / "worker.log")
        try:
            worker.wait_ready(60)
            say(f"worker ready; playing {len(scenario.events)} events from {len(scenario.streams)} "
                "live streams (including malformed input)\n")
            observed = asyncio.run(_drive(settings, scenario, console, timeout_s=30,
                                          reviewer=SigningKey.load(review_key)))
            # a statement follows its decision at once, but a send the broker does not acknowledge is
            # resent only after the delivery timeout (10 s) and a back-off: on a starved machine the
            # embedded broker has needed more than two attempts
            statements = asyncio.run(_statements(settings, observed, timeout_s=60))
            if record is not None:
                recorded = _record(settings, record)
                say(f"recorded {recorded} records to {record}")
        finally:
            worker.stop()
    if reports_out is not None:
        reports_out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in observed.reports))
    decisions = Counter(d["action"] for d in observed.decisions)
    blocks = Counter(d["stream_id"] for d in observed.decisions if d["action"] == "block")
    stated = {r["decision_id"] for r in statements}
    unstated = [d["decision_id"] for d in observed.decisions if d["action"] in STATEMENT_ACTIONS
                and d["decision_id"] not in stated]
    if statements_out is not None:
        statements_out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in statements))
    ok = (observed.complete(scenario) and all(n == 1 for n in blocks.values())
          and len(observed.reports) >= len(scenario.expected_blocks) + 1 and not unstated)
    summary = {
        "ok": ok,
        "broker": broker_kind,
        "streams": len(scenario.streams),
        "events": len(scenario.events),
        "decisions": dict(sorted(decisions.items())),
        "dead_lettered": len(observed.dead_letters),
        "reports": len(observed.reports),
        "statements": len(stated),
        "decisions_without_statement": len(unstated),
        "latency_ms": {"p50": round(_percentile(observed.latencies_ms, 50), 1),
                       "p99": round(_percentile(observed.latencies_ms, 99), 1)},
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        say(f"\n[bold]{'done' if ok else 'INCOMPLETE'}[/]: {summary['streams']} streams, "
            f"decisions {summary['decisions']}, {summary['reports']} reports, "
            f"{summary['statements']} statements of reasons, "
            f"{summary['dead_lettered']} dead-lettered, "
            f"input-to-decision latency p50 {summary['latency_ms']['p50']} ms / "
            f"p99 {summary['latency_ms']['p99']} ms, {summary['seconds']} s")
    return ok
