"""Evidence: one observation about a stream that a policy may act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Evidence"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """``kind`` is ``hash_match``, ``classifier``, ``user_report``, ``context`` or ``risk``; ``detail`` holds
    only references (bank, entry id, frame seq, message id), never hash values."""

    kind: str
    ts_ms: int
    detail: tuple[tuple[str, Any], ...]

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "ts_ms": self.ts_ms, **{k: v for k, v in self.detail if v is not None}}
