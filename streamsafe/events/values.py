"""Small value types for facts that would otherwise be spelled as strings in many places.

* :class:`Priority` -- an escalation's priority, P0 (most urgent) .. P3, with its rank
  and the next priority a missed review deadline raises it to.
* :class:`EvidenceRef` -- where a classifier looked: a frame (by sequence number) or a
  chat message (by id). Stored compactly as ``frame:<seq>`` / ``msg:<id>``; parsed
  here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["EvidenceRef", "Priority"]


class Priority(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """Higher is more urgent: P3 = 0 .. P0 = 3."""
        return 3 - int(self.value[1])

    @property
    def raised(self) -> Priority:
        """The priority a missed review deadline raises this one to (P0 stays P0)."""
        return Priority(f"P{max(0, int(self.value[1]) - 1)}")

    def at_or_above(self, other: str) -> bool:
        return self.rank >= Priority(other).rank

    @classmethod
    def highest(cls, priorities: Iterable[str]) -> Priority | None:
        ranked = [cls(p) for p in priorities]
        return max(ranked, key=lambda p: p.rank, default=None)


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    """A frame (``frame_seq``) or a chat message (``chat_message_id``): exactly one is set."""

    frame_seq: int | None = None
    chat_message_id: str | None = None

    def __str__(self) -> str:
        return f"frame:{self.frame_seq}" if self.frame_seq is not None else f"msg:{self.chat_message_id}"

    @classmethod
    def of(cls, frame_seq: int | None, chat_message_id: str | None) -> EvidenceRef | None:
        if frame_seq is not None:
            return cls(frame_seq=frame_seq)
        return cls(chat_message_id=chat_message_id) if chat_message_id else None

    @classmethod
    def parse(cls, text: str | None) -> EvidenceRef | None:
        """The stored form back (None for none, or for a form this version does not know)."""
        if not text:
            return None
        kind, _, rest = text.partition(":")
        if kind == "frame" and rest.isdigit():
            return cls(frame_seq=int(rest))
        if kind == "msg" and rest:
            return cls(chat_message_id=rest)
        return None

    def fields(self) -> dict[str, Any]:
        """The wire fields: ``{"frame_seq": n}`` or ``{"chat_message_id": id}``."""
        if self.frame_seq is not None:
            return {"frame_seq": self.frame_seq}
        return {"chat_message_id": self.chat_message_id}
