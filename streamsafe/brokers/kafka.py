"""Apache Kafka in KRaft mode (combined broker + controller nodes) from Maven Central jars.

The jars are fetched once with Maven (``kafka_2.13`` and its runtime dependencies,
plus a log4j2 binding) into ``~/.cache/streamsafe/kafka/<version>/libs``; each
start formats fresh storage with a random cluster id and listens on free
loopback ports. :func:`start_kafka` runs one node (development, most tests);
:func:`start_kafka_cluster` runs several in one quorum, for what needs replicas:
StreamSafe's production durability (3 replicas, 2 in sync) and losing a broker.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamsafe.brokers.base import BrokerProcess, free_ports, wait_until_ready
from streamsafe.errors import BrokerError

__all__ = ["KAFKA_VERSION", "KafkaCluster", "fetch_kafka", "java_available", "start_kafka", "start_kafka_cluster"]

KAFKA_VERSION = "4.1.2"
_HERE = Path(__file__).resolve().parent


def cache_root() -> Path:
    return Path(os.environ.get("STREAMSAFE_CACHE", Path.home() / ".cache" / "streamsafe"))


def java_available() -> bool:
    return shutil.which("java") is not None


def fetch_kafka(version: str = KAFKA_VERSION) -> Path:
    """The directory of broker jars for ``version``, downloading them if absent."""
    libs = cache_root() / "kafka" / version / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker jars")
    libs.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(_HERE / "kafka-runtime.pom.xml"), f"-Dkafka.version={version}",
         "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BrokerError(f"fetching Kafka {version} jars failed:\n{result.stdout}\n{result.stderr}")
    partial.rename(libs)  # atomic: a half-finished download is never mistaken for a cache
    return libs


def _java_opts(heap: str) -> list[str]:
    return [
        "-Xms128m", f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={_HERE / 'kafka-log4j2.properties'}",
        "-Dlog4j2.disable.jmx=true",
    ]


def _server_properties(data: Path, port: int, controller_port: int, node_id: int = 1, voters: str | None = None,
                       replicas: int = 1) -> str:
    """One combined node's properties; ``voters``: the quorum (default: this node alone);
    ``replicas``: the replication of Kafka's own topics (consumer offsets, transactions).

    ``log.index.size.max.bytes``: each partition's segment preallocates its offset and
    time indexes at this size, sparse, and maps them. On this host's kernel the first
    write to a fresh index faults in a large readahead window that the kernel zero-fills,
    in a request handler: with Kafka's default of 10 MiB, the partitions a worker first
    writes to held the broker's two handlers in kernel memset (a quarter of the host's
    CPU samples) and decisions waited up to 1.4 s. A 16 MiB segment needs at most 4,096
    entries (one per 4 KiB of log): 48 KiB of time index, so 128 KiB is ample."""
    voters = voters or f"{node_id}@127.0.0.1:{controller_port}"
    min_isr = max(1, replicas - 1)
    return f"""\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data / "logs"}
