"""Run a worker process: check the topics against the contract, then hand over to Faust."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamsafe import clients
from streamsafe.brokers.base import stop_process
from streamsafe.brokers.topics import apply_topics
from streamsafe.errors import BrokerError, StreamSafeError
from streamsafe.events.contract import load_contract
from streamsafe.settings import ENV_PREFIX, Settings

__all__ = ["GIL_SWITCH_INTERVAL_S", "WorkerProcess", "run_worker", "spawn_worker"]

log = logging.getLogger(__name__)

#: how long a thread may hold the GIL while another asks for it (Python's default: 5 ms).
#: A worker's consumers fetch on threads of their own (Faust's, the frame pre-filter's,
#: ``streamsafe/agents/fetch_thread.py``) and its publishing producer sends on one
#: (``streamsafe/transport/send_thread.py``), beside the busy event loop; each fetch and send
#: needs the GIL a few times, so each of those waits held a known frame or its decision back.
#: At 1 ms, three alternating pairs at 2,700 msgs/s of the mix (``bench/latency.py``): probe
#: frames p99 111 / 75 / 71 ms against 181 / 149 / 86 ms, for ~15 µs more CPU per message.
#: At 0.25 ms, alternating runs at 4,700 msgs/s (agents giving the loop back while frames wait,
#: frames fetched 5 ms at a time): p99 28.5 / 31.4 / 31.4 / 39.0 / 27.2 / 31.0 ms against
#: 35.5 / 30.9 / 33.7 / 33.0 / 31.2 / 38.5 / 35.7 / 36.2 at 0.5 ms and 36.0 / 34.6 / 42.4 at 1 ms,
#: for ~2 µs more CPU per message than at 0.5 ms.
GIL_SWITCH_INTERVAL_S = 0.00025


def run_worker(settings: Settings) -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly)."""
    from streamsafe.app import changelog_topics, create_app

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

    if settings.event_loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # what FAUST_LOOP=uvloop does; new loops below are uvloop's
    contract = load_contract()
    loop = asyncio.new_event_loop()
    # Logging is not set up yet: a broker that cannot be reached reaches the user as the one
    # error line apply_topics raises (with the client's reason: a refused password, an
    # untrusted certificate), not also as aiokafka's own records on stderr.
    reason = clients.capture_client_errors()
    try:
        # a side service's own topics (direction "service") are not the worker's: it has no ACL on them
        own = {name: spec for name, spec in contract.items() if spec.direction != "service"}
        statuses = loop.run_until_complete(
            apply_topics(settings, own, internal=changelog_topics(settings, contract)))
        settings = loop.run_until_complete(clients.resolve_idempotence(settings))
    except BrokerError as exc:
        if not reason.message:
            raise
        raise BrokerError(f"{exc} ({reason.message})") from exc
    finally:
        loop.close()
        reason.release()
    created = [s.name for s in statuses if s.status == "created"]
    fewest = min(statuses, key=lambda s: s.replicas)
    app = create_app(settings, contract=contract)

    async def announce() -> None:  # a task: logging is set up only once the worker starts
        if created:
            log.info("created topics from the contract: %s", ", ".join(created))
        log.info("durability: producers acks=all, idempotent=%s; fewest replicas of any topic %d (%s)",
                 settings.idempotent_producer, fewest.replicas, fewest.name)

    app.task(announce)
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust_worker(app, settings).execute_from_commandline()


def faust_worker(app: Any, settings: Settings) -> Any:
    """Faust's worker for ``app``, logging at the settings' level and nothing below it.

    At ``warning`` and above, Faust's worker sets the root logger to DEBUG for a terminal
    spinner's handler: every debug call of aiokafka and Faust (several per record, some
    formatting keys and values) then built a record only to drop it: 7.7% of a worker's
    py-spy samples over a backlog drain (0.3% without the spinner). A worker is a service,
    not a terminal tool: no spinner.
    """
    import faust

    from streamsafe.observability.logs import json_logging_config

    level = settings.log_level.upper()
    logging_config = json_logging_config(level) if settings.log_format == "json" else None
    worker = faust.Worker(app, loglevel=level, quiet=True, logging_config=logging_config)
    worker.spinner = None
    return worker


@dataclass
class WorkerProcess:
    """A ``streamsafe worker`` child process (the demo, replay and benchmarks run real workers)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0  # where /metrics, /healthz and /readyz answer (0: not served)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self, after: int = 0) -> bool:
        """Whether the worker has said it is ready ``after + 1`` times (policies and banks loaded)."""
        from streamsafe.control.service import READY_MESSAGE

        return self.log_path.exists() and self.log().count(READY_MESSAGE) > after

    def wait_ready(self, timeout_s: float = 60.0, after: int = 0) -> None:
        """Until :meth:`is_ready`; raises if the worker exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StreamSafeError(f"worker exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            if self.is_ready(after):
                return
            time.sleep(0.05)
        raise StreamSafeError(f"worker not ready after {timeout_s:.0f}s:\n{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 30.0) -> int:
        return stop_process(self.process, timeout_s)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def worker_environment(settings: Settings, **extra: str | None) -> dict[str, str]:
    """The environment that gives a worker process these settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env.update(settings.to_env())
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def spawn_worker(settings: Settings, log_path: Path, **extra_env: str | None) -> WorkerProcess:
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamsafe", "worker"],
                                   env=worker_environment(settings, **extra_env),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return WorkerProcess(process, log_path, settings.http_port)
