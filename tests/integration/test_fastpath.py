"""The fast delivery path end to end through the real broker: Faust workers on
streamsafe:// (and on stock kafka:// for comparison) see every message exactly once;
no message sent while workers start or rebalance is skipped (the safe seek);
a worker joining mid-run loses nothing and neither worker hangs; a delivery blocked
on a full stream buffer when the rebalance starts is interrupted and re-delivered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamsafe import clients
from streamsafe.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 16
WORKER = Path(__file__).resolve().parent / "fastpath_worker.py"


@pytest.fixture(scope="module")
def bootstrap(broker) -> Iterator[str]:
    """A broker of this module's own: these tests push 10k-60k-message, 16-partition
    topics through it, load that should not bleed into the other tests' timing."""
    if "Tansu" in broker.kind:
        pytest.skip("Tansu's group joins wait the whole session timeout: rebalance timing untestable")
    if broker.kind == "external broker":
        yield broker.bootstrap
        return
    from streamsafe.brokers.kafka import start_kafka

    own = start_kafka()
    try:
        yield own.bootstrap
    finally:
        own.stop()


def produce(bootstrap: str, topic: str, n: int) -> None:
    async def run() -> None:
        from aiokafka.admin import NewTopic

        settings = Settings(broker_url=f"kafka://{bootstrap}")
        admin = clients.admin(settings)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        producer = clients.producer(settings, acks=1, linger_ms=10)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, json.dumps({"id": i}).encode(), key=str(i).encode())
                for i in range(n)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    record: Path
    log: Path

    def records(self) -> list[tuple[int, int, int, float]]:
        if not self.record.exists():
            return []
        out = []
        # the worker may be writing its last line right now: only whole lines count
        for line in self.record.read_text().split("\n")[:-1]:
            p, o, i, t = line.split()
            out.append((int(p), int(o), int(i), float(t)))
        return out

    def stats(self) -> dict[str, Any]:
        path = Path(f"{self.record}.stats.json")
        return json.loads(path.read_text()) if path.exists() else {}

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: a worker that does not exit in time has hung."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"worker did not stop within {timeout}s:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def start_worker(tmp: Path, name: str, *, transport: str, bootstrap: str, topic: str, app_id: str,
                 extra: list[str]) -> Worker:
    record, log = tmp / f"{name}.rec", tmp / f"{name}.log"
    cmd = [sys.executable, str(WORKER), "--transport", transport, "--bootstrap", bootstrap,
           "--topic", topic, "--app-id", app_id, "--record", str(record), *extra]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
    return Worker(proc, record, log)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, *workers: Worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for w in workers:
            if w.proc.poll() is not None:
                raise AssertionError(f"worker exited early ({w.proc.returncode}):\n{w.tail()}")
        time.sleep(0.2)
    tails = "\n---\n".join(w.tail() for w in workers)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


SLOW = ["--buffer", "8", "--slow-every", "25", "--slow-s", "0.001"]


@pytest.mark.parametrize("transport", ["streamsafe", "kafka"])
@pytest.mark.parametrize("profile", ["fast-agent", "slow-agent-tiny-buffer"])
def test_every_message_exactly_once(bootstrap: str, tmp_path: Path, transport: str, profile: str) -> None:
    n = 10_000
    topic = f"eo-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, n)
    extra = SLOW if profile.startswith("slow") else []
    w = start_worker(tmp_path, "solo", transport=transport, bootstrap=bootstrap, topic=topic,
                     app_id=f"eo-{uuid.uuid4().hex[:8]}", extra=extra)
    try:
        wait_until(lambda: len(w.records()) >= n, 240, f"{n} records", w)
        time.sleep(3)  # anything delivered twice would show up now
        assert w.proc.poll() is None, w.tail()
    finally:
        code = w.stop()
    recs = w.records()
    ids = Counter(r[2] for r in recs)
    assert len(recs) == n, f"{len(recs)} records for {n} messages"
    assert set(ids) == set(range(n))
    assert max(ids.values()) == 1
    assert len({(p, o) for p, o, _, _ in recs}) == n
    assert code == 0, w.tail()
    stats = w.stats()
    print(f"\n{transport} {profile}: {stats}")
    if transport == "streamsafe":
        delivery = stats["delivery"]
        assert delivery["eager"] > 0
        if profile.startswith("slow"):
            assert delivery["handed_off"] > 0  # the blocking path was exercised


#: one event in flight, 10 ms each: the drain is nearly always blocked on a full
#: stream buffer, so the rebalance interrupts a handed-off delivery
CRAWL = ["--buffer", "1", "--slow-every", "1", "--slow-s", "0.01"]


