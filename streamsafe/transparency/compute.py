"""One transparency report from an :class:`~streamsafe.transparency.log.EnforcementLog`
and a period. Pure code: every figure in the HTML, JSON and CSV comes from the one
:class:`TransparencyReport` built here.

The clock: a record is in the period ``[since, until)`` by the time StreamSafe gave it
on its topic -- ``decided_at_ms`` for decisions and escalations, ``times.reported.ms``
for reports (a preservation request goes with its report), ``ts_ms`` for verdicts,
``submitted_at_ms`` for appeals, ``dead_lettered_at_ms`` for dead letters. Outcomes
(verdicts answering an escalation) count only when given before ``until``, so the
report of a closed period does not change later.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamsafe.transparency.log import EnforcementLog

__all__ = ["ACTION_TYPES", "DETECTION_SOURCES", "PRIORITIES", "TransparencyReport", "compute_report",
           "nearest_rank", "utc_text"]

SCHEMA_VERSION = 1
ACTION_TYPES = ("block", "restrict", "escalate", "report", "reinstate")
DETECTION_SOURCES = ("authority_hash", "internal_hash", "partner_hash", "classifier", "user_report", "reviewer",
                     "fused_risk")
PRIORITIES = ("P0", "P1", "P2", "P3")
CLOCK = ("decided_at_ms (decisions, escalations), times.reported.ms (reports, with their preservation "
         "requests), ts_ms (verdicts), submitted_at_ms (appeals), dead_lettered_at_ms (dead letters); "
         "period [since, until), epoch ms UTC")
UNCATEGORISED = "uncategorised"


def utc_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nearest_rank(values: list[int], q: float) -> int | None:
    """The nearest-rank percentile (the smallest value with at least ``q`` of them at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True, slots=True)
class TransparencyReport:
    """The report's figures as one JSON-ready mapping per section (see :data:`SECTIONS`)."""

    period: dict[str, Any]
    actions: dict[str, Any]
    detection_sources: dict[str, int]
    automation: dict[str, int]
    time_to_action_ms: dict[str, dict[str, int | None]]
    authority_reports: dict[str, Any]
    review_sla: dict[str, dict[str, int | float | None]]
    reviewer_overturn: dict[str, dict[str, int | float | None]]
    appeals: dict[str, int | float | None]
    dead_letters: dict[str, Any]
    records: dict[str, dict[str, int]]

    def as_record(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **{name: getattr(self, name) for name in SECTIONS}}


SECTIONS = ("period", "actions", "detection_sources", "automation", "time_to_action_ms", "authority_reports",
            "review_sla", "reviewer_overturn", "appeals", "dead_letters", "records")


def detection_source(decision: Mapping[str, Any], bank_trust: Mapping[str, str]) -> str:
    """The strongest kind of evidence a decision cites: a hash match (by its bank's trust),
    then a classifier, a user report, a reviewer's verdict; fused risk alone otherwise."""
    kinds: set[str] = set()
    for item in decision.get("evidence") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("kind")
        if kind == "hash_match":
            trust = bank_trust.get(str(item.get("bank")), "partner")
            kind = {"authority": "authority_hash", "internal": "internal_hash"}.get(trust, "partner_hash")
        elif kind == "review":
            kind = "reviewer" if "verdict" in item else None
        kinds.add(str(kind))
    return next((s for s in DETECTION_SOURCES[:-1] if s in kinds), "fused_risk")


def is_human(decision: Mapping[str, Any]) -> bool:
    """A decision a person made: a reviewer's verdict is its evidence, or it reinstates after an appeal."""
    return decision.get("action") == "reinstate" or any(
        isinstance(e, dict) and e.get("kind") == "review" and "verdict" in e for e in decision.get("evidence") or ())


