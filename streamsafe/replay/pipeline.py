"""Run recorded traffic through the real pipeline: broker, topics, policies, a worker.

Control records in the recording (bank entries, policies) are published before the
worker starts, so it decides with them from the first event. Input events are sent
in recorded order. The run is complete when the worker's committed offsets cover
every input record: decisions are acknowledged before offsets are committed, so by
then every decision is on its topic.

Every time a replay sets is taken from the recording, never from the clock, so that
two replays of one recording decide alike, decision ids included (a decision's id
covers ``decided_at_ms``, its record's broker timestamp). An input record's timestamp
is its own event time when that is plausible (2000-01-01 .. 2100-01-01), else the
recording's time origin: the earliest plausible event time (a record the worker will
reject must not move it). Control records and policies are stamped with the origin.
The replay's topics keep records of any age (``retention.ms`` -1) and accept times
ahead of the broker's clock, since recorded times are neither recent nor past.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import TopicPartition

from streamsafe import clients
from streamsafe.brokers.local import start_broker
from streamsafe.brokers.offsets import GroupOffsets, end_offsets
from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import stop_consumer
from streamsafe.control.policies import LIVE_KEY, SHADOW_PREFIX
from streamsafe.control.signing import SigningKey, generate_key, signer_for
from streamsafe.enforcement.statements_topic import read_statements
from streamsafe.errors import ConfigError, StreamSafeError
from streamsafe.events.bank_entries import encode_bank_removal
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    ACCOUNT_SIGNALS,
    ACTIONS,
    ESCALATIONS,
    FRAME_HASHES,
    FRAME_MATCHES,
    HASHBANK_ENTRIES,
    INPUT_TOPICS,
    POLICY,
    SHADOW_DECISIONS,
    TopicSpec,
    load_contract,
)
from streamsafe.events.decode import EARLIEST_MS, LATEST_MS
from streamsafe.events.encode import encode_policy_message
from streamsafe.policy.loader import default_policy_text, load_policy
from streamsafe.replay.recording import RecordedEvent, Recording
from streamsafe.runner import spawn_worker
from streamsafe.settings import Settings

__all__ = ["ReplayResult", "record_times", "replay", "replay_contract"]

CONTROL_TOPICS = (HASHBANK_ENTRIES, POLICY)

#: topic settings of a replay's own topics: keep records whatever their (recorded) time
REPLAY_TOPIC_CONFIG = {"retention.ms": "-1", "message.timestamp.after.max.ms": str(2**63 - 1)}


@dataclass
class ReplayResult:
    decisions: list[dict[str, Any]]
    policy_versions: list[str]  # live first, then shadows
    events_sent: int
    seconds: float
    statements: list[dict[str, Any]] = field(default_factory=list)  # enforcement.statements, one per live
    # block/restrict/reinstate decision


def _policy_documents(policy_files: Sequence[Path]) -> list[tuple[str, dict[str, Any]]]:
    texts = [p.read_text() for p in policy_files] or [default_policy_text()]
    documents = []
    for text in texts:
        policy = load_policy(text)  # refuse an invalid policy before starting anything
        documents.append((policy.version, yaml.safe_load(text)))
    versions = [v for v, _ in documents]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"policies to compare need distinct versions, got {versions}")
    return documents


def _plausible(ts: int | None) -> bool:
    return ts is not None and EARLIEST_MS <= ts <= LATEST_MS


def record_times(recording: Recording) -> tuple[int, list[int]]:
    """The time origin and every input record's broker timestamp, in recorded order,
    from the recording alone (see the module docstring)."""
    inputs = [e.event_ts_ms() for e in recording.events if e.topic in INPUT_TOPICS]
    origin = min((ts for ts in inputs if _plausible(ts)), default=EARLIEST_MS)
    return origin, [ts if ts is not None and _plausible(ts) else origin for ts in inputs]


def replay_contract() -> Mapping[str, TopicSpec]:
    """The contract's topics with ``REPLAY_TOPIC_CONFIG``: recorded times may lie beyond
    the retention or ahead of the broker's clock."""
    return {name: replace(spec, config={**spec.config, **REPLAY_TOPIC_CONFIG})
            for name, spec in load_contract().items()}