def join_mid_run(bootstrap: str, tmp: Path, transport: str, profile: str) -> dict[str, Any]:
    """Worker A drains a topic; B joins once A is a fifth through. Checks that nothing is
    lost, both keep working, both stop cleanly and redeliveries stay within a commit
    interval's worth; returns A's stats."""
    n = 60_000 if profile == "slow" else 2_000
    topic = f"rb-{uuid.uuid4().hex[:8]}"
    app_id = f"rb-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, n)
    kw: dict[str, Any] = dict(transport=transport, bootstrap=bootstrap, topic=topic, app_id=app_id,
                              extra=SLOW if profile == "slow" else CRAWL)
    tmp.mkdir(parents=True, exist_ok=True)
    a = start_worker(tmp, "a", **kw)
    b: Worker | None = None
    try:
        wait_until(lambda: len(a.records()) >= n // 5, 120, "worker A to get going", a)
        joined = time.monotonic()
        b = start_worker(tmp, "b", **kw)

        def union() -> set[int]:
            assert b is not None
            return {r[2] for r in a.records()} | {r[2] for r in b.records()}

        wait_until(lambda: len(union()) >= n, 300, "all messages across both workers", a, b)
        time.sleep(3)
        assert a.proc.poll() is None, a.tail()
        assert b.proc.poll() is None, b.tail()
    finally:
        code_b = b.stop() if b is not None else None
        code_a = a.stop()
    ra, rb = a.records(), b.records()
    assert {r[2] for r in ra} | {r[2] for r in rb} == set(range(n)), "messages lost"
    assert rb, "worker B never received anything"
    assert any(t > joined for _, _, _, t in ra), "worker A stopped processing after B joined"
    assert code_a == 0 and code_b == 0, (a.tail(), b.tail())
    ids = Counter(r[2] for r in ra + rb)
    dup = sum(c - 1 for c in ids.values())
    after = [r for r in ra if r[3] > joined]
    print(
        f"\n{transport} {profile}: A {len(ra)} (after join {len(after)}), B {len(rb)}, "
        f"redelivered after rebalance {dup}; A {a.stats()}; B {b.stats()}"
    )
    # at-least-once across a rebalance: only what was processed but not yet
    # committed may come again, bounded by the commit interval's worth
    assert dup < n // 4
    return a.stats()


@pytest.mark.parametrize("transport", ["streamsafe", "kafka"])
@pytest.mark.parametrize("profile", ["slow", "crawl"])
def test_worker_joining_mid_run_loses_nothing_and_nothing_hangs(bootstrap: str, tmp_path: Path,
                                                                 transport: str, profile: str) -> None:
    stats = join_mid_run(bootstrap, tmp_path / "1", transport, profile)
    if transport == "streamsafe" and profile == "crawl":
        # the path under test: a blocked delivery interrupted by the rebalance. A is blocked
        # on its one-event buffer nearly all the time, but the rebalance can still land between
        # two deliveries (seen once in several runs: no interruption, nothing wrong); each
        # further attempt is a whole new run, checked in full, and one of three must hit it
        attempt = 1
        while stats["delivery"]["interrupted"] == 0 and attempt < 3:
            attempt += 1
            stats = join_mid_run(bootstrap, tmp_path / str(attempt), transport, profile)
        assert stats["delivery"]["interrupted"] >= 1, f"no delivery interrupted in {attempt} rebalances"


class LiveProducer:
    """Produces ids 0, 1, 2, ... to ``topic`` at ``rate`` msgs/s in a thread of its own
    until stopped: traffic that keeps arriving while workers start and rebalance."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        import threading

        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        producer = clients.producer(Settings(broker_url=f"kafka://{self.bootstrap}"), acks=1, linger_ms=5)
        await producer.start()
        try:
            started = time.monotonic()
            while not self._stop.is_set():
                due = started + self.sent / self.rate
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                await producer.send_and_wait(self.topic, json.dumps({"id": self.sent}).encode(),
                                             key=str(self.sent).encode())
                self.sent += 1
        finally:
            await producer.stop()

    def __enter__(self) -> LiveProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("transport", ["streamsafe", "streamsafe-stock"])
def test_traffic_during_start_and_rebalance_is_all_processed(bootstrap: str, tmp_path: Path,
                                                             transport: str) -> None:
    """At least once while a new group starts and a second worker joins, with
    producers sending all along: the seeks at the end of each rebalance must not
    skip what was fetched while they ran (the safe seek in streamsafe.transport).
    This small worker rarely hits the window on stock kafka://; the StreamSafe
    worker, with six input topics to seek, does (test_worker's restart test)."""
    topic = f"live-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, topic, 0)  # creates the topic, 16 partitions, none ever committed
    kw: dict[str, Any] = dict(transport=transport, bootstrap=bootstrap, topic=topic,
                              app_id=f"live-{uuid.uuid4().hex[:8]}", extra=["--table"])
    a = start_worker(tmp_path, "a", **kw)
    b: Worker | None = None
    try:
        with LiveProducer(bootstrap, topic, rate=400) as live:
            wait_until(lambda: len(a.records()) >= 400, 120, "worker A to get going", a)
            b = start_worker(tmp_path, "b", **kw)
            wait_until(lambda: b is not None and len(b.records()) >= 400, 120, "worker B to get going", a, b)
        sent = live.sent

        def union() -> set[int]:
            assert b is not None
            return {r[2] for r in a.records()} | {r[2] for r in b.records()}

        wait_until(lambda: len(union()) >= sent, 120, f"all {sent} messages across both workers", a, b)
    finally:
        code_b = b.stop() if b is not None else None
        code_a = a.stop()
    seen = union()
    missing = sorted(set(range(sent)) - seen)
    print(f"\n{transport}: sent {sent}, A {len(a.records())}, B {len(b.records())}, missing {len(missing)}")
    assert not missing, f"{len(missing)} of {sent} lost, e.g. {missing[:10]}"
    assert code_a == 0 and code_b == 0, (a.tail(), b.tail())
