"""``/metrics``, ``/healthz`` and ``/readyz`` on each worker (aiohttp, on the worker's loop).

* ``/healthz``: the process and its event loop are alive (the server answering is the proof).
* ``/readyz``: 200 only when the worker has joined its group and been assigned
  partitions, its tables are recovered, and its policies and banks are loaded;
  503 with the conditions otherwise.
* ``/metrics``: the Prometheus exposition of StreamSafe's registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamsafe.observability.metrics import StreamSafeMetrics

__all__ = ["HealthServer"]


class HealthServer(Service):
    def __init__(self, metrics: StreamSafeMetrics, conditions: Callable[[], Mapping[str, bool]],
                 host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self.conditions = conditions
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.metrics.worker_up.set(1)
        self.log.info("serving /metrics, /healthz, /readyz on %s:%d", self.host, self.port)

    async def on_stop(self) -> None:
        self.metrics.worker_up.set(0)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        conditions = dict(self.conditions())
        ready = all(conditions.values())
        self.metrics.ready.set(1 if ready else 0)
        return web.Response(body=orjson.dumps({"ready": ready, **conditions}), status=200 if ready else 503,
                            content_type="application/json")
