"""Factories for integration tests: unique topics and consumer groups per test,
workers run as real ``streamsafe worker`` processes, records read back over TCP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, load_contract
from streamsafe.settings import Settings

pytestmark = pytest.mark.integration


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0, after: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if self.log().count("streamsafe ready") > after:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Records:
    """Records read back from output topics, decoded."""

    items: list[tuple[str, bytes | None, dict[str, Any]]] = field(default_factory=list)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [value for t, _, value in self.items if t == topic]


@dataclass
class Pipeline:
    """One test's isolated world: its own topic prefix, app id and data dir."""

    settings: Settings
    tmp: Path
    contract: dict[str, Any]
    workers: list[Worker] = field(default_factory=list)
    _producer: AIOKafkaProducer | None = None

    def topic(self, name: str) -> str:
        return self.settings.topic_name(name)

    def start_worker(self, hash_list: Path | None = None, app_id: str | None = None, **env: str) -> Worker:
        environ = {
            **os.environ,
            "STREAMSAFE_BROKER": self.settings.broker_url,
            "STREAMSAFE_TOPIC_PREFIX": self.settings.topic_prefix,
            "STREAMSAFE_APP_ID": app_id or self.settings.app_id,
            "STREAMSAFE_DATA_DIR": str(self.tmp / "data"),
            "STREAMSAFE_SESSION_TIMEOUT_S": str(self.settings.session_timeout_s),
            "STREAMSAFE_REBALANCE_TIMEOUT_S": str(self.settings.rebalance_timeout_s),
            **env,
        }
        if hash_list is not None:
            environ["STREAMSAFE_HASH_LIST"] = str(hash_list)
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamsafe", "worker"],
                env=environ, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        worker = Worker(process, log_path)
        self.workers.append(worker)
        return worker

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap_servers, enable_idempotence=False,
                max_request_size=1_048_576,
            )
            await self._producer.start()
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: dict[str, Any] | bytes) -> Any:
        producer = await self.producer()
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        return await producer.send_and_wait(self.topic(topic), payload, key=key)

    async def read(
        self,
        until: Callable[[Records], bool],
        topics: tuple[str, ...] = (ACTIONS, ESCALATIONS, DEAD_LETTER),
        timeout_s: float = 30.0,
        settle_s: float = 0.0,
    ) -> Records:
        """Read output topics from the start until ``until`` holds (then keep reading
        ``settle_s`` longer, to catch records that should *not* be there)."""
        names = {self.topic(t): t for t in topics}
        consumer = AIOKafkaConsumer(
            *names, bootstrap_servers=self.settings.bootstrap_servers,
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
        )
        await consumer.start()
        records = Records()
        try:
            deadline = time.monotonic() + timeout_s
            settle_until: float | None = None
            while time.monotonic() < (settle_until or deadline):
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    for m in messages:
                        records.items.append((names[tp.topic], m.key, orjson.loads(m.value)))
                if settle_until is None and until(records):
                    settle_until = time.monotonic() + settle_s
            return records
        finally:
            await stop_consumer(consumer)

    async def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._producer is not None:
            await self._producer.stop()


@pytest.fixture
async def pipeline(broker, tmp_path):
    test_id = uuid.uuid4().hex[:8]
    tansu = "Tansu" in broker.kind
    settings = Settings(
        broker_url=broker.url,
        topic_prefix=f"t{test_id}.",
        app_id=f"streamsafe-t{test_id}",
        session_timeout_s=2.0 if tansu else 10.0,
        rebalance_timeout_s=2.0 if tansu else 10.0,
    )
    contract = load_contract()
    await apply_topics(settings, contract)
    world = Pipeline(settings, tmp_path, contract)
    yield world
    await world.close()


@pytest.fixture
def requires_table_recovery(broker):
    if not broker.recovers_tables:
        pytest.skip(f"{broker.kind} under-reports ListOffsets high-water marks: table recovery untestable")


