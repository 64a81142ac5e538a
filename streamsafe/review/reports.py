"""Authority report packets and preservation requests, built from an incident.

A packet carries what an NCMEC CyberTipline or NCA report needs and StreamSafe
knows — incident type, account and stream ids, every time (epoch ms and UTC),
matched hashes with bank and distance, classifier evidence references, the
decisions and verdicts with their times and policy versions — and no content.
The README maps its fields onto both authorities' forms.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from streamsafe.events.encode import encode_record
from streamsafe.events.values import EvidenceRef
from streamsafe.review.incident import Incident, Verdict
from streamsafe.scoring.state import StreamState

__all__ = ["COMPLETED", "PreservationRequest", "ReportPacket", "build_report", "build_viewer_report", "utc"]

DAY_MS = 86_400_000
#: the ``revision`` of a report sent again, completed, once its broadcaster was known (the first is 1)
COMPLETED = 2
INCIDENT_TYPES = {"grooming": "online_enticement"}


def utc(ms: int) -> dict[str, Any]:
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return {"ms": ms, "utc": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"}


def _digest(prefix: str, *parts: object) -> str:
    return prefix + hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ReportPacket:
    stream_id: str
    record: dict[str, Any]

    @property
    def report_id(self) -> str:
        return str(self.record["report_id"])

    def encode(self) -> bytes:
        return encode_record(self.record)


@dataclass(frozen=True, slots=True)
class PreservationRequest:
    stream_id: str
    record: dict[str, Any]

    def encode(self) -> bytes:
        return encode_record(self.record)


def build_report(stream_id: str, incident: Incident, state: StreamState, *, trigger: str,
                 category: str | None, reported_at_ms: int, preserve_days: int = 365,
                 margin_ms: int = 300_000, report_id: str | None = None,
                 completed: bool = False) -> tuple[ReportPacket, PreservationRequest]:
    """One report per incident: its id depends on the stream and the incident's first
    evidence, so a re-delivered trigger produces the same packet. ``report_id`` and
    ``completed``: the same report sent again, completed (schema version 2, ``revision`` 2)."""
    first, last = incident.evidence_span()
    first = first if first is not None else reported_at_ms
    last = last if last is not None else reported_at_ms
    report_id = report_id or _digest("rep-", stream_id, first)
    preservation_id = _digest("pres-", report_id)
    incident_type = INCIDENT_TYPES.get(category or "", "child_sexual_abuse_material")
    times: dict[str, Any] = {"first_evidence": utc(first), "last_evidence": utc(last),
                             "reported": utc(reported_at_ms)}
    if state.started_at_ms is not None:
        times["stream_started"] = utc(state.started_at_ms)
    if state.ended_at_ms is not None:
        times["stream_ended"] = utc(state.ended_at_ms)
    record: dict[str, Any] = {
        "schema_version": 2 if completed else 1,
        "report_id": report_id,
        **({"revision": COMPLETED} if completed else {}),
        "stream_id": stream_id,
        "incident_type": incident_type,
        "trigger": trigger,
        "times": times,
        "reported_account": {"broadcaster_id": state.broadcaster_id,
                             "account_age_days": state.account_age_days, "age_verified": state.age_verified},
        "stream": {"visibility": state.visibility},
        "hash_matches": [
            {"signal_type": f.signal_type, "bank": f.bank, "entry_id": f.entry_id, "distance": f.distance,
             "frame_seq": f.frame_seq, "frame": utc(f.ts_ms),
             **({"frame_hash": f.frame_hash} if f.frame_hash else {}),
             **({"transform": f.transform} if f.transform else {})}
            for f in incident.frames
        ],
        "classifier_evidence": [_classifier(c) for c in incident.classifier],
        "decisions": [_decision(d) for d in incident.decisions],
        "verdicts": [_verdict(v) for v in incident.verdicts],
        "preservation_id": preservation_id,
    }
    if category:
        record["category"] = category
    refs = _refs(incident)
    preservation = _preservation(
        record, state, f"authority report {report_id} ({incident_type}{', ' + category if category else ''})",
        max(0, first - margin_ms), last + margin_ms,
        sorted({f.frame_seq for f in incident.frames} | {r.frame_seq for r in refs if r.frame_seq is not None}),
        refs, reported_at_ms + preserve_days * DAY_MS)
    if completed:
        preservation = {**preservation, "schema_version": 2, "revision": COMPLETED}
    return ReportPacket(stream_id, record), PreservationRequest(stream_id, preservation)


def build_viewer_report(stream_id: str, incident: Incident, state: StreamState, viewer: str,
                        streams: tuple[str, ...], *, category: str | None, reported_at_ms: int,
                        preserve_days: int = 365, margin_ms: int = 300_000
                        ) -> tuple[ReportPacket, PreservationRequest]:
    """A reviewer confirmed a viewer's grooming across streams: the viewer is the person reported,
    with the streams involved (their broadcasters, likely minors, are the victims' context; this
    stream's is the one known here). Its id depends on the viewer and the streams only, so a
    confirmed verdict on another of the viewer's escalations yields the same packet id."""
    involved = tuple(sorted({stream_id, *streams}))
    named = [d for d in incident.decisions if d.get("viewer") == viewer]
    first = min((d.get("since", d["at"]) for d in named), default=reported_at_ms)
    span = incident.evidence_span()
    first = min(first, span[0]) if span[0] is not None else first
    last = max(span[1] or first, first)
    report_id = _digest("rep-", "viewer", viewer, involved)
    preservation_id = _digest("pres-", report_id)
    record: dict[str, Any] = {
        "schema_version": 1,
        "report_id": report_id,
        "stream_id": stream_id,
        "incident_type": "online_enticement",
        "trigger": "reviewer",
        "times": {"first_evidence": utc(first), "last_evidence": utc(last), "reported": utc(reported_at_ms)},
        "reported_account": {"broadcaster_id": None, "account_id": viewer, "role": "viewer"},
        "streams_involved": [
            {"stream_id": s, **({"broadcaster_id": state.broadcaster_id, "account_age_days": state.account_age_days,
                                 "age_verified": state.age_verified} if s == stream_id else {})}
            for s in involved],
        "stream": {"visibility": state.visibility},
        "hash_matches": [],
        "classifier_evidence": [_classifier(c) for c in incident.classifier],
        "decisions": [_decision(d) for d in named],
        "verdicts": [_verdict(v) for v in incident.verdicts],
        "preservation_id": preservation_id,
    }
    if category:
        record["category"] = category
    preservation = _preservation(
        record, state, f"authority report {report_id} (online_enticement: a viewer across {len(involved)} streams)",
        max(0, first - margin_ms), max(last, reported_at_ms) + margin_ms, [], _refs(incident),
        reported_at_ms + preserve_days * DAY_MS, account_id=viewer, streams=list(involved))
    return ReportPacket(stream_id, record), PreservationRequest(stream_id, preservation)


def _refs(incident: Incident) -> list[EvidenceRef]:
    return [ref for c in incident.classifier if (ref := EvidenceRef.parse(c.get("r"))) is not None]


def _preservation(report: Mapping[str, Any], state: StreamState, reason: str, from_ms: int, to_ms: int,
                  frame_seqs: list[int], refs: list[EvidenceRef], until_ms: int, **subject: Any) -> dict[str, Any]:
    """The preservation request of ``report``: its window, frames and chat messages (``subject``:
    the fields naming who else it is about, after the broadcaster)."""
    return {
        "schema_version": 1,
        "preservation_id": report["preservation_id"],
        "report_id": report["report_id"],
        "stream_id": report["stream_id"],
        "broadcaster_id": state.broadcaster_id,
        **subject,
        "reason": reason,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "frame_seqs": frame_seqs,
        "chat_message_ids": sorted({r.chat_message_id for r in refs if r.chat_message_id is not None}),
        "preserve_until_ms": until_ms,
    }


def _decision(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"decision_id": d["id"], "action": d["action"], "policy_version": d["pv"], "decided": utc(d["at"]),
            **({"priority": d["priority"]} if d.get("priority") else {}),
            **({"rule": d["rule"]} if d.get("rule") else {})}


def _verdict(v: Verdict) -> dict[str, Any]:
    return {"verdict": v.verdict, "reviewer_id": v.reviewer_id, "at": utc(v.ts_ms),
            **({"category": v.category} if v.category else {})}


def _classifier(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"classifier": entry["c"], "score": entry["s"], "at": utc(entry["t"])}
    ref = EvidenceRef.parse(entry.get("r"))
    if ref is not None:
        out.update(ref.fields())
    return out