def _signed_control(signer: SigningKey, topic: str, key: bytes | None, value: Any, origin_ms: int) -> bytes:
    """A recorded control record, signed by the replay's own key (a recorded tombstone becomes
    the signed removal or retirement workers apply)."""
    if value is None:
        value = (encode_bank_removal(origin_ms, "replay") if topic == HASHBANK_ENTRIES else
                 {"schema_version": 1, "retired": True, "published_at_ms": origin_ms})
    return signer.sign_bytes(topic, key, value)


async def _publish_controls(settings: Settings, recording: Recording,
                            documents: list[tuple[str, dict[str, Any]]], origin_ms: int) -> None:
    """The policies and the recording's bank and policy records, signed with the replay's key
    (the recording and policy files are the operator's own, like a hash list: trusted here)."""
    signer = signer_for(settings.signing_key_file, "a replay's control records")
    producer = clients.producer(settings, linger_ms=5)
    await producer.start()
    try:
        for i, (_, document) in enumerate(documents):
            key = (LIVE_KEY if i == 0 else f"{SHADOW_PREFIX}{i}").encode()
            message = signer.sign_bytes(POLICY, key, orjson.loads(encode_policy_message(document, "replay",
                                                                                          origin_ms)))
            await producer.send_and_wait(settings.topic_name(POLICY), message, key=key, timestamp_ms=origin_ms)
        controls = [e for e in recording.events if e.topic in CONTROL_TOPICS]
        for event in controls:
            key = None if event.key is None else event.key.encode()
            value = _signed_control(signer, event.topic, key, event.value, origin_ms)
            await producer.send(settings.topic_name(event.topic), value, key=key, timestamp_ms=origin_ms)
        await producer.flush()
    finally:
        await producer.stop()


def ordered_batches(inputs: Sequence[RecordedEvent]) -> list[list[int]]:
    """Indexes of ``inputs`` in batches such that each stream's records keep their recorded
    order and no stream has records on two topics within one batch: batch k holds every
    stream's k-th run of consecutive records on one topic. Input topics are consumed
    independently, so the worker would otherwise interleave one stream's metadata, signals
    and frames as fetches happen to arrive; a batch is processed before the next is sent, so
    every replay of a recording processes each stream's records in the same order and
    decides alike. (Streams never share state, so their records may be regrouped.)"""
    runs: dict[str | None, int] = {}
    last_topic: dict[str | None, str] = {}
    batches: list[list[int]] = []
    for i, event in enumerate(inputs):
        run = runs.get(event.key, 0)
        if event.key in last_topic and last_topic[event.key] != event.topic:
            run += 1
        runs[event.key], last_topic[event.key] = run, event.topic
        if run == len(batches):
            batches.append([])
        batches[run].append(i)
    return batches


async def _send_inputs(settings: Settings, recording: Recording, timeout_s: float) -> None:
    """Send the recording's inputs batch by batch (:func:`ordered_batches`), each processed
    (committed by the worker) before the next is sent."""
    producer = clients.producer(settings, linger_ms=5)
    await clients.start(producer)
    inputs = [e for e in recording.events if e.topic in INPUT_TOPICS]
    _, timestamps = record_times(recording)
    deadline = time.monotonic() + timeout_s
    try:
        for batch in ordered_batches(inputs):
            pending = []
            for i in batch:
                event = inputs[i]
                value = None if event.value is None else orjson.dumps(event.value)
                key = None if event.key is None else event.key.encode()
                pending.append(await producer.send(settings.topic_name(event.topic), value, key=key,
                                                   timestamp_ms=timestamps[i]))
            last: dict[TopicPartition, int] = {}
            for future in pending:
                metadata = await future
                tp = TopicPartition(metadata.topic, metadata.partition)
                last[tp] = max(last.get(tp, -1), metadata.offset)
            await _wait_committed(settings, last, max(1.0, deadline - time.monotonic()))
    finally:
        await producer.stop()


async def _wait_committed(settings: Settings, last: dict[TopicPartition, int], timeout_s: float) -> None:
    """Until the worker has committed past every record in ``last``. With the frame
    pre-filter, frames are committed by its own group, and the matches it forwarded
    must then be committed by the worker's group too."""
    deadline = time.monotonic() + timeout_s
    frames = settings.topic_name(FRAME_HASHES)
    screened = {tp: o for tp, o in last.items() if settings.prefilter and tp.topic == frames}
    by_agents = {tp: o for tp, o in last.items() if tp not in screened}
    if screened:
        await _wait_group(settings, settings.prefilter_group, screened, deadline, timeout_s)
        by_agents.update(await _last_offsets(settings, FRAME_MATCHES))
    await _wait_group(settings, settings.app_id, by_agents, deadline, timeout_s)
    # each hop's records were acknowledged before the offsets that caused them were committed: once
    # the inputs are committed, every account signal is on its topic; once those are, every account
    # finding; once those are, every decision
    for hop in (ACCOUNT_SIGNALS, ACCOUNT_FINDINGS):
        sent = await _last_offsets(settings, hop)
        if sent:
            await _wait_group(settings, settings.app_id, sent, deadline, timeout_s)


