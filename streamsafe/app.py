"""``create_app(settings)``: the only place the Faust app is built and agents are wired.

One agent per input topic; all input topics and the state table share one
partition count, so the records and state of a stream live on one worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust

from streamsafe.agents.prefilter import FramePreFilter, source_of
from streamsafe.agents.processor import StreamProcessor
from streamsafe.control.banks import BankControl
from streamsafe.control.broadcast import BroadcastReader
from streamsafe.control.policies import PolicyControl
from streamsafe.control.service import ControlService
from streamsafe.enforcement.kafka import KafkaPublisher
from streamsafe.errors import BankError
from streamsafe.events.contract import (
    ACTIONS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    FRAME_MATCHES,
    HASHBANK_ENTRIES,
    INPUT_TOPICS,
    POLICY,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
    SHADOW_DECISIONS,
    TIMERS,
    TopicSpec,
    load_contract,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.matching.banks import HashBanks, read_hash_list
from streamsafe.matching.pdq_index import warm_up as warm_up_matching
from streamsafe.observability.health import HealthServer
from streamsafe.observability.liveness import AgentRoster, DeliveryHealth, ProgressTracker
from streamsafe.observability.metrics import StreamSafeMetrics, lag
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.loop import ReviewConfig
from streamsafe.settings import KafkaSecurity, Settings

__all__ = ["STATE_TABLE", "changelog_topics", "create_app", "faust_credentials", "load_banks"]

log = logging.getLogger(__name__)

STATE_TABLE = "stream-state"
INCIDENT_TABLE = "incidents"


def faust_credentials(security: KafkaSecurity) -> Any:
    """Faust credentials for the configured TLS/SASL options (None for PLAINTEXT)."""
    ssl_context = security.aiokafka_kwargs().get("ssl_context")
    if security.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=ssl_context,
        )
    if security.protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return None


def changelog_topics(settings: Settings, contract: dict[str, TopicSpec]) -> dict[str, TopicSpec]:
    """The tables' changelog topics (and Faust's leader topic), by Faust's names
    (``<app id>-<table>-changelog``), with
    the input topics' partition count. The worker creates them before Faust starts: left to
    Faust, a fresh worker under load sometimes found no partitions for one ("Ignoring
    missing topic") and every table write then raised ``PartitionsMismatch``."""
    partitions = contract[FRAME_HASHES].partitions
    topics = {
        f"{settings.app_id}-{table}-changelog": TopicSpec(
            name=f"{settings.app_id}-{table}-changelog", direction="internal",
            description=f"changelog of the {table} table", partitions=partitions, key="stream_id",
            config={"cleanup.policy": "compact"}, schema_versions=(), schema={}, example={})
        for table in (STATE_TABLE, INCIDENT_TABLE)
    }
    leader = f"{settings.app_id}-__assignor-__leader"  # Faust's own, one partition
    topics[leader] = TopicSpec(name=leader, direction="internal", description="Faust's leader election",
                               partitions=1, key="none", config={}, schema_versions=(), schema={}, example={})
    return topics


def load_banks(settings: Settings) -> HashBanks:
    """The banks a worker matches against (the configured hash list, if any)."""
    banks = HashBanks()
    if settings.hash_list is None:
        return banks
    entries, problems = read_hash_list(settings.hash_list)
    for problem in problems:
        log.warning("hash list line %d skipped: %s", problem.line, problem.reason)
    if not entries:
        raise BankError(f"hash list {settings.hash_list} has no valid entries")
    banks.add_many(entries)
    log.info("loaded %d bank entries (%d lines skipped)", len(banks), len(problems))
    return banks


def create_app(
    settings: Settings,
    *,
    banks: HashBanks | None = None,
    contract: dict[str, TopicSpec] | None = None,
    metrics: StreamSafeMetrics | None = None,
) -> faust.App:
    contract = contract or load_contract()
    partitions = contract[FRAME_HASHES].partitions
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url,
        broker_credentials=faust_credentials(settings.security),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id,
        producer_acks=-1,
        # Faust's default is 20 minutes: a send to a partition without a leader would wait that
        # long; StreamSafe resends after delivery_timeout_s instead (enforcement/kafka.py)
        producer_request_timeout=max(30.0, settings.delivery_timeout_s * 3),
        # a changelog seen without partitions right after a rebalance is looked up again within
        # 30 s, not Faust's 5 minutes (the topics are created before start: see changelog_topics)
        consumer_metadata_max_age_ms=30_000,
        web_enabled=False,
        autodiscover=False,
    )
    states = app.Table(
        STATE_TABLE,
        partitions=partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )
    incidents = app.Table(
        INCIDENT_TABLE,
        partitions=partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )

    def output(name: str) -> Any:
        return app.topic(
            settings.topic_name(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=contract[name].partitions,
            internal=False,
        )

    metrics = metrics or StreamSafeMetrics.create()
    watch = Watch(DeliveryHealth(on_failure=metrics.delivery_failures.inc),
                  DeliveryHealth(on_failure=metrics.delivery_failures.inc), AgentRoster(),
                  ProgressTracker(settings.stall_after_s))
    publisher = KafkaPublisher(output(ACTIONS), output(ESCALATIONS), output(SHADOW_DECISIONS),
                               output(DEAD_LETTER), reports=output(REPORTS),
                               preservation=output(PRESERVATION), bank_entries=output(HASHBANK_ENTRIES),
                               timers=output(TIMERS), timeout_s=settings.delivery_timeout_s,
                               health=watch.deliveries)
    processor = StreamProcessor(
        decoder=InputDecoder(contract, settings.max_message_bytes),
        banks=banks if banks is not None else load_banks(settings),
        policies=PolicySet(load_policy(settings.policy_file)),
        states=states,
        publisher=publisher,
        metrics=metrics,
        incidents=incidents,
        review=ReviewConfig(
            benign_cooldown_s=settings.benign_cooldown_s,
            p0_breach_restrictions=("chat", "discovery", "gifting", "new_viewers")
            if settings.p0_breach_restrict else (),
            preserve_days=settings.preserve_days,
        ),
    )
    processor.count_inputs = settings.input_metrics
    policy_control = PolicyControl(contract[POLICY], lambda: processor.policies, processor.use_policies,
                                   publisher, metrics)
    bank_control = BankControl(processor.banks, publisher, metrics)
    service = ControlService([
        BroadcastReader(settings, settings.topic_name(POLICY), policy_control.apply),
        BroadcastReader(settings, settings.topic_name(HASHBANK_ENTRIES), bank_control.apply),
    ], warm_up=warm_up_matching)
    app.service(service)
    prefilter = None
    if settings.prefilter:
        prefilter = FramePreFilter(settings, processor, service.ready, health=watch.forwards)
        app.streamsafe_prefilter = prefilter  # type: ignore[attr-defined]
        app.service(prefilter)
    _observe(app, settings, processor, service, states, metrics, watch, prefilter)
    for name in (*INPUT_TOPICS, REVIEW_VERDICTS, TIMERS):
        # with the pre-filter, the frame agent reads only the frames that matched
        source = FRAME_MATCHES if settings.prefilter and name == FRAME_HASHES else name
        topic = app.topic(
            settings.topic_name(source),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            internal=False,
        )
        watch.agents.expected.add(name)
        app.agent(topic, name=f"streamsafe.{name}")(_agent_for(name, processor, service.ready, watch.agents,
                                                               forwarded=source != name))
        processor.input_topic_names.add(topic.get_topic_name())
    app.streamsafe_processor = processor  # type: ignore[attr-defined]
    app.streamsafe_control = service  # type: ignore[attr-defined]
    app.streamsafe_banks = bank_control  # type: ignore[attr-defined]

    sent_ticks: set[tuple[str, str, int]] = set()

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep() -> None:
        # Review deadlines and state expiry are found here but carried out by a tick
        # sent to the stream's own partition, so the work happens in an agent, where
        # the state lives; a repeated tick is harmless (decisions are deterministic).
        if not service.ready.is_set():
            return
        now = int(time.time() * 1000)
        ticks = processor.due_ticks(now, int(settings.ended_stream_ttl_s * 1000),
                                    int(settings.inactive_stream_ttl_s * 1000))
        for tick, partition in ticks:
            key = (tick.stream_id, tick.escalation_id or tick.kind, tick.due_ms)
            if key not in sent_ticks:
                sent_ticks.add(key)
                await publisher.send_tick(tick, partition)
        if len(sent_ticks) > 100_000:
            sent_ticks.clear()

    @app.timer(interval=5.0)
    async def compact_banks() -> None:
        # fold recent PDQ additions into the static index, off the per-frame path
        await asyncio.get_running_loop().run_in_executor(None, processor.banks.compact_if_needed)

    return app


@dataclass(frozen=True)
class Watch:
    """What readiness watches after start-up (see :mod:`streamsafe.observability.liveness`)."""

    deliveries: DeliveryHealth  # the agents' sends
    forwards: DeliveryHealth  # the pre-filter's sends
    agents: AgentRoster
    progress: ProgressTracker


def _observe(app: faust.App, settings: Settings, processor: StreamProcessor, control: ControlService,
             states: Any, metrics: StreamSafeMetrics, watch: Watch, prefilter: FramePreFilter | None) -> None:
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
        in_hand = [t for t in (processor.oldest_in_flight(),
                               prefilter.batch_started if prefilter is not None else None) if t is not None]
        return {
            "agent": started and (bool(watch.agents.missing())
                                  or (prefilter is not None and not prefilter.running)),
            "record": any(now - t > settings.stall_after_s for t in in_hand),
            "delivery": not (watch.deliveries.ok and watch.forwards.ok),
            "progress": started and bool(watch.progress.stalled(now)),
        }

    def conditions() -> dict[str, bool]:
        stalled = stalls()
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
        for cause, stalled in stalls().items():
            metrics.stalled.labels(cause).set(1 if stalled else 0)
        metrics.ready.set(1 if all(conditions().values()) else 0)
        metrics.table_recovered.set(1 if conditions()["tables_recovered"] else 0)
        for bank, kinds in processor.banks.sizes().items():
            for signal_type, count in kinds.items():
                metrics.bank_entries.labels(bank, signal_type).set(count)
        if processor.banks.updated_at is not None:
            metrics.bank_last_update.set(processor.banks.updated_at)
        metrics.active_streams.set(len(states))
        metrics.policy_info.clear()
        metrics.policy_info.labels("live", processor.policies.live.version).set(1)
        for shadow in processor.policies.shadows.values():
            metrics.policy_info.labels("shadow", shadow.version).set(1)
        consumer = app.consumer
        committed = consumer.committed_offsets() if hasattr(consumer, "committed_offsets") else {}
        metrics.consumer_lag.clear()
        observed = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp.topic in processor.input_topic_names:
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


def _agent_for(name: str, processor: StreamProcessor, ready: asyncio.Event, roster: AgentRoster,
               forwarded: bool = False) -> Callable[[Any], Any]:
    async def consume(stream: Any) -> None:
        roster.started(name)
        try:
            async for event in stream.events():
                if not ready.is_set():
                    await ready.wait()  # decide only with the policies (and banks) in force
                message = event.message
                source = SourceRecord(message.topic, message.partition, message.offset,
                                      _timestamp_ms(message.timestamp))
                if forwarded:  # a match the pre-filter forwarded: it counted the input
                    source = source_of(message.headers, source)
                await processor.handle(name, message.key, message.value, source, counted=forwarded)
        finally:
            roster.stopped(name)

    consume.__name__ = consume.__qualname__ = f"consume_{name.replace('.', '_').replace('-', '_')}"
    return consume


def _timestamp_ms(timestamp: float | None) -> int | None:
    return None if timestamp is None else round(timestamp * 1000)
