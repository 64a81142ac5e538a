"""An escalation as the body of Coop's ``POST /api/v1/report`` (pure).

What goes to Coop is what a reviewer needs to find and judge the stream, and no more:

* the stream is the reported item (``reportedItem.id`` = stream id), so every escalation of
  one stream lands on the same Coop item and its history;
* ``reportedItem.data`` carries StreamSafe's priority (Coop has no priority field: routing
  rules send each priority to its queue), the review deadline, the rule, its reasons, the
  escalation id and the policy version, and the evidence as short lines a person reads;
* no hash values and no entry ids derived from them (a reviewer cannot use them, and
  hashes of abuse material are shared only through banks), no account ids (the
  escalation has none; the platform's own tools resolve the stream to its broadcaster).

Every value comes from the escalation record, so a re-sent escalation yields the same
body byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streamsafe.integrations.coop.mapping import CoopMapping

__all__ = ["evidence_lines", "iso_utc", "report_body"]

_MAX_LINES = 20
_MAX_REASON_CHARS = 1000


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _line(item: Mapping[str, Any]) -> str:
    kind = str(item.get("kind"))
    at = iso_utc(int(item.get("ts_ms", 0)))
    if kind == "hash_match":
        via = f" ({item['transform']})" if item.get("transform") else ""
        return (f"hash_match {item.get('signal_type', '?')} in bank {item.get('bank', '?')} at distance "
                f"{item.get('distance', 0)}{via}, frame {item.get('frame_seq', '?')} at {at}")
    if kind == "classifier":
        message = f", chat message {item['chat_message_id']}" if item.get("chat_message_id") else ""
        return f"classifier {item.get('classifier', '?')} scored {item.get('score')}{message} at {at}"
    if kind == "user_report":
        return f"user reports: {item.get('count', 1)} at {at}"
    if kind == "context":
        parts = [f"{k} {item[k]}" for k in ("visibility", "account_age_days", "age_verified") if k in item]
        return f"context: {', '.join(parts) or 'none'} at {at}"
    return f"{kind} at {at}"


def evidence_lines(evidence: list[Mapping[str, Any]]) -> list[str]:
    """The escalation's evidence as lines for a reviewer (no hashes, no entry ids)."""
    lines = [_line(e) for e in evidence[:_MAX_LINES]]
    if len(evidence) > _MAX_LINES:
        lines.append(f"... and {len(evidence) - _MAX_LINES} more")
    return lines


def report_body(escalation: Mapping[str, Any], mapping: CoopMapping) -> dict[str, Any]:
    """The Coop report for one ``enforcement.escalations`` record (already schema-valid)."""
    evidence = list(escalation["evidence"])
    data: dict[str, Any] = {
        "source": "streamsafe",
        "stream_id": escalation["stream_id"],
        "escalation_id": escalation["decision_id"],
        "decision_ids": [escalation["decision_id"]],
        "priority": escalation["priority"],
        "rule": escalation.get("rule") or "",
        "reasons": [r[:_MAX_REASON_CHARS] for r in escalation["reasons"]],
        "evidence": evidence_lines(evidence),
        "policy_version": escalation["policy_version"],
        "decided_at": iso_utc(escalation["decided_at_ms"]),
    }
    if escalation.get("review_due_ms") is not None:
        data["review_due"] = iso_utc(escalation["review_due_ms"])
        data["review_due_ms"] = escalation["review_due_ms"]
    if escalation.get("explanation"):
        data["risk"] = escalation["explanation"]["risk"]
    body: dict[str, Any] = {
        "reporter": {"kind": "user", "typeId": mapping.reporter_type_id, "id": mapping.reporter_id},
        "reportedAt": iso_utc(escalation["decided_at_ms"]),
        "reportedItem": {"id": escalation["stream_id"], "typeId": mapping.stream_item_type_id, "data": data},
    }
    reason = mapping.reason_for(escalation.get("rule"), [str(e.get("kind")) for e in evidence])
    if reason is not None:
        body["reportedForReason"] = {"policyId": reason.policy_id,
                                     "reason": f"StreamSafe {escalation['priority']}: {escalation['reasons'][0]}"
                                     [:_MAX_REASON_CHARS],
                                     "csam": reason.csam}
    return body
