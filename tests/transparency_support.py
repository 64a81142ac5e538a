"""For the transparency report's tests: builders of enforcement records shaped as the
contract (and, for appeals and reinstatements, as agreed for ``review.appeals`` and the
``reinstate`` action), an independent count of the report's figures from raw records,
and the reading of figures back from the HTML page."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from typing import Any

import pytest

T0 = 1_764_324_000_000
MIN = 60_000


def _hex(*parts: object) -> str:
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()


def decision(stream: str, action: str, decided: int, evidence: list[dict[str, Any]], rule: str = "r",
             priority: str | None = None, due: int | None = None, **extra: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"schema_version": 1, "decision_id": f"dec-{_hex(stream, action, decided, rule, priority)}",
                             "stream_id": stream, "action": action, "reasons": [f"rule {rule!r}"],
                             "evidence": evidence, "policy_version": "default-2026.11.1", "rule": rule,
                             "event_ts_ms": max(e["ts_ms"] for e in evidence), "decided_at_ms": decided, **extra}
    if priority:
        value["priority"] = priority
    if due is not None:
        value["review_due_ms"] = due
    return value


def hash_ev(ts: int, bank: str = "ncmec") -> dict[str, Any]:
    return {"kind": "hash_match", "ts_ms": ts, "signal_type": "pdq", "bank": bank, "entry_id": f"{bank}:1",
            "distance": 2, "frame_seq": 1}


def classifier_ev(ts: int, name: str = "csam") -> dict[str, Any]:
    return {"kind": "classifier", "ts_ms": ts, "classifier": name, "score": 0.95}


def user_report_ev(ts: int) -> dict[str, Any]:
    return {"kind": "user_report", "ts_ms": ts, "count": 3}


def risk_ev(ts: int) -> dict[str, Any]:
    return {"kind": "risk", "ts_ms": ts, "log_odds": 2.5}


def review_ev(ts: int, category: str | None = "A2") -> dict[str, Any]:
    return {"kind": "review", "ts_ms": ts, "verdict": "confirmed", **({"category": category} if category else {})}


def verdict(stream: str, kind: str, ts: int, escalation_id: str | None = None, category: str | None = None
            ) -> dict[str, Any]:
    value: dict[str, Any] = {"schema_version": 1, "stream_id": stream, "verdict": kind, "reviewer_id": "rev-1",
                             "ts_ms": ts}
    if escalation_id:
        value["escalation_id"] = escalation_id
    if category:
        value["category"] = category
    return value


def _time(ms: int) -> dict[str, Any]:
    return {"ms": ms, "utc": "2025-11-28T10:00:00.000Z"}


def report(stream: str, reported: int, trigger: str = "policy", category: str | None = None) -> dict[str, Any]:
    rid = _hex("report", stream, reported)
    value: dict[str, Any] = {
        "schema_version": 1, "report_id": f"rep-{rid}", "stream_id": stream,
        "incident_type": "child_sexual_abuse_material", "trigger": trigger,
        "times": {"first_evidence": _time(reported - MIN), "last_evidence": _time(reported),
                  "reported": _time(reported)},
        "reported_account": {"broadcaster_id": None}, "stream": {}, "hash_matches": [], "classifier_evidence": [],
        "decisions": [], "verdicts": [], "preservation_id": f"pres-{rid}"}
    if category:
        value["category"] = category
    return value


def preservation(of_report: dict[str, Any]) -> dict[str, Any]:
    reported = of_report["times"]["reported"]["ms"]
    return {"schema_version": 1, "preservation_id": of_report["preservation_id"], "report_id": of_report["report_id"],
            "stream_id": of_report["stream_id"], "reason": "authority report", "from_ms": reported - 5 * MIN,
            "to_ms": reported + 5 * MIN, "frame_seqs": [], "chat_message_ids": [],
            "preserve_until_ms": reported + 365 * 86_400_000}


def appeal(appeal_id: str, stream: str, decision_id: str, submitted: int) -> dict[str, Any]:
    return {"schema_version": 1, "appeal_id": appeal_id, "stream_id": stream, "decision_id": decision_id,
            "appellant_id": "acct-1", "submitted_at_ms": submitted, "statement": "this was a cooking stream"}


def reinstate(stream: str, decided: int, appeal_id: str, reverses: str) -> dict[str, Any]:
    return decision(stream, "reinstate", decided, [{"kind": "review", "ts_ms": decided, "verdict": "benign"}],
                    rule="appeal-reversed", appeal_id=appeal_id, reverses=reverses)


def dead_letter(reason: str, at: int, offset: int, topic: str = "livestream.frame-hashes") -> dict[str, Any]:
    return {"schema_version": 1, "reason": reason, "detail": "x",
            "source": {"topic": topic, "partition": 0, "offset": offset, "timestamp_ms": at},
            "original_value_b64": "e30=", "dead_lettered_at_ms": at}


# -- an independent count, from raw (topic, value) records, of what the report must say ---------

AUTHORITY_BANKS = {"ncmec", "nca", "iwf", "demo-known", "known-csam"}
INTERNAL_BANKS = {"internal-confirmed"}


def _p(values: list[int], q: float) -> int | None:
    """Nearest rank, counted up from the bottom: the value at position ceil(q*n) (1-based)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = 1
    while rank < q * len(ordered):
        rank += 1
    return ordered[rank - 1]


