"""What StreamSafe remembers about one stream, kept in a changelog-backed table.

The state is small and changes rarely: it records which decisions were emitted
(so a stream is blocked at most once, across restarts) and the context that
later policies weigh. Agents write it only when :meth:`StreamState.to_record`
would differ, never per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from streamsafe.events.models import StreamMetadata

__all__ = ["StreamState"]

_PRIORITY_RANK = {"P3": 0, "P2": 1, "P1": 2, "P0": 3}


@dataclass(frozen=True, slots=True)
class StreamState:
    block_id: str | None = None
    escalation_id: str | None = None
    escalation_priority: str | None = None
    broadcaster_id: str | None = None
    account_age_days: int | None = None
    age_verified: bool | None = None
    visibility: str | None = None
    ended_at_ms: int | None = None
    user_reports: int = 0

    @property
    def blocked(self) -> bool:
        return self.block_id is not None

    def escalation_rises_to(self, priority: str) -> bool:
        """True when ``priority`` is more urgent than any escalation emitted so far."""
        if self.escalation_priority is None:
            return True
        return _PRIORITY_RANK[priority] > _PRIORITY_RANK[self.escalation_priority]

    def with_metadata(self, event: StreamMetadata) -> StreamState:
        return replace(
            self,
            broadcaster_id=event.broadcaster_id,
            account_age_days=_keep(event.account_age_days, self.account_age_days),
            age_verified=_keep(event.age_verified, self.age_verified),
            visibility=_keep(event.visibility, self.visibility),
            ended_at_ms=event.ts_ms if event.event == "stream.ended" else self.ended_at_ms,
        )

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> StreamState:
        if not record:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def _keep(new: Any, old: Any) -> Any:
    return old if new is None else new
