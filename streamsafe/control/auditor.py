"""The workers' audit reader: follows ``streamsafe.policy`` and ``hashbank.entries`` as one
consumer group (``<app id>-audit``) and writes what each record did to ``streamsafe.audit``.

Every worker applies every control record (:mod:`.broadcast`); auditing them there would
write each change once per worker and again at every restart. As a group, each partition
is audited by one worker, from its committed offset: once, with nothing skipped while no
worker runs (a redelivery after a rebalance repeats audit ids; readers keep the first). The
record is judged by the functions the control readers apply (:mod:`.records`), with the same
trusted keys, so "applied" and "refused" here are what every worker did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import fastjsonschema
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.structs import OffsetAndMetadata

from streamsafe import clients
from streamsafe.budget import BATCH_BUDGET_S, TimeBudget
from streamsafe.control.audit import ENTRY_IDS_SHOWN, audit_record
from streamsafe.control.broadcast import stop_consumer
from streamsafe.control.records import BankChange, check_bank_record, check_policy_record
from streamsafe.control.signing import TrustedKeys, signer_of
from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY, TopicSpec
from streamsafe.settings import Settings

__all__ = ["ControlAuditor"]

log = logging.getLogger(__name__)


def _parsed(value: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _claimed_signer(value: bytes | None) -> str | None:
    doc = _parsed(value)
    return signer_of(doc) if doc is not None else None


def _refused_change(topic: str, value: bytes | None) -> str:
    """What a refused record would have changed (a tombstone: a removal or retirement)."""
    doc = _parsed(value)
    if value is not None and doc is None:
        return "unknown"
    if topic == POLICY:
        return "shadow_retired" if doc is None or doc.get("retired") else "policy_published"
    return "bank_entries_removed" if doc is None or doc.get("removed") else "bank_entries_added"


class ControlAuditor:
    """Audits control records as a consumer group; ``caught_up`` is set at once (auditing
    never holds a worker back from deciding)."""

    topic = "streamsafe.audit"

    def __init__(self, settings: Settings, policy_spec: TopicSpec, publisher: DecisionPublisher,
                 trusted: TrustedKeys, worker: str) -> None:
        self.settings = settings
        self.publisher = publisher
        self.trusted = trusted
        self.worker = worker
        self._validate = fastjsonschema.compile(dict(policy_spec.schema))
        self._names = {settings.topic_name(t): t for t in (POLICY, HASHBANK_ENTRIES)}
        #: the version last audited under each policy key (unknown until one is seen)
        self.versions: dict[str, str | None] = {}
        self.caught_up = asyncio.Event()
        self.caught_up.set()
        self.written = 0
        self.budget_s = BATCH_BUDGET_S
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="control-auditor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            consumer = clients.consumer(self.settings, *self._names, group_id=self.settings.audit_group,
                                        max_poll_records=5_000)
            try:
                await clients.start(consumer)
                await self._follow(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away, a rebalance error: audit again from the committed offset
                log.warning("control auditor stopped (%s: %s); restarting", type(exc).__name__, exc)
                await asyncio.sleep(2.0)
            finally:
                await stop_consumer(consumer)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                budget, start = TimeBudget(self.budget_s), 0
                while start < len(records):  # in slices cut by the time budget: decisions run in between
                    audits, done = self.audit_slice(self._names[tp.topic], records, budget, start)
                    await self.publisher.audit(audits)
                    self.written += len(audits)
                    start += done
                    await budget.next_slice()
                if records:
                    await self.publisher.settled()  # committed only once its audit records are stored
                    await consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})

    def audit_batch(self, topic: str, records: Sequence[ConsumerRecord]) -> list[dict[str, Any]]:
        """The audit records of one partition's batch, in order."""
        return self.audit_slice(topic, records, None)[0]

    def audit_slice(self, topic: str, records: Sequence[ConsumerRecord], budget: TimeBudget | None,
                    start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The audit records of a batch's records from ``start`` on, as many as ``budget`` allows (at
        least one; None: all), and how many records they cover. A run of bank entries cut by the
        budget is two audit records."""
        out: list[dict[str, Any]] = []
        run: list[tuple[ConsumerRecord, BankChange]] = []
        done = 0
        for record in itertools.islice(records, start, None):
            if budget is not None and done and budget.spent():
                break
            done += 1
            if topic == POLICY:
                out.append(self._policy(record))
                continue
            try:
                change = check_bank_record(self.trusted, record.key, record.value)
            except RejectedInput as exc:
                out.extend(self._bank_run(run))
                run = []
                out.append(self._refused(HASHBANK_ENTRIES, record, exc))
                continue
            if run and (run[0][1].change, run[0][1].key_id, _bank(run[0][1])) != (change.change, change.key_id,
                                                                               _bank(change)):
                out.extend(self._bank_run(run))
                run = []
            run.append((record, change))
        out.extend(self._bank_run(run))
        return out, done

    def _bank_run(self, run: list[tuple[ConsumerRecord, BankChange]]) -> list[dict[str, Any]]:
        if not run:
            return []
        (first, change), (last, _) = run[0], run[-1]
        return [audit_record(topic=HASHBANK_ENTRIES, partition=first.partition, offset=first.offset,
                             last_offset=last.offset, change=change.change, outcome="applied", worker=self.worker,
                             key=change.entry_id, key_id=change.key_id, bank=_bank(change), count=len(run),
                             entry_ids=[c.entry_id for _, c in run[:ENTRY_IDS_SHOWN]],
                             record_ts_ms=first.timestamp)]

    def _policy(self, record: ConsumerRecord) -> dict[str, Any]:
        try:
            change = check_policy_record(self._validate, self.trusted, record.key, record.value)
        except RejectedInput as exc:
            return self._refused(POLICY, record, exc, published_by=_published_by(record.value))
        previous = self.versions.get(change.key)
        new = change.policy.version if change.policy is not None else None
        self.versions[change.key] = new
        return audit_record(topic=POLICY, partition=record.partition, offset=record.offset, change=change.change,
                            outcome="applied", worker=self.worker, key=change.key, key_id=change.key_id,
                            previous_version=previous, new_version=new, policy=change.document,
                            published_by=change.published_by,
                            record_ts_ms=record.timestamp)

    def _refused(self, topic: str, record: ConsumerRecord, exc: RejectedInput, **fields: Any) -> dict[str, Any]:
        return audit_record(topic=topic, partition=record.partition, offset=record.offset,
                            change=_refused_change(topic, record.value), outcome="refused",
                            worker=self.worker, key=(record.key or b"").decode(errors="replace"),
                            key_id=_claimed_signer(record.value), reason=exc.reason, detail=exc.detail,
                            record_ts_ms=record.timestamp, **fields)


def _bank(change: BankChange) -> str | None:
    return change.entry.bank if change.entry is not None else None


def _published_by(value: bytes | None) -> str | None:
    doc = _parsed(value)
    by = doc.get("published_by") if doc is not None else None
    return by if isinstance(by, str) else None