def newest_record_ms(records: list[tuple[str, Any]]) -> int:
    """The latest record time of a recording (preservation requests have none)."""
    times = {"enforcement.actions": lambda v: v["decided_at_ms"],
             "enforcement.escalations": lambda v: v["decided_at_ms"],
             "enforcement.reports": lambda v: v["times"]["reported"]["ms"], "review.verdicts": lambda v: v["ts_ms"],
             "review.appeals": lambda v: v["submitted_at_ms"],
             "streamsafe.dead-letter": lambda v: v["dead_lettered_at_ms"]}
    return max(times[t](v) for t, v in records if t in times)


def expected_figures(records: list[tuple[str, Any]], since: int, until: int, as_of: int | None = None
                     ) -> dict[str, Any]:
    """The figures counted the long way round; the tests compare them with ``--json``.
    ``as_of``: how far the records reach (an unanswered escalation is missed only if due before it)."""
    horizon = until if as_of is None else min(until, as_of)
    seen: dict[str, dict[str, Any]] = {}
    for topic, value in records:
        if topic in ("enforcement.actions", "enforcement.escalations") and value["decision_id"] not in seen:
            seen[value["decision_id"]] = value
    all_decisions = list(seen.values())
    decisions = [d for d in all_decisions if since <= d["decided_at_ms"] < until]
    by_type = {a: sum(1 for d in decisions if d["action"] == a)
               for a in ("block", "restrict", "escalate", "report", "reinstate")}

    sources = dict.fromkeys(("authority_hash", "internal_hash", "partner_hash", "classifier", "user_report",
                             "reviewer", "fused_risk"), 0)
    human = 0
    for d in decisions:
        ev = d["evidence"]
        banks = [e["bank"] for e in ev if e["kind"] == "hash_match"]
        verdicts_cited = [e for e in ev if e["kind"] == "review" and "verdict" in e]
        if d["action"] == "reinstate" or verdicts_cited:
            human += 1
        if d["action"] == "reinstate":
            continue
        if any(b in AUTHORITY_BANKS for b in banks):
            sources["authority_hash"] += 1
        elif any(b in INTERNAL_BANKS for b in banks):
            sources["internal_hash"] += 1
        elif banks:
            sources["partner_hash"] += 1
        elif any(e["kind"] == "classifier" for e in ev):
            sources["classifier"] += 1
        elif any(e["kind"] == "user_report" for e in ev):
            sources["user_report"] += 1
        elif verdicts_cited:
            sources["reviewer"] += 1
        else:
            sources["fused_risk"] += 1

    delays: dict[str, list[int]] = defaultdict(list)
    for d in decisions:
        if d["action"] == "reinstate":
            continue
        earlier = [e["ts_ms"] for other in all_decisions if other["stream_id"] == d["stream_id"]
                   and (other["decided_at_ms"], other["decision_id"]) <= (d["decided_at_ms"], d["decision_id"])
                   for e in other["evidence"]]
        delays[d["action"]].append(d["decided_at_ms"] - min(earlier))
        delays["all"].append(d["decided_at_ms"] - min(earlier))

    reports = {v["report_id"]: v for t, v in records if t == "enforcement.reports"
               and since <= v["times"]["reported"]["ms"] < until}
    preserved = {v["preservation_id"] for t, v in records if t == "enforcement.preservation"
                 and v["report_id"] in reports}

    verdicts = sorted((v for t, v in records if t == "review.verdicts"), key=lambda v: v["ts_ms"])
    sla = {p: {"escalations": 0, "met": 0, "missed": 0, "open": 0} for p in ("P0", "P1", "P2", "P3")}
    overturn: dict[str, dict[str, int]] = {}
    for esc in (d for d in decisions if d["action"] == "escalate"):
        settled = None
        for v in verdicts:
            if v["stream_id"] != esc["stream_id"] or v["ts_ms"] < esc["decided_at_ms"] or v["ts_ms"] >= until:
                continue
            if v["verdict"] == "confirmed" or (v["verdict"] == "benign"
                                               and v.get("escalation_id") in (None, esc["decision_id"])):
                settled = v
                break
        row = sla[esc["priority"]]
        row["escalations"] += 1
        due = esc.get("review_due_ms")
        if settled and (due is None or settled["ts_ms"] <= due):
            row["met"] += 1
        elif settled or (due is not None and due < horizon):
            row["missed"] += 1
        else:
            row["open"] += 1
        if settled:
            rule = overturn.setdefault(esc["rule"], {"reviewed": 0, "benign": 0})
            rule["reviewed"] += 1
            rule["benign"] += settled["verdict"] == "benign"

    appeals = {v["appeal_id"] for t, v in records if t == "review.appeals" and since <= v["submitted_at_ms"] < until}
    dead: dict[tuple[Any, ...], str] = {}
    for t, v in records:
        if t == "streamsafe.dead-letter" and since <= v["dead_lettered_at_ms"] < until:
            s = v["source"]
            dead[(s["topic"], s["partition"], s["offset"], v["reason"])] = v["reason"]
    reasons: dict[str, int] = defaultdict(int)
    for reason in dead.values():
        reasons[reason] += 1
    return {
        "actions_total": len(decisions), "by_type": by_type, "sources": sources,
        "automation": {"automated": len(decisions) - human, "human": human},
        "time": {a: {"count": len(v), "median": _p(v, 0.5), "p95": _p(v, 0.95)} for a, v in delays.items()},
        "reports_filed": len(reports), "preservation": len(preserved),
        "sla": sla, "overturn": overturn, "appeals": len(appeals), "reversals": by_type["reinstate"],
        "dead": dict(reasons), "dead_total": len(dead),
    }


