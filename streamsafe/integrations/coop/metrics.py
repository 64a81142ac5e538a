"""Metrics of the Coop bridge: one bundle per process, against its own registry.

Label values are bounded sets (outcomes, refusal reasons): never stream ids or emails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["CALLBACK_OUTCOMES", "FORWARD_OUTCOMES", "CoopMetrics", "metrics_handler", "serve_metrics"]

#: what happened to an escalation the forwarder read (``failed`` counts attempts; it is retried)
FORWARD_OUTCOMES = ("forwarded", "duplicate", "failed", "rejected", "invalid")
#: what happened to a callback: ``accepted`` or the reason it was refused
CALLBACK_OUTCOMES = ("accepted", "unsigned", "bad_signature", "too_large", "malformed", "undated", "stale",
                     "replayed", "unknown_item", "no_reviewer", "invalid_verdict", "unavailable")


@dataclass(frozen=True)
class CoopMetrics:
    registry: CollectorRegistry
    escalations: Counter
    pending: Gauge
    callbacks: Counter
    ledger: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> CoopMetrics:
        registry = registry or CollectorRegistry()
        metrics = cls(
            registry=registry,
            escalations=Counter("streamsafe_coop_escalations", "Escalations read by the Coop forwarder, by outcome "
                                "(failed: one attempt that Coop did not answer with 2xx; retried)",
                                ["outcome"], registry=registry),
            pending=Gauge("streamsafe_coop_escalations_pending",
                          "Escalations read and not yet forwarded (waiting for Coop)", registry=registry),
            callbacks=Counter("streamsafe_coop_callbacks", "Coop action callbacks, accepted or refused by reason",
                              ["outcome"], registry=registry),
            ledger=Gauge("streamsafe_coop_ledger_escalations",
                         "Escalations this process knows were forwarded to Coop (read from streamsafe.coop-reports)",
                         registry=registry),
        )
        for outcome in FORWARD_OUTCOMES:
            metrics.escalations.labels(outcome)
        for outcome in CALLBACK_OUTCOMES:
            metrics.callbacks.labels(outcome)
        return metrics


def metrics_handler(metrics: CoopMetrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
    return handle


async def serve_metrics(metrics: CoopMetrics, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` and ``/healthz`` (for a process with no other HTTP service); cleanup() stops it."""
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics))
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