def _first_evidence(decisions: list[dict[str, Any]]) -> dict[str, int | None]:
    """For each decision, the stream's first evidence known when it was made: the earliest
    evidence time cited by this or any earlier decision on the stream (so a reviewer's block
    after a classifier's escalation counts from the classifier's signal)."""
    earliest: dict[str, int] = {}
    first: dict[str, int | None] = {}
    for decision in sorted(decisions, key=lambda d: (d["decided_at_ms"], d["decision_id"])):
        times = [e["ts_ms"] for e in decision.get("evidence") or ()
                 if isinstance(e, dict) and isinstance(e.get("ts_ms"), int) and not isinstance(e["ts_ms"], bool)]
        stream = decision["stream_id"]
        if times:
            earliest[stream] = min(min(times), earliest.get(stream, min(times)))
        first[decision["decision_id"]] = earliest.get(stream)
    return first


def _category(decision: Mapping[str, Any], by_stream: Mapping[str, str]) -> str:
    for item in decision.get("evidence") or ():
        if isinstance(item, dict) and item.get("kind") == "review" and item.get("category"):
            return str(item["category"])
    return by_stream.get(decision["stream_id"], UNCATEGORISED)


def _stream_categories(log: EnforcementLog, until_ms: int) -> dict[str, str]:
    """Each stream's category: its latest confirmed verdict's, else its latest report's."""
    found: dict[str, tuple[int, str]] = {}
    for report in log.reports.values():
        at = report["times"]["reported"]["ms"]
        if report.get("category") and at < until_ms and at >= found.get(report["stream_id"], (-1, ""))[0]:
            found[report["stream_id"]] = (at, report["category"])
    confirmed = sorted((v for v in log.verdicts if v["verdict"] == "confirmed" and v.get("category")
                        and v["ts_ms"] < until_ms), key=lambda v: v["ts_ms"])
    chosen = {stream: category for stream, (_, category) in found.items()}
    chosen.update({v["stream_id"]: v["category"] for v in confirmed})
    return chosen


def _answer(escalation: Mapping[str, Any], verdicts: list[dict[str, Any]], until_ms: int) -> dict[str, Any] | None:
    """The first verdict that settles an escalation before ``until``, as the worker applies
    them: ``confirmed`` settles every escalation of the stream raised before it, ``benign``
    the one it names (or all of the stream's), ``needs_more_context`` none."""
    for verdict in verdicts:  # sorted by time, this stream's only
        if verdict["ts_ms"] >= until_ms:
            return None
        if verdict["verdict"] not in ("confirmed", "benign") or verdict["ts_ms"] < escalation["decided_at_ms"]:
            continue
        named = verdict.get("escalation_id")
        if verdict["verdict"] == "confirmed" or named in (None, escalation["decision_id"]):
            return verdict
    return None


