"""Publishing to the enforcement and dead-letter topics through the Faust producer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from streamsafe.control.bank_publish import encode_entry
from streamsafe.events.dead_letter import DeadLetter
from streamsafe.events.models import TimerTick
from streamsafe.matching.banks import BankEntry
from streamsafe.policy.decisions import Decision
from streamsafe.review.reports import PreservationRequest, ReportPacket

__all__ = ["KafkaPublisher"]


class KafkaPublisher:
    """Sends each record and waits for the broker's acknowledgement: decisions are
    rare, and a decision must not be lost between the send and the offset commit."""

    def __init__(self, actions: Any, escalations: Any, shadow: Any, dead_letters: Any, *, reports: Any,
                 preservation: Any, bank_entries: Any, timers: Any) -> None:
        self._actions = actions
        self._escalations = escalations
        self._shadow = shadow
        self._dead_letters = dead_letters
        self._reports = reports
        self._preservation = preservation
        self._bank_entries = bank_entries
        self._timers = timers

    async def publish_report(self, report: ReportPacket, preservation: PreservationRequest) -> None:
        key = report.stream_id.encode()
        sent = [await self._preservation.send(key=key, value=preservation.encode()),
                await self._reports.send(key=key, value=report.encode())]
        for delivery in sent:
            await delivery

    async def propose_entries(self, entries: Sequence[BankEntry]) -> None:
        now = int(time.time() * 1000)
        sent = [await self._bank_entries.send(key=e.entry_id.encode(), value=encode_entry(e, "reviewer", now))
                for e in entries]
        for delivery in sent:
            await delivery

    async def send_tick(self, tick: TimerTick, partition: int) -> None:
        delivery = await self._timers.send(key=tick.stream_id.encode(), value=orjson.dumps(tick.to_dict()),
                                           partition=partition)
        await delivery

    def _topic_for(self, decision: Decision) -> Any:
        if decision.shadow:
            return self._shadow
        return self._escalations if decision.is_escalation else self._actions

    async def publish(self, decision: Decision) -> None:
        await self.publish_many((decision,))

    async def publish_many(self, decisions: Sequence[Decision]) -> None:
        # all sent first, then all acknowledged: one round trip for an event's decisions
        pending = [await self._topic_for(d).send(key=d.stream_id.encode(), value=d.encode()) for d in decisions]
        for delivery in pending:
            await delivery

    async def dead_letter(self, rejected: DeadLetter) -> None:
        delivery = await self._dead_letters.send(
            key=rejected.source.topic.encode(), value=rejected.encode()
        )
        await delivery
