"""``create_app(settings)``: the only place the Faust app is built; wiring only.

Tables, the publisher, the record handler (``agents/records.py``), the control
readers, the frame pre-filter, readiness, agents and timers (``agents/``) are built
and connected here. All input topics and the tables share one partition count, so
the records and state of a stream live on one worker. An account's state lives on
the partition of its id in ``streamsafe.account-signals`` (its own table, ``accounts``),
wherever its streams are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import faust

from streamsafe import clients
from streamsafe.accounts.handler import AccountHandler
from streamsafe.accounts.signals import AccountSignalDecoder
from streamsafe.agents.clock import clock_named
from streamsafe.agents.inprocess import InProcessMatches
from streamsafe.agents.prefilter import FramePreFilter
from streamsafe.agents.readiness import STALL_CAUSES, Watch, install_readiness
from streamsafe.agents.records import RecordHandler
from streamsafe.agents.streams import install_agents, install_timers, raw_topic
from streamsafe.clients import default_partition
from streamsafe.control.audit import worker_name
from streamsafe.control.auditor import ControlAuditor
from streamsafe.control.banks import BankControl
from streamsafe.control.broadcast import BroadcastReader
from streamsafe.control.policies import PolicyControl
from streamsafe.control.service import ControlService
from streamsafe.control.signing import SigningKey, TrustedKeys
from streamsafe.enforcement.deliveries import Sendable
from streamsafe.enforcement.kafka import KafkaPublisher, OutputTopics
from streamsafe.errors import BankError
from streamsafe.events.contract import (
    ACCOUNT_SIGNALS,
    FRAME_HASHES,
    FRAME_MATCHES,
    HASHBANK_ENTRIES,
    POLICY,
    REPORTS,
    REVIEW_VERDICTS,
    TopicSpec,
    load_contract,
)
from streamsafe.events.decode import InputDecoder
from streamsafe.matching.banks import HashBanks, read_hash_list
from streamsafe.matching.pdq import warm_up as warm_up_matching
from streamsafe.observability.liveness import AgentRoster, DeliveryHealth, ProgressTracker
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.pipeline.review import ReviewConfig
from streamsafe.pipeline.step import Lifecycle
from streamsafe.policy.loader import load_policy
from streamsafe.policy.policyset import PolicySet
from streamsafe.settings import KafkaSecurity, Settings
from streamsafe.transport.changelog import linger_changelog
from streamsafe.transport.consumer import settle_before_commit
from streamsafe.transport.producer import produce_idempotently
from streamsafe.transport.send_thread import SendThread
from streamsafe.transport.stream_yield import defer_agents_to
from streamsafe.transport.topic import Topic

__all__ = ["ACCOUNT_TABLE", "STATE_TABLE", "changelog_topics", "control_keys", "create_app", "faust_credentials",
           "load_banks"]

log = logging.getLogger(__name__)

STATE_TABLE = "stream-state"
INCIDENT_TABLE = "incidents"
ACCOUNT_TABLE = "accounts"


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
    (``<app id>-<table>-changelog``), with the input topics' partition count and the contract's
    production durability (3 replicas, 2 in sync; the same settings override it). The worker
    creates them before Faust starts: left to Faust, a fresh worker under load sometimes found
    no partitions for one ("Ignoring missing topic") and every table write then raised ``PartitionsMismatch``."""
    partitions = contract[FRAME_HASHES].partitions
    topics = {
        f"{settings.app_id}-{table}-changelog": TopicSpec(
            name=f"{settings.app_id}-{table}-changelog", direction="internal",
            description=f"changelog of the {table} table", partitions=partitions, key="stream_id",
            config={"cleanup.policy": "compact", "min.insync.replicas": "2"}, schema_versions=(), schema={},
            example={}, replication_factor=3)
        for table in (STATE_TABLE, INCIDENT_TABLE)
    }
    accounts = f"{settings.app_id}-{ACCOUNT_TABLE}-changelog"  # co-partitioned with the account signals
    topics[accounts] = TopicSpec(
        name=accounts, direction="internal", description=f"changelog of the {ACCOUNT_TABLE} table",
        partitions=contract[ACCOUNT_SIGNALS].partitions, key="account_id",
        config={"cleanup.policy": "compact", "min.insync.replicas": "2"}, schema_versions=(), schema={}, example={},
        replication_factor=3)
    leader = f"{settings.app_id}-__assignor-__leader"  # Faust's own, one partition
    topics[leader] = TopicSpec(name=leader, direction="internal", description="Faust's leader election",
                               partitions=1, key="none", config={"min.insync.replicas": "2"}, schema_versions=(),
                               schema={}, example={}, replication_factor=3)
    return topics


