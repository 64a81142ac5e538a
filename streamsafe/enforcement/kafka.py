"""Publishing to the enforcement and dead-letter topics through the Faust producer."""

from __future__ import annotations

from typing import Any

from streamsafe.events.dead_letter import DeadLetter
from streamsafe.policy.decisions import Decision

__all__ = ["KafkaPublisher"]


class KafkaPublisher:
    """Sends each record and waits for the broker's acknowledgement: decisions are
    rare, and a decision must not be lost between the send and the offset commit."""

    def __init__(self, actions: Any, escalations: Any, shadow: Any, dead_letters: Any) -> None:
        self._actions = actions
        self._escalations = escalations
        self._shadow = shadow
        self._dead_letters = dead_letters

    async def publish(self, decision: Decision) -> None:
        if decision.shadow:
            topic = self._shadow
        else:
            topic = self._escalations if decision.is_escalation else self._actions
        delivery = await topic.send(key=decision.stream_id.encode(), value=decision.encode())
        await delivery

    async def dead_letter(self, rejected: DeadLetter) -> None:
        delivery = await self._dead_letters.send(
            key=rejected.source.topic.encode(), value=rejected.encode()
        )
        await delivery
