"""Review verdicts are control records: signed by a trusted review-tool key and naming an
open escalation of their stream, or refused (dead-lettered ``bad_signature`` /
``no_open_escalation``: nothing blocked, reported or banked). Either way the audit trail
records it, with the key id."""

from __future__ import annotations

import logging
from dataclasses import replace

import orjson

from streamsafe.control.audit import audit_record
from streamsafe.control.signing import TrustedKeys, signer_of
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import REVIEW_VERDICTS
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.models import ReviewVerdict
from streamsafe.pipeline.outcome import NO_OPEN_ESCALATION, Outcome

__all__ = ["audited_verdict", "verify_verdict"]

log = logging.getLogger(__name__)


def _audit(source: SourceRecord, key: bytes | None, worker: str, outcome: str, key_id: str | None,
           **fields: str | None) -> dict[str, object]:
    return audit_record(topic=REVIEW_VERDICTS, partition=source.partition, offset=source.offset, change="verdict",
                        outcome=outcome, worker=worker, key=(key or b"").decode(errors="replace"), key_id=key_id,
                        record_ts_ms=source.timestamp_ms, **fields)


def verify_verdict(trusted: TrustedKeys, key: bytes | None, value: bytes | None, source: SourceRecord,
                   worker: str) -> tuple[str | None, Outcome | None]:
    """The key id that signed the verdict, or the refusal (a dead letter and its audit record)."""
    try:
        _, key_id = trusted.verify_bytes(REVIEW_VERDICTS, key, value)
        return key_id, None
    except RejectedInput as exc:
        claimed = None
        try:
            doc = orjson.loads(value) if value is not None else None
            claimed = signer_of(doc) if isinstance(doc, dict) else None
        except ValueError:
            pass
        log.warning("refused review verdict at %s[%d]@%d (%s): %s", source.topic, source.partition,
                    source.offset, exc.reason, exc.detail)
        return None, Outcome(dead_letters=(DeadLetter(exc.reason, exc.detail, source, key, value),),
                             audit=(_audit(source, key, worker, "refused", claimed, reason=exc.reason,
                                           detail=exc.detail),))


def audited_verdict(outcome: Outcome, event: ReviewVerdict, key: bytes | None, value: bytes | None,
                    source: SourceRecord, key_id: str | None, worker: str) -> Outcome:
    """A signed verdict's outcome with its audit record; one naming no open escalation is refused."""
    fields = {"verdict": event.verdict, "escalation_id": event.escalation_id}
    if outcome.review == NO_OPEN_ESCALATION:
        detail = (f"escalation {event.escalation_id} is not open on this stream" if event.escalation_id
                  else "a verdict must name an open escalation of its stream")
        log.warning("refused review verdict at %s[%d]@%d: %s", source.topic, source.partition, source.offset, detail)
        return Outcome(dead_letters=(DeadLetter(NO_OPEN_ESCALATION, detail, source, key, value),),
                       audit=(_audit(source, key, worker, "refused", key_id, reason=NO_OPEN_ESCALATION,
                                     detail=detail, **fields),))
    return replace(outcome, audit=(*outcome.audit, _audit(source, key, worker, "applied", key_id, **fields)))