num.partitions=1
default.replication.factor={replicas}
auto.create.topics.enable=false
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.segment.bytes=16777216
log.index.size.max.bytes=131072
message.max.bytes=1048588
"""


def _format(libs: Path, properties: Path, cluster_id: str, heap: str,
            scram_users: Mapping[str, str] | None = None) -> None:
    java = shutil.which("java") or "java"
    scram = [arg for name, password in (scram_users or {}).items()
             for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
    # '=' form: a base64url id may start with '-', which would read as an option
    formatted = subprocess.run(
        [java, *_java_opts(heap), "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
         f"--cluster-id={cluster_id}", "-c", str(properties), "--ignore-formatted", *scram],
        capture_output=True, text=True, check=False,
    )
    if formatted.returncode != 0:
        raise BrokerError(f"formatting Kafka storage failed:\n{formatted.stdout}{formatted.stderr}")


def _launch(libs: Path, properties: Path, heap: str, kind: str, bootstrap: str) -> BrokerProcess:
    java = shutil.which("java") or "java"
    log_path = properties.parent / "kafka.out"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [java, *_java_opts(heap), "-cp", f"{libs}/*", "kafka.Kafka", str(properties)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return BrokerProcess(kind, bootstrap, process, log_path)


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def start_kafka(
    data_dir: Path | None = None,
    *,
    version: str = KAFKA_VERSION,
    port: int | None = None,
    controller_port: int | None = None,
    heap: str = "512m",
    ready_timeout_s: float = 90.0,
    extra_properties: str = "",
    scram_users: Mapping[str, str] | None = None,
    kind: str | None = None,
) -> BrokerProcess:
    """Start a fresh single-node KRaft broker and wait until clients can use it.
    ``extra_properties`` are appended to its server properties (later keys win: e.g. more
    listeners, an authorizer); ``scram_users`` (name -> password) get SCRAM-SHA-512 credentials
    when the storage is formatted."""
    if not java_available():
        raise BrokerError("Java is needed to run Apache Kafka (java not on PATH)")
    libs = fetch_kafka(version)
    data = Path(data_dir or tempfile.mkdtemp(prefix="streamsafe-kafka-"))
    data.mkdir(parents=True, exist_ok=True)
    if port is None or controller_port is None:
        port, controller_port = free_ports(2)
    properties = data / "server.properties"
    properties.write_text(_server_properties(data, port, controller_port) + extra_properties)
    _format(libs, properties, _cluster_id(), heap, scram_users)
    broker = _launch(libs, properties, heap, kind or f"Apache Kafka {version}", f"127.0.0.1:{port}")
    wait_until_ready(broker, ready_timeout_s)
    return broker


@dataclass
class KafkaCluster:
    """Several KRaft nodes (each broker and controller) in one quorum, on loopback."""

    nodes: list[BrokerProcess]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def kind(self) -> str:
        return f"{self.nodes[0].kind.rsplit(' (', 1)[0]} ({len(self.nodes)} nodes)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to every node at once, then SIGKILL to those still running after ``timeout_s``
        (a node whose quorum has gone cannot finish a controlled shutdown)."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            try:
                node.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_kafka_cluster(
    nodes: int = 3,
    data_dir: Path | None = None,
    *,
    version: str = KAFKA_VERSION,
    heap: str = "256m",
    ready_timeout_s: float = 120.0,
) -> KafkaCluster:
    """Start ``nodes`` fresh KRaft nodes in one quorum (Kafka's own topics replicated on all
    of them, up to 3) and wait until each answers clients."""
    if not java_available():
        raise BrokerError("Java is needed to run Apache Kafka (java not on PATH)")
    libs = fetch_kafka(version)
    data = Path(data_dir or tempfile.mkdtemp(prefix="streamsafe-kafka-cluster-"))
    ports = free_ports(2 * nodes)
    listen, control = ports[:nodes], ports[nodes:]
    voters = ",".join(f"{i + 1}@127.0.0.1:{control[i]}" for i in range(nodes))
    cluster_id = _cluster_id()
    started: list[BrokerProcess] = []
    try:
        for i in range(nodes):
            node_dir = data / f"node-{i + 1}"
            node_dir.mkdir(parents=True, exist_ok=True)
            properties = node_dir / "server.properties"
            properties.write_text(_server_properties(node_dir, listen[i], control[i], i + 1, voters,
                                                     replicas=min(nodes, 3)))
            _format(libs, properties, cluster_id, heap)
            # every node starts before any is waited for: a quorum forms only once most voters run
            started.append(_launch(libs, properties, heap, f"Apache Kafka {version} (node {i + 1})",
                                   f"127.0.0.1:{listen[i]}"))
        for node in started:
            wait_until_ready(node, ready_timeout_s)
    except BaseException:
        for node in started:
            node.stop()
        raise
    return KafkaCluster(started)


def restart_kafka(broker: BrokerProcess, *, version: str = KAFKA_VERSION, heap: str = "512m",
                  ready_timeout_s: float = 90.0) -> None:
    """Start a stopped broker again on its own storage, ports and properties (fault drills)."""
    properties = broker.log_path.parent / "server.properties"
    java = shutil.which("java") or "java"
    with broker.log_path.open("ab") as log:
        broker.process = subprocess.Popen(
            [java, *_java_opts(heap), "-cp", f"{fetch_kafka(version)}/*", "kafka.Kafka", str(properties)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    wait_until_ready(broker, ready_timeout_s)
