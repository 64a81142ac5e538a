"""Decisions: one emitted action with its reasons, evidence and policy version.

A decision id is a digest of what the decision *is* (stream, action, priority,
policy version, and the evidence that triggered it), so processing the same
input again yields a byte-identical record that consumers de-duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from streamsafe.scoring.evidence import Evidence

__all__ = ["Decision", "decision_id"]

SCHEMA_VERSION = 1


def decision_id(
    stream_id: str,
    action: str,
    priority: str | None,
    policy_version: str,
    evidence: tuple[Evidence, ...],
) -> str:
    material = orjson.dumps(
        [stream_id, action, priority, policy_version, [e.as_record() for e in evidence]],
        option=orjson.OPT_SORT_KEYS,
    )
    return "dec-" + hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    stream_id: str
    action: str
    reasons: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    policy_version: str
    event_ts_ms: int
    decided_at_ms: int
    priority: str | None = None

    @classmethod
    def create(
        cls,
        stream_id: str,
        action: str,
        reasons: tuple[str, ...],
        evidence: tuple[Evidence, ...],
        policy_version: str,
        decided_at_ms: int,
        priority: str | None = None,
    ) -> Decision:
        return cls(
            decision_id=decision_id(stream_id, action, priority, policy_version, evidence),
            stream_id=stream_id,
            action=action,
            reasons=reasons,
            evidence=evidence,
            policy_version=policy_version,
            event_ts_ms=max(e.ts_ms for e in evidence),
            decided_at_ms=decided_at_ms,
            priority=priority,
        )

    @property
    def is_escalation(self) -> bool:
        return self.action == "escalate"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "stream_id": self.stream_id,
            "action": self.action,
            "reasons": list(self.reasons),
            "evidence": [e.as_record() for e in self.evidence],
            "policy_version": self.policy_version,
            "event_ts_ms": self.event_ts_ms,
            "decided_at_ms": self.decided_at_ms,
        }
        if self.priority is not None:
            record["priority"] = self.priority
        return record

    def encode(self) -> bytes:
        return orjson.dumps(self.to_record())