def _review(escalations: list[dict[str, Any]], log: EnforcementLog, until_ms: int, horizon_ms: int
            ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for verdict in sorted(log.verdicts, key=lambda v: v["ts_ms"]):
        by_stream[verdict["stream_id"]].append(verdict)
    sla = {p: Counter({"escalations": 0, "met": 0, "missed": 0, "open": 0}) for p in PRIORITIES}
    overturn: dict[str, Counter[str]] = defaultdict(lambda: Counter({"reviewed": 0, "benign": 0}))
    for escalation in escalations:
        answer = _answer(escalation, by_stream.get(escalation["stream_id"], []), until_ms)
        due = escalation.get("review_due_ms")
        counts = sla.setdefault(str(escalation.get("priority")),
                                Counter({"escalations": 0, "met": 0, "missed": 0, "open": 0}))
        counts["escalations"] += 1
        if answer is not None and (due is None or answer["ts_ms"] <= due):
            counts["met"] += 1
        elif answer is not None or (due is not None and due < horizon_ms):
            counts["missed"] += 1
        else:
            counts["open"] += 1
        if answer is not None:
            rule = overturn[str(escalation.get("rule") or "unnamed")]
            rule["reviewed"] += 1
            rule["benign"] += answer["verdict"] == "benign"
    sla_out = {p: {**c, "met_rate": _rate(c["met"], c["met"] + c["missed"])} for p, c in sla.items()}
    overturn_out = {rule: {**c, "overturn_rate": _rate(c["benign"], c["reviewed"])}
                    for rule, c in sorted(overturn.items())}
    return sla_out, overturn_out


def compute_report(log: EnforcementLog, since_ms: int, until_ms: int,
                   bank_trust: Mapping[str, str] | None = None, as_of_ms: int | None = None) -> TransparencyReport:
    """The figures for ``[since_ms, until_ms)``; ``bank_trust`` names each bank's trust
    (authority, internal, partner) as the policy does (unknown banks are partner).
    ``as_of_ms``: how far the records reach (when they were read, or the newest record of
    a recording); an unanswered escalation is missed only when its deadline passed before
    that and before ``until_ms``, open otherwise."""
    trust = bank_trust or {}
    horizon_ms = until_ms if as_of_ms is None else min(until_ms, as_of_ms)

    def within(ms: int) -> bool:
        return since_ms <= ms < until_ms

    decisions = sorted((d for d in log.decisions.values() if within(d["decided_at_ms"])),
                       key=lambda d: (d["decided_at_ms"], d["decision_id"]))
    categories = _stream_categories(log, until_ms)
    by_type = Counter({a: 0 for a in ACTION_TYPES})
    by_type_category: dict[str, Counter[str]] = {a: Counter() for a in ACTION_TYPES}
    sources = Counter({s: 0 for s in DETECTION_SOURCES})
    automation = Counter({"automated": 0, "human": 0})
    delays: dict[str, list[int]] = defaultdict(list)
    first_evidence = _first_evidence(list(log.decisions.values()))
    for decision in decisions:
        action = decision["action"]
        by_type[action] += 1
        by_type_category.setdefault(action, Counter())[_category(decision, categories)] += 1
        automation["human" if is_human(decision) else "automated"] += 1
        if action == "reinstate":
            continue  # an appeal's outcome: neither a detection nor a time to act on evidence
        sources[detection_source(decision, trust)] += 1
        first = first_evidence[decision["decision_id"]]
        if first is not None:
            delays[action].append(decision["decided_at_ms"] - first)
            delays["all"].append(decision["decided_at_ms"] - first)
    timing = {a: {"count": len(delays[a]), "median": nearest_rank(delays[a], 0.5), "p95": nearest_rank(delays[a], 0.95)}
              for a in ("all", *(t for t in ACTION_TYPES if t != "reinstate"))}

    reports = [r for r in log.reports.values() if within(r["times"]["reported"]["ms"])]
    report_ids = {r["report_id"] for r in reports}
    preserved = [p for p in log.preservation.values() if p["report_id"] in report_ids]
    sla, overturn = _review([d for d in decisions if d["action"] == "escalate"], log, until_ms, horizon_ms)

    appeals = [a for a in log.appeals.values() if within(a["submitted_at_ms"])]
    reversals = by_type["reinstate"]
    dead = [d for d in log.dead_letters.values() if within(d["dead_lettered_at_ms"])]
    return TransparencyReport(
        period={"since_ms": since_ms, "until_ms": until_ms, "since_utc": utc_text(since_ms),
                "until_utc": utc_text(until_ms), "as_of_ms": horizon_ms, "as_of_utc": utc_text(horizon_ms),
                "clock": CLOCK},
        actions={"total": len(decisions), "by_type": dict(by_type),
                 "by_type_and_category": {a: dict(sorted(c.items())) for a, c in by_type_category.items()}},
        detection_sources=dict(sources),
        automation=dict(automation),
        time_to_action_ms=timing,
        authority_reports={"filed": len(reports),
                           "by_trigger": dict(sorted(Counter(str(r.get("trigger")) for r in reports).items())),
                           "by_incident_type": dict(sorted(Counter(str(r.get("incident_type"))
                                                                   for r in reports).items())),
                           "preservation_requests": len(preserved)},
        review_sla=sla,
        reviewer_overturn=overturn,
        appeals={"received": len(appeals), "reversals": reversals, "reversal_rate": _rate(reversals, len(appeals))},
        dead_letters={"total": len(dead), "by_reason": dict(sorted(Counter(d["reason"] for d in dead).items()))},
        records={"read": dict(sorted(log.read.items())), "unreadable": dict(sorted(log.unreadable.items()))},
    )