def control_keys(settings: Settings) -> tuple[TrustedKeys, TrustedKeys, SigningKey | None]:
    """The keys trusted to sign policies and bank entries, those trusted to sign review verdicts, and
    the worker's own signing key (for the hashes reviewers confirm), each logged by key id."""
    trusted_control = TrustedKeys.load(settings.trusted_control_keys)
    trusted_verdicts = TrustedKeys.load(settings.trusted_verdict_keys)
    for what, keys in (("policies and bank entries", trusted_control), ("review verdicts", trusted_verdicts)):
        if keys.keys:
            log.info("trusted to sign %s: key ids %s", what, ", ".join(sorted(keys.keys)))
        else:
            log.warning("no key is trusted to sign %s: every one published will be refused (bad_signature)", what)
    signer = SigningKey.load(settings.signing_key_file) if settings.signing_key_file else None
    if signer is None:
        log.warning("no signing key (STREAMSAFE_SIGNING_KEY_FILE): hashes reviewers confirm are published "
                    "unsigned and refused by every worker")
    elif signer.key_id not in trusted_control.keys:
        log.warning("this worker's signing key %s is not among the trusted control keys: hashes reviewers "
                    "confirm will be refused", signer.key_id)
    return trusted_control, trusted_verdicts, signer


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


def _warm_up(banks: HashBanks) -> None:
    """Before the worker is ready, in a thread: the matching kernels loaded, the banks just
    read folded into the static PDQ index."""
    warm_up_matching()
    banks.settle()


def create_app(
    settings: Settings,
    *,
    banks: HashBanks | None = None,
    contract: dict[str, TopicSpec] | None = None,
    metrics: StreamSafeMetrics | None = None,
) -> faust.App:
    """The worker: a Faust app with StreamSafe's tables, agents, timers and services."""
    contract = contract or load_contract()
    partitions = contract[FRAME_HASHES].partitions
    app = _faust_app(settings, partitions)
    states, incidents = (app.Table(name, partitions=partitions,
                                   schema=faust.Schema(key_serializer="json", value_serializer="json"))
                         for name in (STATE_TABLE, INCIDENT_TABLE))
    account_partitions = contract[ACCOUNT_SIGNALS].partitions
    accounts = app.Table(ACCOUNT_TABLE, partitions=account_partitions,
                         schema=faust.Schema(key_serializer="json", value_serializer="json"))
    metrics = metrics or StreamSafeMetrics.create()
    watch = Watch(DeliveryHealth(on_failure=metrics.delivery_failures.inc),
                  DeliveryHealth(on_failure=metrics.delivery_failures.inc), AgentRoster(),
                  ProgressTracker(settings.stall_after_s))
    trusted_control, trusted_verdicts, signer = control_keys(settings)
    sends = _send_thread(app, settings, metrics)
    publisher = KafkaPublisher(OutputTopics.of(_output_topics(app, settings, contract, sends)),
                               timeout_s=settings.delivery_timeout_s, health=watch.deliveries, signer=signer)
    handler = RecordHandler(
        # a record on another partition than its key's would meet another worker's state
        decoder=InputDecoder(contract, settings.max_message_bytes, default_partition),
        banks=banks if banks is not None else load_banks(settings),
        policies=PolicySet(load_policy(settings.policy_file)),
        states=states, publisher=publisher, metrics=metrics, incidents=incidents,
        review=ReviewConfig(
            benign_cooldown_s=settings.benign_cooldown_s,
            p0_breach_restrictions=("chat", "discovery", "gifting", "new_viewers")
            if settings.p0_breach_restrict else (),
            preserve_days=settings.preserve_days,
        ),
        lifecycle=Lifecycle(int(settings.ended_stream_ttl_s * 1000), int(settings.inactive_stream_ttl_s * 1000)),
        clock=clock_named(settings.clock),
        trusted_verdicts=trusted_verdicts,
        worker=worker_name(settings),
    )
    handler.count_inputs = settings.input_metrics
    metrics.start_at_zero(handler.counted_topics, _enum(contract[REPORTS], "incident_type"),
                          _enum(contract[REVIEW_VERDICTS], "verdict"), STALL_CAUSES)
    settle_before_commit(app, publisher.settled)  # an offset is committed once its decisions are acknowledged
    produce_idempotently(app, settings.idempotent_producer == "true")
    linger_changelog(app, settings.changelog_linger_s)
    policy_control = PolicyControl(contract[POLICY], lambda: handler.policies, handler.use_policies,
                                   publisher, metrics, trusted_control)
    control = ControlService([
        BroadcastReader(settings, settings.topic_name(POLICY), policy_control.apply),
        BroadcastReader(settings, settings.topic_name(HASHBANK_ENTRIES),
                        BankControl(handler.banks, publisher, metrics, trusted_control).apply),
    ], warm_up=partial(_warm_up, handler.banks),
        auditor=ControlAuditor(settings, contract[POLICY], publisher, trusted_control, worker_name(settings)))
    app.service(control)
    prefilter = None
    if settings.prefilter:
        in_process = None
        if settings.matches_in_process:
            in_process = InProcessMatches(app, settings.topic_name(FRAME_MATCHES), handler)
            handler.skip_forwarded = in_process.take_copy
        prefilter = FramePreFilter(settings, handler, control.ready, health=watch.forwards, in_process=in_process,
                                   sends=sends)
        app.service(prefilter)
    # the pre-filter's batch first; agents take the loop by time otherwise
    defer_agents_to(prefilter)
    install_readiness(app, settings, handler, control, states, metrics, watch, prefilter)
    account_handler = AccountHandler(AccountSignalDecoder(contract[ACCOUNT_SIGNALS]), accounts, handler,
                                     account_partitions, default_partition)
    install_agents(app, settings, handler, control.ready, watch.agents, partitions, account_handler)
    install_timers(app, settings, handler, publisher, control.ready, account_handler)
    return app


