"""Decisions: one emitted action with its reasons, evidence, explanation and policy version.

A decision id is a digest of what the decision *is* (stream, action, policy
version, rule, evidence, explanation, event time, and the broker timestamp of the
record that triggered it), so processing the same input again yields a
byte-identical record that consumers de-duplicate.

A decision about an account (``subject``: an account) or one drawn from an account's
history is written with schema version 2, which adds ``subject``, ``streams`` and
``account`` evidence; every other decision stays version 1, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streamsafe.events.encode import encode_record
from streamsafe.policy.model import Action
from streamsafe.scoring.evidence import Evidence

__all__ = ["Decision"]

SCHEMA_VERSION = 1
ACCOUNT_SCHEMA_VERSION = 2  # adds subject, streams and account evidence


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
    rule: str | None = None
    priority: str | None = None
    restrictions: tuple[str, ...] = ()
    explanation: Mapping[str, Any] = field(default_factory=dict)
    review_due_ms: int | None = None
    shadow: bool = False  # a shadow policy's would-be decision: never enforced
    appeal_id: str | None = None  # the broadcaster's appeal this decision answers (review item, reinstatement)
    appealed_decision_id: str | None = None  # an appeal's review item: the decision appealed against
    reverses: str | None = None  # a reinstatement: the decision it reverses
    subject: tuple[str, str] | None = None  # ("account" | "stream", id); None: the stream (version 1)
    streams: tuple[str, ...] = ()  # an account decision: the streams its evidence came from

    @classmethod
    def create(
        cls,
        stream_id: str,
        action: Action,
        reasons: tuple[str, ...],
        evidence: tuple[Evidence, ...],
        policy_version: str,
        *,
        decided_at_ms: int,
        event_ts_ms: int,
        rule: str | None = None,
        explanation: Mapping[str, Any] | None = None,
        review_sla_s: float | None = None,
        shadow: bool = False,
        appeal_id: str | None = None,
        appealed_decision_id: str | None = None,
        reverses: str | None = None,
        subject: tuple[str, str] | None = None,
        streams: tuple[str, ...] = (),
    ) -> Decision:
        draft = cls(
            decision_id="",
            stream_id=stream_id,
            action=action.kind,
            reasons=reasons,
            evidence=evidence,
            policy_version=policy_version,
            event_ts_ms=event_ts_ms,
            decided_at_ms=decided_at_ms,
            rule=rule,
            priority=action.priority,
            restrictions=action.restrictions,
            explanation=explanation or {},
            review_due_ms=(decided_at_ms + int(review_sla_s * 1000))
            if action.kind == "escalate" and review_sla_s else None,
            shadow=shadow,
            appeal_id=appeal_id,
            appealed_decision_id=appealed_decision_id,
            reverses=reverses,
            subject=subject,
            streams=streams,
        )
        # decided_at_ms (the triggering record's broker timestamp) is part of the identity:
        # a re-delivery of that record has it too, a later record with the same evidence not
        identity = {k: v for k, v in draft.to_record().items() if k not in ("decision_id", "review_due_ms")}
        digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return replace(draft, decision_id="dec-" + digest[:32])

    @property
    def is_escalation(self) -> bool:
        return self.action == "escalate"

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION if self.subject is None else ACCOUNT_SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "stream_id": self.stream_id,
            "action": self.action,
            "reasons": list(self.reasons),
            "evidence": [e.as_record() for e in self.evidence],
            "policy_version": self.policy_version,
            "event_ts_ms": self.event_ts_ms,
            "decided_at_ms": self.decided_at_ms,
        }
        if self.rule is not None:
            record["rule"] = self.rule
        if self.priority is not None:
            record["priority"] = self.priority
        if self.restrictions:
            record["restrictions"] = list(self.restrictions)
        if self.explanation:
            record["explanation"] = dict(self.explanation)
        if self.review_due_ms is not None:
            record["review_due_ms"] = self.review_due_ms
        if self.shadow:
            record["shadow"] = True
        for name in ("appeal_id", "appealed_decision_id", "reverses"):
            if (value := getattr(self, name)) is not None:
                record[name] = value
        if self.subject is not None:
            record["subject"] = {"type": self.subject[0], "id": self.subject[1]}
        if self.streams:
            record["streams"] = list(self.streams)
        return record

    def encode(self) -> bytes:
        return encode_record(self.to_record())
