"""Factories for integration tests: unique topics and consumer groups per test,
workers run as real ``streamsafe worker`` processes, records read back over TCP."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamsafe import clients
from streamsafe.brokers.base import free_port
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, load_contract
from streamsafe.runner import WorkerProcess, spawn_worker
from streamsafe.settings import Settings
from tests.signing_support import encoded, write_keys

pytestmark = pytest.mark.integration


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
    workers: list[WorkerProcess] = field(default_factory=list)
    #: the run's key files (tests/signing_support.py): control_key, review_key, control_trust, verdict_trust
    keys: dict[str, Path] = field(default_factory=dict)
    _producer: AIOKafkaProducer | None = None

    def topic(self, name: str) -> str:
        return self.settings.topic_name(name)

    def start_worker(self, hash_list: Path | None = None, app_id: str | None = None,
                     **env: str) -> WorkerProcess:
        settings = self.settings.replace(app_id=app_id or self.settings.app_id, data_dir=self.tmp / "data",
                                         hash_list=hash_list, http_host="127.0.0.1", http_port=free_port())
        worker = spawn_worker(settings, self.tmp / f"worker-{len(self.workers)}.log", **env)
        self.workers.append(worker)
        return worker

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = clients.producer(self.settings, max_request_size=1_048_576)
            await self._producer.start()
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: dict[str, Any] | bytes | None) -> Any:
        """Send a record; a policy, bank entry or verdict given as a dict is signed by the test run's
        key for it (bytes go as they are: that is how a test sends an unsigned one)."""
        producer = await self.producer()
        return await producer.send_and_wait(self.topic(topic), encoded(topic, key, value), key=key)

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
        consumer = clients.consumer(self.settings, *names)
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

    def log_digest(self, tail: int = 25) -> str:
        """What each worker logged at warning and above (each logger's message once, with its
        count and first time) and its last ``tail`` lines: for a failed assertion's message, so a
        failure on a CI machine says what the worker was doing."""
        parts: list[str] = []
        for worker in self.workers:
            lines = worker.log().splitlines() if worker.log_path.exists() else []
            seen: dict[tuple[str, str], list[Any]] = {}
            for line in lines:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
                    continue
                key = (str(entry.get("logger")), str(entry.get("message"))[:200])
                seen.setdefault(key, [entry.get("ts"), 0])[1] += 1
            parts.append(f"--- {worker.log_path.name}: warnings and errors ---")
            parts += [f"{first} x{count} {logger}: {message}"
                      for (logger, message), (first, count) in list(seen.items())[:40]]
            parts.append(f"--- {worker.log_path.name}: last {tail} lines ---")
            parts += lines[-tail:]
        return "\n".join(parts)

    async def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._producer is not None:
            await self._producer.stop()


@pytest.fixture
async def pipeline(broker, tmp_path):
    test_id = uuid.uuid4().hex[:8]
    tansu = "Tansu" in broker.kind
    keys = write_keys(tmp_path / "keys")  # nothing runs unsigned: workers trust the run's keys
    settings = Settings(
        trusted_control_keys=keys["control_trust"], trusted_verdict_keys=keys["verdict_trust"],
        signing_key_file=keys["control_key"],
        broker_url=broker.url,
        replication_factor=1,  # the test broker is one node
        topic_prefix=f"t{test_id}.",
        app_id=f"streamsafe-t{test_id}",
        session_timeout_s=2.0 if tansu else 10.0,
        **{k: v for k, v in (("transport", os.environ.get("STREAMSAFE_TRANSPORT")),
                             ("event_loop", os.environ.get("STREAMSAFE_EVENT_LOOP"))) if v},
        rebalance_timeout_s=2.0 if tansu else 10.0,
    )
    contract = load_contract()
    await apply_topics(settings, contract)
    world = Pipeline(settings, tmp_path, contract, keys=keys)
    yield world
    await world.close()


#: the known-abuse MD5 in the integration tests' authority bank
KNOWN_MD5 = "5d41402abc4b2a76b9719d911017c592"


@pytest.fixture
def hash_list(tmp_path: Path) -> Path:
    """An authority bank ("ncmec", by its file name) holding :data:`KNOWN_MD5`; a module
    that needs other entries defines its own."""
    path = tmp_path / "ncmec.txt"
    path.write_text(f"md5:{KNOWN_MD5}\n")
    return path


@pytest.fixture
def requires_table_recovery(broker):
    if not broker.recovers_tables:
        pytest.skip(f"{broker.kind} under-reports ListOffsets high-water marks: table recovery untestable")




@dataclass
class SecuredWorld:
    """The session's secured broker (SASL_SSL, ACLs from ``streamsafe acls``) and the settings
    (topic prefix, app id) its topics and ACLs were made for."""

    kafka: Any  # streamsafe.brokers.secure.SecureKafka
    settings: Settings

    #: the session's key files (tests/signing_support.py): control_key, review_key, control_trust, verdict_trust
    keys: dict[str, Path]

    def signing_key(self, role: str) -> Path:
        """The private key ``role`` signs with: the review tool's for verdicts, the control key otherwise
        (bank and policy admins, and workers for the hashes reviewers confirm)."""
        return self.keys["review_key" if role == "reviewer-tool" else "control_key"]

    def role(self, role: str, **changes: Any) -> Settings:
        """The settings of a client logging in as ``role``'s user (trusting and signing with the run's keys)."""
        return self.kafka.role_settings(role, self.settings).replace(
            trusted_control_keys=self.keys["control_trust"], trusted_verdict_keys=self.keys["verdict_trust"],
            signing_key_file=self.signing_key(role)).replace(**changes)

    def environment(self, role: str) -> dict[str, str]:
        """``STREAMSAFE_*`` variables of a command run as ``role`` (the password and keys by file)."""
        return {**self.kafka.environment(self.kafka.roles[role]), "STREAMSAFE_TOPIC_PREFIX": self.settings.topic_prefix,
                "STREAMSAFE_APP_ID": self.settings.app_id, "STREAMSAFE_REPLICATION_FACTOR": "1",
                "STREAMSAFE_CREATE_TOPICS": "false",
                "STREAMSAFE_TRUSTED_CONTROL_KEYS": str(self.keys["control_trust"]),
                "STREAMSAFE_TRUSTED_VERDICT_KEYS": str(self.keys["verdict_trust"]),
                "STREAMSAFE_SIGNING_KEY_FILE": str(self.signing_key(role))}


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One secured Apache Kafka for the session's security tests: a CA and broker certificate
    made now, SCRAM-SHA-512 over TLS, deny by default, a user per role with exactly the ACLs
    ``streamsafe acls`` renders. Apache Kafka only (CI forces it: STREAMSAFE_TEST_BROKER=kafka)."""
    choice = os.environ.get("STREAMSAFE_TEST_BROKER", "auto")
    if choice == "auto":
        import shutil

        choice = "kafka" if shutil.which("java") else "tansu"
    if choice != "kafka":
        pytest.skip(f"SASL_SSL and ACLs are tested on Apache Kafka only (STREAMSAFE_TEST_BROKER={choice})")
    from streamsafe.brokers.secure import start_streamsafe_secure

    test_id = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"s{test_id}.", app_id=f"ss-s{test_id}", replication_factor=1,
                        min_insync_replicas=1, create_topics=False)
    kafka = start_streamsafe_secure(settings, tmp_path_factory.mktemp("secured-kafka"))
    yield SecuredWorld(kafka, settings, write_keys(tmp_path_factory.mktemp("secured-keys")))
    kafka.stop()
