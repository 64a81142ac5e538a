"""Publishing to the enforcement and dead-letter topics through the Faust producer.

Each record is sent the moment it is made and acknowledged in the background
(:class:`~streamsafe.enforcement.deliveries.Deliveries`): the agent goes on to the
next record meanwhile. A delivery not acknowledged within ``timeout_s``, or refused,
is sent again after a back-off, for as long as it takes; the worker commits an
input's offset only after every delivery started before the commit is acknowledged
(:meth:`KafkaPublisher.settled`), so a record is never skipped. A dead letter the
broker refuses as too large is sent again without the original bytes (its size and
SHA-256 stay).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from streamsafe.accounts.signals import AccountSignal
from streamsafe.control.signing import SigningKey
from streamsafe.enforcement.deliveries import RETRY_BACKOFF_S, Deliveries, Send, Sendable, dead_letter_send
from streamsafe.events.bank_entries import bank_entry_document
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    ACCOUNT_SIGNALS,
    ACTIONS,
    AUDIT,
    DEAD_LETTER,
    ESCALATIONS,
    HASHBANK_ENTRIES,
    PRESERVATION,
    REPORTS,
    SHADOW_DECISIONS,
    STATEMENTS,
    TIMERS,
)
from streamsafe.events.dead_letter import DeadLetter
from streamsafe.events.encode import encode_tick
from streamsafe.events.models import AccountFinding, BankEntry, TimerTick
from streamsafe.observability.liveness import DeliveryHealth
from streamsafe.policy.decisions import Decision
from streamsafe.review.reports import PreservationRequest, ReportPacket
from streamsafe.review.statements import Statement

__all__ = ["RETRY_BACKOFF_S", "KafkaPublisher", "OutputTopics", "Sendable"]

@dataclass(frozen=True, slots=True)
class OutputTopics:
    """Every topic StreamSafe writes to from its agents, by role."""

    actions: Sendable
    escalations: Sendable
    shadow_decisions: Sendable
    dead_letters: Sendable
    reports: Sendable
    preservation: Sendable
    bank_entries: Sendable
    timers: Sendable
    statements: Sendable
    audit: Sendable
    account_signals: Sendable
    account_findings: Sendable

    @classmethod
    def of(cls, topic: Callable[[str], Sendable]) -> OutputTopics:
        """Each role's topic from the contract name (``topic`` adds the prefix and builds it)."""
        return cls(topic(ACTIONS), topic(ESCALATIONS), topic(SHADOW_DECISIONS), topic(DEAD_LETTER),
                   topic(REPORTS), topic(PRESERVATION), topic(HASHBANK_ENTRIES), topic(TIMERS), topic(STATEMENTS),
                   topic(AUDIT), topic(ACCOUNT_SIGNALS), topic(ACCOUNT_FINDINGS))

    @classmethod
    def every(cls, topic: Sendable) -> OutputTopics:
        """One topic in every role (for tests)."""
        return cls(*(topic,) * len(fields(cls)))


class KafkaPublisher:
    """Sends each record at once; :meth:`settled` says when all are acknowledged."""

    def __init__(self, topics: OutputTopics, *, timeout_s: float = 10.0,
                 health: DeliveryHealth | None = None, signer: SigningKey | None = None) -> None:
        self.topics = topics
        #: signs the hashes reviewers confirmed (bank entries are control records); without a
        #: key they go out unsigned and every worker refuses them as bad_signature
        self.signer = signer
        self.deliveries = Deliveries(timeout_s=timeout_s, health=health)
        self.health = self.deliveries.health

    def oldest_delivery(self) -> float | None:
        """When (monotonic) the oldest record not yet acknowledged was sent, if any."""
        return self.deliveries.oldest()

    async def settled(self) -> None:
        """Returns once every record sent before the call is acknowledged (before an offset commit)."""
        await self.deliveries.settled()

    async def publish_report(self, report: ReportPacket, preservation: PreservationRequest) -> None:
        key = report.stream_id.encode()
        await self.deliveries.send([Send(self.topics.preservation, key, preservation.encode()),
                                    Send(self.topics.reports, key, report.encode())])

    async def publish_statements(self, statements: Sequence[Statement]) -> None:
        await self.deliveries.send([Send(self.topics.statements, s.stream_id.encode(), s.encode())
                                    for s in statements])

    async def propose_entries(self, entries: Sequence[BankEntry]) -> None:
        now = int(time.time() * 1000)
        sends = []
        for e in entries:
            key, record = e.entry_id.encode(), bank_entry_document(e, "reviewer", now)
            value = self.signer.sign_bytes(HASHBANK_ENTRIES, key, record) if self.signer else orjson.dumps(record)
            sends.append(Send(self.topics.bank_entries, key, value))
        await self.deliveries.send(sends)

    async def send_tick(self, tick: TimerTick, partition: int) -> None:
        await self.deliveries.send([Send(self.topics.timers, tick.stream_id.encode(), encode_tick(tick), partition)])

    def _topic_for(self, decision: Decision) -> Sendable:
        if decision.shadow:
            return self.topics.shadow_decisions
        return self.topics.escalations if decision.is_escalation else self.topics.actions

    async def publish(self, decision: Decision) -> None:
        await self.publish_many((decision,))

    async def publish_many(self, decisions: Sequence[Decision]) -> None:
        await self.deliveries.send([Send(self._topic_for(d), d.stream_id.encode(), d.encode()) for d in decisions])

    async def send_account_signals(self, signals: Sequence[AccountSignal]) -> None:
        # no partition given: the producer's partitioner (murmur2) puts each on its account's
        await self.deliveries.send([Send(self.topics.account_signals, s.account_id.encode(), s.encode())
                                    for s in signals])

    async def send_account_findings(self, findings: Sequence[AccountFinding]) -> None:
        await self.deliveries.send([Send(self.topics.account_findings, f.stream_id.encode(), orjson.dumps(f.to_dict()))
                                    for f in findings])

    async def dead_letter(self, rejected: DeadLetter) -> None:
        await self.deliveries.send([dead_letter_send(self.topics.dead_letters, rejected)])

    async def audit(self, records: Sequence[Mapping[str, Any]]) -> None:
        await self.deliveries.send([Send(self.topics.audit, str(r["audit_id"]).encode(), orjson.dumps(r))
                                    for r in records])
