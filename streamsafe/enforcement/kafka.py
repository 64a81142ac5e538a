"""Publishing to the enforcement and dead-letter topics through the Faust producer.

Every send is guarded. A delivery that is not acknowledged within ``timeout_s``, or
that the producer refuses, is sent again after a back-off, for as long as it takes:
an input's offset is committed only after its decisions are acknowledged, so a
record is never skipped; meanwhile :class:`~streamsafe.observability.liveness.DeliveryHealth`
says the worker is failing, ``/readyz`` turns 503 and the stall alert fires. A
resend after a timeout may duplicate a record; decisions carry deterministic ids,
so consumers treat the copy as the same decision. A dead letter the broker refuses
as too large is sent again without the original bytes (its size and SHA-256 stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError

from streamsafe.events.bank_entries import encode_bank_entry
from streamsafe.events.contract import (
    ACTIONS,
    DEAD_LETTER,
    ESCALATIONS,
    HASHBANK_ENTRIES,
    PRESERVATION,
    REPORTS,
    SHADOW_DECISIONS,
    TIMERS,
)
from streamsafe.events.dead_letter import DeadLetter
from streamsafe.events.encode import encode_tick
from streamsafe.events.models import BankEntry, TimerTick
from streamsafe.observability.liveness import DeliveryHealth
from streamsafe.policy.decisions import Decision
from streamsafe.review.reports import PreservationRequest, ReportPacket

__all__ = ["RETRY_BACKOFF_S", "KafkaPublisher", "OutputTopics", "Sendable"]

log = logging.getLogger(__name__)

#: waits between resends of a delivery that failed (the last one repeats)
RETRY_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)

class Sendable(Protocol):
    """What the publisher needs of a topic (a Faust topic of raw bytes is one): ``send``
    returns a future resolved when the broker acknowledges the record."""

    async def send(self, *, key: bytes, value: bytes, partition: int | None = None) -> Any: ...


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

    @classmethod
    def of(cls, topic: Callable[[str], Sendable]) -> OutputTopics:
        """Each role's topic from the contract name (``topic`` adds the prefix and builds it)."""
        return cls(topic(ACTIONS), topic(ESCALATIONS), topic(SHADOW_DECISIONS), topic(DEAD_LETTER),
                   topic(REPORTS), topic(PRESERVATION), topic(HASHBANK_ENTRIES), topic(TIMERS))

    @classmethod
    def every(cls, topic: Sendable) -> OutputTopics:
        """One topic in every role (for tests)."""
        return cls(*(topic,) * 8)


Send = tuple[Sendable, bytes, bytes, int | None]  # topic, key, value, partition


class KafkaPublisher:
    """Sends each record and waits for the broker's acknowledgement: decisions are
    rare, and a decision must not be lost between the send and the offset commit."""

    def __init__(self, topics: OutputTopics, *, timeout_s: float = 10.0,
                 health: DeliveryHealth | None = None) -> None:
        self.topics = topics
        self.timeout_s = timeout_s
        self.health = health if health is not None else DeliveryHealth()

    async def _deliver(self, sends: Sequence[Send]) -> None:
        """Send all, then wait for every acknowledgement; resend what failed until it is acknowledged."""
        waiting = list(sends)
        attempt = 0
        while waiting:
            pending = []
            for send in waiting:
                topic, key, value, partition = send
                try:
                    future = await asyncio.wait_for(topic.send(key=key, value=value, partition=partition),
                                                    self.timeout_s)
                except TOO_LARGE:
                    raise
                except ProducerSendError as exc:  # Faust's wrapper of what aiokafka's send() raised
                    if isinstance(exc.__cause__, TOO_LARGE):
                        raise exc.__cause__ from exc
                    pending.append((send, exc))
                    continue
                except (KafkaError, TimeoutError) as exc:
                    pending.append((send, exc))
                    continue
                pending.append((send, future))
            failed: list[tuple[Send, BaseException]] = []
            for send, future in pending:
                if isinstance(future, BaseException):
                    failed.append((send, future))
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
                except TOO_LARGE:
                    raise
                except (KafkaError, TimeoutError) as exc:
                    failed.append((send, exc))
            if not failed:
                self.health.delivered()
                return
            problem = type(failed[0][1]).__name__
            self.health.failed(problem, time.monotonic())
            wait = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            log.error("%d of %d deliveries failed (%s); sending them again in %.1f s", len(failed),
                      len(waiting), problem, wait)
            attempt += 1
            waiting = [send for send, _ in failed]
            await asyncio.sleep(wait)

    async def publish_report(self, report: ReportPacket, preservation: PreservationRequest) -> None:
        key = report.stream_id.encode()
        await self._deliver([(self.topics.preservation, key, preservation.encode(), None),
                             (self.topics.reports, key, report.encode(), None)])

    async def propose_entries(self, entries: Sequence[BankEntry]) -> None:
        now = int(time.time() * 1000)
        await self._deliver([(self.topics.bank_entries, e.entry_id.encode(), encode_bank_entry(e, "reviewer", now),
                              None) for e in entries])

    async def send_tick(self, tick: TimerTick, partition: int) -> None:
        await self._deliver([(self.topics.timers, tick.stream_id.encode(), encode_tick(tick), partition)])

    def _topic_for(self, decision: Decision) -> Sendable:
        if decision.shadow:
            return self.topics.shadow_decisions
        return self.topics.escalations if decision.is_escalation else self.topics.actions

    async def publish(self, decision: Decision) -> None:
        await self.publish_many((decision,))

    async def publish_many(self, decisions: Sequence[Decision]) -> None:
        # all sent first, then all acknowledged: one round trip for an event's decisions
        await self._deliver([(self._topic_for(d), d.stream_id.encode(), d.encode(), None) for d in decisions])

    async def dead_letter(self, rejected: DeadLetter) -> None:
        key = rejected.source.topic.encode()
        try:
            await self._deliver([(self.topics.dead_letters, key, rejected.encode(), None)])
        except TOO_LARGE:
            log.error("dead letter from %s[%d]@%d refused as too large; sent without the original bytes",
                      rejected.source.topic, rejected.source.partition, rejected.source.offset)
            await self._deliver([(self.topics.dead_letters, key, rejected.encode(keep_bytes=0), None)])