async def _wait_group(settings: Settings, group: str, last: dict[TopicPartition, int], deadline: float,
                      timeout_s: float) -> None:
    async with GroupOffsets(settings, group) as offsets:
        while time.monotonic() < deadline:
            committed = await offsets.committed(last)
            if all(committed[tp] > offset for tp, offset in last.items()):
                return
            await asyncio.sleep(0.2)
    raise StreamSafeError(f"the worker did not finish the recording within {timeout_s:.0f}s")


async def _last_offsets(settings: Settings, name: str) -> dict[TopicPartition, int]:
    """The offset of the last record of each non-empty partition of contract topic ``name``."""
    topic = settings.topic_name(name)
    ends = await end_offsets(settings, (TopicPartition(topic, p) for p in range(load_contract()[name].partitions)))
    return {tp: end - 1 for tp, end in ends.items() if end > 0}


async def _read_decisions(settings: Settings) -> list[dict[str, Any]]:
    names = [settings.topic_name(t) for t in (ACTIONS, ESCALATIONS, SHADOW_DECISIONS)]
    consumer = clients.consumer(settings, *names, fetch_max_wait_ms=100)
    await consumer.start()
    decisions: list[dict[str, Any]] = []
    try:
        quiet = 0
        while quiet < 3:  # everything is already on the topics; stop once reads come back empty
            batch = await consumer.getmany(timeout_ms=500)
            records = [orjson.loads(m.value) for messages in batch.values() for m in messages]
            decisions.extend(records)
            quiet = 0 if records else quiet + 1
    finally:
        await stop_consumer(consumer)
    decisions.sort(key=lambda d: (d["event_ts_ms"], d["stream_id"], d["policy_version"], d["action"],
                                  d.get("priority", "")))
    return decisions


def replay(recording: Recording, policy_files: Sequence[Path] = (), broker_url: str | None = None,
           broker_kind: str = "tansu", timeout_s: float = 600.0) -> ReplayResult:
    """Play ``recording`` through a real worker; every decision of every policy, in event-time order."""
    documents = _policy_documents(policy_files)
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    origin_ms, _ = record_times(recording)
    # the worker's tables, its log and the embedded broker's data: gone when the replay ends
    with tempfile.TemporaryDirectory(prefix="streamsafe-replay-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)

        def run(settings: Settings) -> ReplayResult:
            asyncio.run(apply_topics(settings, replay_contract()))
            asyncio.run(_publish_controls(settings, recording, documents, origin_ms))
            worker = spawn_worker(settings, workdir / "worker.log")
            try:
                worker.wait_ready(120)
                asyncio.run(_send_inputs(settings, recording, timeout_s))
                decisions = asyncio.run(_read_decisions(settings))
                statements = asyncio.run(read_statements(settings))
            finally:
                worker.stop()
            sent = sum(1 for e in recording.events if e.topic in INPUT_TOPICS)
            return ReplayResult(decisions, [v for v, _ in documents], sent, time.monotonic() - started, statements)

        # The worker's processing clock is record time, and its sweep does not run: a replay has no
        # reviewers, so review deadlines never fall due, and what it decides depends on the
        # recording alone, not on when a sweep happened to run.
        key, public, _ = generate_key(workdir / "keys", "replay")  # signs the replay's control records
        common = dict(app_id=f"streamsafe-replay-{run_id}", http_port=0, commit_interval_s=0.2,
                      data_dir=workdir / "data", clock="records", sweep_interval_s=86_400.0,
                      trusted_control_keys=public, signing_key_file=key)
        if broker_url:
            return run(Settings.from_env(broker_url=broker_url, topic_prefix=f"replay-{run_id}.", **common))
        with start_broker(broker_kind, workdir / "broker") as broker:
            tansu = broker_kind == "tansu"
            return run(Settings(broker_url=broker.url, replication_factor=1, session_timeout_s=2.0 if tansu else 10.0,
                                rebalance_timeout_s=2.0 if tansu else 10.0, **common))
