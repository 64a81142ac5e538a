"""Readiness, rebalances, lag and gauges of a worker; the HTTP endpoints if a port is set.

``/readyz`` is 200 once the worker has joined its group, recovered its tables and
loaded its policies and banks, and for as long as it keeps deciding: every agent's
loop (and the frame pre-filter) runs, no record is in hand longer than
``stall_after_s``, deliveries are acknowledged, and no partition has lag without its
committed offset moving (:mod:`streamsafe.observability.liveness`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from streamsafe.agents.prefilter import FramePreFilter
from streamsafe.agents.records import RecordHandler
from streamsafe.control.service import ControlService
from streamsafe.observability.health import HealthServer
from streamsafe.observability.liveness import AgentRoster, DeliveryHealth, ProgressTracker
from streamsafe.observability.metrics import StreamSafeMetrics, lag
from streamsafe.settings import Settings

__all__ = ["STALL_CAUSES", "Watch", "install_readiness"]

log = logging.getLogger(__name__)

#: the ``cause`` label of ``streamsafe_stalled`` (see ``stalls`` below)
STALL_CAUSES = ("agent", "record", "delivery", "progress")


@dataclass(frozen=True)
class Watch:
    """What readiness watches after start-up (see :mod:`streamsafe.observability.liveness`)."""

    deliveries: DeliveryHealth  # the agents' sends
    forwards: DeliveryHealth  # the pre-filter's sends
    agents: AgentRoster
    progress: ProgressTracker


def install_readiness(app: faust.App, settings: Settings, handler: RecordHandler, control: ControlService,
                      states: Any, metrics: StreamSafeMetrics, watch: Watch,
                      prefilter: FramePreFilter | None) -> None:
    """Readiness, rebalances, lag and gauges; the HTTP endpoints if a port is set."""
    joined = asyncio.Event()

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        joined.set()

    @app.on_rebalance_complete.connect
    async def on_rebalance(app: faust.App, **kwargs: Any) -> None:
        metrics.rebalances.inc()

    def stalls() -> dict[str, bool]:
        """Causes of a stall, each True while it holds (only once the worker has started deciding)."""
        now = time.monotonic()
        started = control.ready.is_set() and joined.is_set() and not app.in_recovery
        in_hand = [t for t in (handler.oldest_in_flight(), handler.oldest_delivery(),
                               prefilter.oldest_in_hand() if prefilter is not None else None) if t is not None]
        return {
            "agent": started and (bool(watch.agents.missing())
                                  or (prefilter is not None and not prefilter.running)),
            "record": any(now - t > settings.stall_after_s for t in in_hand),
            "delivery": not (watch.deliveries.ok and watch.forwards.ok),
            "progress": started and bool(watch.progress.stalled(now)),
        }

    def conditions(stalled: dict[str, bool] | None = None) -> dict[str, bool]:
        stalled = stalled if stalled is not None else stalls()
        return {
            "partitions_assigned": joined.is_set(),
            "tables_recovered": joined.is_set() and not app.in_recovery,
            "policies_and_banks_loaded": control.ready.is_set(),
            "agents_running": not stalled["agent"],
            "no_record_stuck": not stalled["record"],
            "deliveries_acknowledged": not stalled["delivery"],
            "committing_progress": not stalled["progress"],
        }

    @app.timer(interval=min(5.0, settings.stall_after_s / 3))
    async def refresh_gauges() -> None:
        try:
            update_gauges()
        except Exception:  # observability must never take the worker down
            log.exception("refreshing gauges failed")

    def update_gauges() -> None:
        stalled_now = stalls()
        for cause, stalled in stalled_now.items():
            metrics.stalled.labels(cause).set(1 if stalled else 0)
        now = conditions(stalled_now)
        metrics.ready.set(1 if all(now.values()) else 0)
        metrics.table_recovered.set(1 if now["tables_recovered"] else 0)
        for bank, kinds in handler.banks.sizes().items():
            for signal_type, count in kinds.items():
                metrics.bank_entries.labels(bank, signal_type).set(count)
        if handler.banks.updated_at is not None:
            metrics.bank_last_update.set(handler.banks.updated_at)
        metrics.active_streams.set(len(states))
        metrics.policy_info.clear()
        metrics.policy_info.labels("live", handler.policies.live.version).set(1)
        for shadow in handler.policies.shadows.values():
            metrics.policy_info.labels("shadow", shadow.version).set(1)
        consumer = app.consumer
        committed = consumer.committed_offsets() if hasattr(consumer, "committed_offsets") else {}
        metrics.consumer_lag.clear()
        observed = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp.topic in handler.input_topic_names:
                # Faust keeps None for a partition never committed
                behind = lag(highwater, committed.get(tp))
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(behind)
                observed.append((tp, behind, committed.get(tp)))
        if prefilter is not None:  # the frames it has not screened yet
            for tp, behind in prefilter.lag().items():
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(behind)
                observed.append((("prefilter", tp), behind, prefilter.committed.get(tp)))
        watch.progress.observe(observed, time.monotonic())

    if settings.http_port:
        app.add_dependency(HealthServer(metrics, conditions, settings.http_host, settings.http_port))
