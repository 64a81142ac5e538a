"""An incident: what StreamSafe must remember about a stream once it decided
something about it — the decision log, open escalations with their review
deadlines, the matched frames and classifier evidence a report needs, verdicts.

Kept in its own changelog-backed table, written only when a decision, verdict or
match happens (rare), so the per-frame state stays small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from streamsafe.events.models import Match
from streamsafe.events.values import EvidenceRef, Priority
from streamsafe.policy.decisions import Decision

__all__ = ["APPEAL_RULE", "AppealItem", "Escalation", "Incident", "MatchedFrame", "Verdict", "viewer_of"]

MAX_DECISIONS = 24
MAX_FRAMES = 16
MAX_CLASSIFIER = 12
MAX_VERDICTS = 8
MAX_ESCALATIONS = 12
MAX_APPEALS = 8
APPEAL_RULE = "appeal"  # the rule of an appeal's review item (an escalation)


@dataclass(frozen=True, slots=True)
class Escalation:
    decision_id: str
    priority: str
    rule: str
    top_signal: str  # the largest contribution to risk when raised: whom to blame for a false positive
    decided_at_ms: int
    due_ms: int | None
    status: str = "open"  # open | benign | confirmed | superseded | breached


@dataclass(frozen=True, slots=True)
class MatchedFrame:
    frame_seq: int
    ts_ms: int
    signal_type: str
    frame_hash: str | None
    bank: str
    entry_id: str
    distance: int
    transform: str | None = None  # how the frame showed the entry's picture (None: as it is)


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str
    category: str | None
    reviewer_id: str
    ts_ms: int
    escalation_id: str | None = None


@dataclass(frozen=True, slots=True)
class AppealItem:
    """An appeal under review: the decision appealed, its review item (the escalation now open
    for it: a missed deadline raises a new one) and what came of it."""

    appeal_id: str
    decision_id: str
    escalation_id: str
    received_ms: int  # broker timestamp of the appeal record: its review item's decided_at_ms
    status: str = "open"  # open | upheld | reversed | merged (a second appeal of a decision already under review)
    reinstate_id: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    partition: int = 0
    decisions: tuple[Mapping[str, Any], ...] = ()
    escalations: tuple[Escalation, ...] = ()
    frames: tuple[MatchedFrame, ...] = ()
    classifier: tuple[Mapping[str, Any], ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    report_id: str | None = None
    reported_at_ms: int | None = None
    # what the report was made for and its category (a reviewer's), to send it again completed
    # (``pipeline/review.py``); None in incidents stored before they were kept: not sent again
    report_trigger: str | None = None
    report_category: str | None = None
    appeals: tuple[AppealItem, ...] = ()

    # -- recording ----------------------------------------------------------------

    def with_decisions(self, decisions: Iterable[Decision], partition: int) -> Incident:
        log = list(self.decisions)
        escalations = list(self.escalations)
        for d in decisions:
            if d.shadow or any(entry["id"] == d.decision_id for entry in log):
                continue
            log.append(_logged(d))
            if d.action == "escalate" and d.priority:
                top = _top_signal(d)
                # a higher escalation supersedes the open lower ones: one deadline at a time (an appeal's
                # review item is a question of its own: it neither supersedes nor is superseded)
                escalations = [replace(e, status="superseded") if e.status == "open" and d.rule != APPEAL_RULE
                               and e.rule != APPEAL_RULE and Priority(e.priority).rank < Priority(d.priority).rank
                               else e for e in escalations]
                escalations.append(Escalation(d.decision_id, d.priority, d.rule or "", top, d.decided_at_ms,
                                              d.review_due_ms))
        return replace(self, partition=partition, decisions=tuple(log[-MAX_DECISIONS:]),
                       escalations=tuple(_keep_open_first(escalations)))

    def with_matches(self, matches: Iterable[Match], frame_hashes: Mapping[int, Mapping[str, str]],
                     partition: int) -> Incident:
        known = {(f.frame_seq, f.entry_id) for f in self.frames}
        frames = list(self.frames)
        for m in matches:
            if (m.frame_seq, m.entry_id) not in known:
                frames.append(MatchedFrame(m.frame_seq, m.frame_ts_ms, m.signal_type,
                                           frame_hashes.get(m.frame_seq, {}).get(m.signal_type), m.bank,
                                           m.entry_id, m.distance, m.transform))
                known.add((m.frame_seq, m.entry_id))
        frames.sort(key=lambda f: (f.distance, -f.ts_ms))  # keep the strongest evidence
        return replace(self, partition=partition, frames=tuple(sorted(frames[:MAX_FRAMES],
                                                                     key=lambda f: f.ts_ms)))

    def with_classifier(self, classifier: str, score: float, ts_ms: int, ref: EvidenceRef | None) -> Incident:
        entry: dict[str, Any] = {"c": classifier, "s": score, "t": ts_ms}
        if ref is not None:
            entry["r"] = str(ref)
        if entry in self.classifier:
            return self
        kept = sorted((*self.classifier, entry), key=lambda e: (-e["s"], e["t"]))[:MAX_CLASSIFIER]
        return replace(self, classifier=tuple(sorted(kept, key=lambda e: e["t"])))

    def with_verdict(self, verdict: Verdict) -> Incident:
        if verdict in self.verdicts:
            return self
        return replace(self, verdicts=(*self.verdicts, verdict)[-MAX_VERDICTS:])

    def close(self, status: str, escalation_id: str | None = None) -> Incident:
        """Close open escalations (one, or all of the stream's but its appeals': only a verdict
        naming an appeal's review item answers the appeal)."""
        return replace(self, escalations=tuple(
            replace(e, status=status) if e.status == "open" and (
                e.decision_id == escalation_id or (escalation_id is None and e.rule != APPEAL_RULE)) else e
            for e in self.escalations))

    def with_appeal(self, appeal: AppealItem) -> Incident:
        """Record an appeal, or replace the record of the same appeal."""
        kept = [a for a in self.appeals if a.appeal_id != appeal.appeal_id]
        return replace(self, appeals=(*kept, appeal)[-MAX_APPEALS:])

    # -- reading ------------------------------------------------------------------

    def escalation(self, decision_id: str) -> Escalation | None:
        return next((e for e in self.escalations if e.decision_id == decision_id), None)

    def logged(self, decision_id: str) -> Mapping[str, Any] | None:
        """The decision log's entry of a decision, if it is still in the log."""
        return next((d for d in self.decisions if d["id"] == decision_id), None)

    def appeal(self, appeal_id: str) -> AppealItem | None:
        return next((a for a in self.appeals if a.appeal_id == appeal_id), None)

    def appeal_under_review(self, escalation_id: str) -> AppealItem | None:
        """The appeal an escalation is the review item of, if any."""
        return next((a for a in self.appeals if a.escalation_id == escalation_id and a.status != "merged"), None)

    def viewer_named(self, decision_id: str) -> str | None:
        """The viewer an escalation's decision names (the viewer-grooming pattern), if any."""
        entry = self.logged(decision_id)
        return entry.get("viewer") if entry else None

    def open_escalations(self) -> list[Escalation]:
        return [e for e in self.escalations if e.status == "open"]

    def overdue(self, now_ms: int) -> list[Escalation]:
        return [e for e in self.open_escalations() if e.due_ms is not None and e.due_ms <= now_ms]

    @property
    def settled(self) -> bool:
        """Nothing left that needs this incident kept: no open escalation."""
        return not self.open_escalations()

    def evidence_span(self) -> tuple[int | None, int | None]:
        times = [f.ts_ms for f in self.frames] + [c["t"] for c in self.classifier]
        return (min(times), max(times)) if times else (None, None)

    # -- storage ------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"p": self.partition}
        if self.decisions:
            record["d"] = [dict(d) for d in self.decisions]
        if self.escalations:
            record["e"] = [[e.decision_id, e.priority, e.rule, e.top_signal, e.decided_at_ms, e.due_ms,
                            e.status] for e in self.escalations]
        if self.frames:
            record["f"] = [[f.frame_seq, f.ts_ms, f.signal_type, f.frame_hash, f.bank, f.entry_id, f.distance,
                            *((f.transform,) if f.transform else ())] for f in self.frames]
        if self.classifier:
            record["c"] = [dict(c) for c in self.classifier]
        if self.verdicts:
            record["v"] = [[v.verdict, v.category, v.reviewer_id, v.ts_ms, v.escalation_id]
                           for v in self.verdicts]
        if self.report_id:
            record["r"] = [self.report_id, self.reported_at_ms, self.report_trigger, self.report_category]
        if self.appeals:
            record["a"] = [[a.appeal_id, a.decision_id, a.escalation_id, a.received_ms, a.status, a.reinstate_id]
                           for a in self.appeals]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Incident:
        if not record:
            return cls()
        report = [*(record.get("r") or [None, None]), None, None][:4]  # older records: two fields
        return cls(
            partition=record.get("p", 0),
            decisions=tuple(record.get("d", ())),
            escalations=tuple(Escalation(*row) for row in record.get("e", ())),
            frames=tuple(MatchedFrame(*row) for row in record.get("f", ())),
            classifier=tuple(record.get("c", ())),
            verdicts=tuple(Verdict(*row) for row in record.get("v", ())),
            report_id=report[0],
            reported_at_ms=report[1],
            report_trigger=report[2],
            report_category=report[3],
            appeals=tuple(AppealItem(*row) for row in record.get("a", ())),
        )


def _logged(d: Decision) -> dict[str, Any]:
    """A decision's entry in the log: what an appeal against it needs (the banks its hash
    evidence came from, what it restricted, a reviewer's category), never hash values."""
    entry: dict[str, Any] = {"id": d.decision_id, "action": d.action, "priority": d.priority, "rule": d.rule,
                             "pv": d.policy_version, "at": d.decided_at_ms, "et": d.event_ts_ms}
    banks = sorted({str(v) for e in d.evidence if e.kind == "hash_match" for k, v in e.detail if k == "bank"})
    if banks:
        entry["b"] = banks
    if d.restrictions:
        entry["x"] = list(d.restrictions)
    category = next((v for e in d.evidence if e.kind == "review" for k, v in e.detail if k == "category" and v), None)
    if category:
        entry["cat"] = category
    viewer = viewer_of(d)
    if viewer:  # what a report naming the viewer needs: the viewer and the streams involved
        entry["viewer"] = viewer
        entry["streams"] = list(d.streams)
        entry["since"] = min(e.ts_ms for e in d.evidence if e.kind == "account")  # the first stream's evidence
    if d.subject is not None and d.subject[0] == "account":
        entry["subject"] = "account"
    return entry


def viewer_of(decision: Decision) -> str | None:
    """The viewer a decision's account evidence names (the viewer-grooming pattern), if any."""
    return next((str(v) for e in decision.evidence if e.kind == "account" and ("role", "viewer") in e.detail
                 for k, v in e.detail if k == "account_id"), None)


def _top_signal(decision: Decision) -> str:
    contributions = decision.explanation.get("top_contributions", []) if decision.explanation else []
    for c in contributions:
        signal = str(c.get("signal", ""))
        if signal and signal != "prior":
            return signal
    return decision.rule or "unknown"


def _keep_open_first(escalations: list[Escalation]) -> list[Escalation]:
    opened = [e for e in escalations if e.status == "open"]
    closed = [e for e in escalations if e.status != "open"]
    return (closed + opened)[-MAX_ESCALATIONS:] if len(escalations) > MAX_ESCALATIONS else escalations
