"""The audit trail (``streamsafe.audit``): one record per control change applied or refused.

Who writes what:

* Policies and bank entries: the workers' audit reader (:mod:`.auditor`), one consumer
  group per app id, so each control record is audited once however many workers apply it;
  bank additions and removals are audited in batches (count, first and last offset, the
  first entry ids, never the hashes), refusals and policies one record each.
* Review verdicts: the worker that holds the verdict's stream, as it applies or refuses it.

An audit id is derived from the control record's topic, partition and offsets and the
outcome: a record audited again (a redelivery after a rebalance) has the same id, and
readers (:func:`read_audit`, ``streamsafe audit``) keep the first.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Sequence
from typing import Any

import orjson

from streamsafe import clients
from streamsafe.control.broadcast import assign_whole_topic, stop_consumer
from streamsafe.events.contract import AUDIT
from streamsafe.settings import Settings

__all__ = ["ENTRY_IDS_SHOWN", "audit_id", "audit_record", "format_audit", "read_audit", "worker_name"]

#: entry ids listed in one bank batch's audit record
ENTRY_IDS_SHOWN = 20
_LIMITS = {"key": 256, "reason": 64, "detail": 512, "key_id": 64, "previous_version": 128, "new_version": 128,
           "bank": 64, "escalation_id": 64, "verdict": 32, "published_by": 256, "worker": 256}


def worker_name(settings: Settings) -> str:
    return f"{settings.app_id}@{settings.instance_id or socket.gethostname()}"


def audit_id(topic: str, partition: int, offset: int, last_offset: int, outcome: str) -> str:
    digest = hashlib.sha256(f"{topic}|{partition}|{offset}|{last_offset}|{outcome}".encode()).hexdigest()
    return f"aud-{digest[:32]}"


def audit_record(*, topic: str, partition: int, offset: int, change: str, outcome: str, worker: str,
                 last_offset: int | None = None, **fields: Any) -> dict[str, Any]:
    """A ``streamsafe.audit`` record (strings cut to the schema's limits, None fields dropped
    except ``key_id``, which is null for an unsigned record)."""
    record: dict[str, Any] = {
        "schema_version": 1,
        "audit_id": audit_id(topic, partition, offset, offset if last_offset is None else last_offset, outcome),
        "topic": topic, "partition": partition, "offset": offset, "change": change, "outcome": outcome,
        "at_ms": int(time.time() * 1000), "worker": worker[:_LIMITS["worker"]],
    }
    if last_offset is not None and last_offset != offset:
        record["last_offset"] = last_offset
    for name, value in fields.items():
        if value is None and name != "key_id":
            continue
        if isinstance(value, str) and name in _LIMITS:
            value = value[:_LIMITS[name]]
        record[name] = value
    record.setdefault("key_id", None)
    return record


async def read_audit(settings: Settings, since_ms: int = 0) -> list[dict[str, Any]]:
    """Every audit record on the topic, once each (by audit id), in the order the changes were
    published (the control record's broker time, then topic, partition and offset)."""
    consumer = clients.consumer(settings)
    await clients.start(consumer)
    seen: dict[str, dict[str, Any]] = {}
    try:
        partitions = await assign_whole_topic(consumer, settings.topic_name(AUDIT))
        end = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for record in records:
                    try:
                        doc = orjson.loads(record.value)
                    except (orjson.JSONDecodeError, TypeError):
                        continue
                    if isinstance(doc, dict) and isinstance(doc.get("audit_id"), str):
                        seen.setdefault(doc["audit_id"], doc)
    finally:
        await stop_consumer(consumer)
    chosen = [d for d in seen.values() if int(d.get("record_ts_ms") or d.get("at_ms") or 0) >= since_ms]
    return sorted(chosen, key=lambda d: (int(d.get("record_ts_ms") or d.get("at_ms") or 0), str(d.get("topic")),
                                         int(d.get("partition") or 0), int(d.get("offset") or 0)))


def format_audit(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per audit record, for people."""
    lines = []
    for r in records:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(r.get("record_ts_ms") or r["at_ms"]) / 1000))
        what = r.get("key", "")
        if r["change"] == "policy_published":
            what = f"{r.get('key')} {r.get('previous_version') or '-'} -> {r.get('new_version')}"
        elif r["change"] in ("bank_entries_added", "bank_entries_removed"):
            what = f"{r.get('bank') or ''} {r.get('count', 1)} entr{'y' if r.get('count', 1) == 1 else 'ies'}".strip()
        elif r["change"] == "verdict":
            what = f"{r.get('verdict') or '?'} on escalation {r.get('escalation_id') or '-'}"
        reason = f" ({r['reason']}: {r.get('detail', '')})" if r["outcome"] == "refused" else ""
        lines.append(f"{when}  {r['outcome']:<7}  {r['change']:<20}  key {r.get('key_id') or 'unsigned':<16}  "
                     f"{what}{reason}  [{r['topic']}[{r.get('partition')}]@{r.get('offset')}]")
    return lines
