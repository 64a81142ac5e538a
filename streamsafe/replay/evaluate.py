"""Score policies on a labelled scenario set.

Per policy: recall on harmful streams (blocked or escalated), false-block and
false-escalation rates on benign streams, agreement with each stream's expected
action, and time-to-action — from the first harmful event (the label's
``harm_start_ms``, else the stream's first event) to the decision's event time.

With account labels (``{"label": {"account_id", ...}}``), per policy also: recall on
harmful accounts and the false-action rate on benign ones, where an account is acted on
when a decision names it as its subject or cites it as account evidence (a repeat
broadcaster's new stream, a groomer's targets).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streamsafe.replay.recording import Recording

__all__ = ["AccountScore", "PolicyScore", "acted_on_accounts", "per_kind", "score_accounts", "score_policies"]

_STRENGTH = {"none": 0, "escalate": 1, "block": 2}


@dataclass(frozen=True, slots=True)
class PolicyScore:
    policy_version: str
    shadow: bool
    harmful_streams: int
    benign_streams: int
    recall_harmful: float
    false_block_rate: float
    false_escalation_rate: float
    expected_action_accuracy: float
    tta_p50_ms: float | None
    tta_p95_ms: float | None
    decisions: int

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


def score_policies(recording: Recording, decisions: Iterable[dict[str, Any]],
                   policy_versions: Sequence[str]) -> list[PolicyScore]:
    if not recording.labels:
        raise ValueError("the recording has no labels to score against")
    first_event: dict[str, int] = {}
    for event in recording.events:
        ts = event.event_ts_ms()
        if event.key is not None and ts is not None:
            first_event[event.key] = min(ts, first_event.get(event.key, ts))
    by_policy: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for decision in decisions:
        by_policy[decision["policy_version"]][decision["stream_id"]].append(decision)
    scores = []
    for index, version in enumerate(policy_versions):
        streams = by_policy.get(version, {})
        harmful = [label for label in recording.labels.values() if label.harmful]
        benign = [label for label in recording.labels.values() if not label.harmful]
        caught, ttas, agree = 0, [], 0
        false_blocks = false_escalations = 0
        for label in recording.labels.values():
            actions = {d["action"] for d in streams.get(label.stream_id, [])}
            strongest = "block" if "block" in actions else "escalate" if "escalate" in actions else "none"
            agree += strongest == label.expected_action
            if label.harmful:
                acting = [d for d in streams.get(label.stream_id, []) if d["action"] in ("block", "escalate")]
                if acting:
                    caught += 1
                    start = label.harm_start_ms or first_event.get(label.stream_id)
                    if start is not None:
                        ttas.append(max(0, min(d["event_ts_ms"] for d in acting) - start))
            else:
                false_blocks += "block" in actions
                false_escalations += "escalate" in actions
        scores.append(PolicyScore(
            policy_version=version,
            shadow=index > 0,
            harmful_streams=len(harmful),
            benign_streams=len(benign),
            recall_harmful=round(caught / len(harmful), 4) if harmful else 0.0,
            false_block_rate=round(false_blocks / len(benign), 4) if benign else 0.0,
            false_escalation_rate=round(false_escalations / len(benign), 4) if benign else 0.0,
            expected_action_accuracy=round(agree / len(recording.labels), 4),
            tta_p50_ms=_quantile(ttas, 50),
            tta_p95_ms=_quantile(ttas, 95),
            decisions=sum(len(v) for v in streams.values()),
        ))
    return scores


def per_kind(recording: Recording, decisions: Iterable[dict[str, Any]],
             version: str) -> dict[str, dict[str, int]]:
    """How each scenario kind fared under one policy: streams per strongest action."""
    strongest: dict[str, int] = defaultdict(int)
    for d in decisions:
        if d["policy_version"] == version:
            strongest[d["stream_id"]] = max(strongest[d["stream_id"]], _STRENGTH.get(d["action"], 0))
    names = {v: k for k, v in _STRENGTH.items()}
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for label in recording.labels.values():
        table[label.kind or "unlabelled"][names[strongest.get(label.stream_id, 0)]] += 1
    return {k: dict(v) for k, v in table.items()}


@dataclass(frozen=True, slots=True)
class AccountScore:
    policy_version: str
    harmful_accounts: int
    benign_accounts: int
    recall_accounts: float
    false_action_rate_accounts: float
    account_decisions: int  # decisions whose subject is an account

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def acted_on_accounts(decisions: Iterable[dict[str, Any]], version: str) -> set[str]:
    """Accounts a policy's block/restrict/escalate decisions name as subject or cite as account evidence."""
    acted: set[str] = set()
    for d in decisions:
        if d["policy_version"] != version or d["action"] not in ("block", "restrict", "escalate"):
            continue
        subject = d.get("subject") or {}
        if subject.get("type") == "account":
            acted.add(subject["id"])
        acted.update(e["account_id"] for e in d.get("evidence", ()) if e.get("kind") == "account" and "account_id" in e)
    return acted


def score_accounts(recording: Recording, decisions: Sequence[dict[str, Any]],
                   policy_versions: Sequence[str]) -> list[AccountScore]:
    harmful = [a for a in recording.account_labels.values() if a.harmful]
    benign = [a for a in recording.account_labels.values() if not a.harmful]
    scores = []
    for version in policy_versions:
        acted = acted_on_accounts(decisions, version)
        scores.append(AccountScore(
            policy_version=version, harmful_accounts=len(harmful), benign_accounts=len(benign),
            recall_accounts=round(sum(a.account_id in acted for a in harmful) / len(harmful), 4) if harmful else 0.0,
            false_action_rate_accounts=round(sum(a.account_id in acted for a in benign) / len(benign), 4)
            if benign else 0.0,
            account_decisions=sum(1 for d in decisions if d["policy_version"] == version
                                  and (d.get("subject") or {}).get("type") == "account"),
        ))
    return scores
