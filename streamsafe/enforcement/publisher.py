"""Where decisions go. Agents depend on :class:`DecisionPublisher`; the Kafka
implementation lives in :mod:`streamsafe.enforcement.kafka`, and
:class:`InMemoryPublisher` ships in the package for tests of the logic."""

from __future__ import annotations

from typing import Protocol

from streamsafe.events.dead_letter import DeadLetter
from streamsafe.policy.decisions import Decision

__all__ = ["DecisionPublisher", "InMemoryPublisher"]


class DecisionPublisher(Protocol):
    async def publish(self, decision: Decision) -> None:
        """Deliver one decision to its enforcement topic (returns once acknowledged)."""
        ...

    async def dead_letter(self, rejected: DeadLetter) -> None:
        """Deliver one rejected input to the dead-letter topic (returns once acknowledged)."""
        ...


class InMemoryPublisher:
    """Keeps what would have been published, in order."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.dead_letters: list[DeadLetter] = []

    async def publish(self, decision: Decision) -> None:
        self.decisions.append(decision)

    async def dead_letter(self, rejected: DeadLetter) -> None:
        self.dead_letters.append(rejected)