def assert_report_matches(report: dict[str, Any], expected: dict[str, Any]) -> None:
    assert report["actions"]["total"] == expected["actions_total"]
    assert report["actions"]["by_type"] == expected["by_type"]
    assert report["detection_sources"] == expected["sources"]
    assert report["automation"] == expected["automation"]
    for action, figures in report["time_to_action_ms"].items():
        assert figures == expected["time"].get(action, {"count": 0, "median": None, "p95": None}), action
    assert report["authority_reports"]["filed"] == expected["reports_filed"]
    assert report["authority_reports"]["preservation_requests"] == expected["preservation"]
    for priority, counts in expected["sla"].items():
        assert {k: report["review_sla"][priority][k] for k in counts} == counts, priority
    assert {rule: {k: o[k] for k in ("reviewed", "benign")} for rule, o in report["reviewer_overturn"].items()} \
        == expected["overturn"]
    assert report["appeals"]["received"] == expected["appeals"]
    assert report["appeals"]["reversals"] == expected["reversals"]
    assert report["dead_letters"]["by_reason"] == expected["dead"]
    assert report["dead_letters"]["total"] == expected["dead_total"]


# -- the page -------------------------------------------------------------------------------------

def parse_figure(text: str) -> Any:
    """A figure as the page shows it, back to its JSON value."""
    text = text.strip()
    if text == "n/a":
        return None
    if text.endswith("%"):
        return round(float(text[:-1]) / 100, 4)
    if text.endswith(" s"):
        return round(float(text[:-2]) * 1000)
    return int(text)


def chromium_or_skip() -> str:
    """The Chromium to render with; a test without it skips, except in CI, where it fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + ", and CI=true")
    pytest.skip(message)
    raise AssertionError("unreachable")
