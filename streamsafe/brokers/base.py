"""What every local broker StreamSafe runs has in common."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamsafe import clients
from streamsafe.errors import BrokerError
from streamsafe.settings import Settings

__all__ = ["BrokerProcess", "free_port", "free_ports", "stop_process", "wait_until_ready"]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM (a clean shutdown), then SIGKILL if it does not end in time; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class BrokerProcess:
    """A broker running as a child process on loopback."""

    kind: str
    bootstrap: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: what this broker can be trusted with in tests (Tansu cannot recover tables)
    recovers_tables: bool = True

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_process(self.process, timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _metadata_ok(bootstrap: str) -> bool:

    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            pass
    except OSError:
        return False  # not listening yet; skip the client and its error logging

    admin = clients.admin(Settings(broker_url=f"kafka://{bootstrap}"), request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def wait_until_ready(broker: BrokerProcess, timeout_s: float = 60.0) -> None:
    """Block until a Kafka client can fetch metadata, or raise with the broker's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise BrokerError(
                f"{broker.kind} exited with code {broker.process.returncode}:\n{broker.log_tail()}"
            )
        if asyncio.run(_metadata_ok(broker.bootstrap)):
            return
        time.sleep(0.2)
    broker.stop()
    raise BrokerError(f"{broker.kind} not ready after {timeout_s:.0f}s:\n{broker.log_tail()}")