def _send_thread(app: faust.App, settings: Settings, metrics: StreamSafeMetrics) -> SendThread | None:
    """With the fast transport, what the worker publishes goes through a producer on a thread of
    its own (:mod:`streamsafe.transport.send_thread`), started before the agents and stopped after
    them; with the stock one (the benchmarks' baseline), through Faust's."""
    if settings.transport != "fast":
        return None
    renewed = metrics.producer_renewals
    return app.add_dependency(SendThread(partial(clients.producer, settings, linger_ms=0),
                                         on_renewal=lambda cause: renewed.labels(cause).inc()))


def _output_topics(app: faust.App, settings: Settings, contract: dict[str, TopicSpec],
                   sends: SendThread | None) -> Callable[[str], Sendable]:
    """How the publisher reaches each output topic (by its contract name)."""
    if sends is None:
        return lambda name: raw_topic(app, settings.topic_name(name), contract[name].partitions)
    return lambda name: sends.topic(settings.topic_name(name))


def _enum(spec: TopicSpec, field: str) -> list[str]:
    """The values the contract allows in ``field`` of a topic's records (label values to start at 0)."""
    return [str(v) for v in spec.schema["properties"][field]["enum"]]


def _faust_app(settings: Settings, partitions: int) -> faust.App:
    return faust.App(
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
        # any topic Faust itself creates is as durable as the contract's own
        topic_replication_factor=settings.replication_factor or 3,
        # Faust's default is 20 minutes: a send to a partition without a leader would wait that
        # long; StreamSafe resends after delivery_timeout_s instead (enforcement/kafka.py)
        producer_request_timeout=max(30.0, settings.delivery_timeout_s * 3),
        # a changelog seen without partitions right after a rebalance is looked up again within
        # 30 s, not Faust's 5 minutes (the topics are created before start: see changelog_topics)
        consumer_metadata_max_age_ms=30_000,
        web_enabled=False,
        autodiscover=False,
        # sends without Faust's producer-start detour (transport/topic.py); stock Faust's
        # topic with the stock transport, the benchmarks' baseline
        Topic=Topic if settings.transport == "fast" else faust.Topic,
    )
