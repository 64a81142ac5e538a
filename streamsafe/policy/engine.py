"""Evaluate a policy on a stream's state and turn the rules that hold into decisions.

Pure: (policy, state, time) -> (new state, decisions). The state records what each
policy emitted, which gives the promises enforcement relies on:

* at most one ``block`` and one ``report`` per stream;
* an escalation again only when its priority rises;
* a restriction once (restrictions and blocks are never undone automatically);
* a blocked stream is escalated only by a rule that blocks it (its confirm-the-block
  review task): another rule's escalation would put a duplicate item in the queue;
* re-processing the input that produced a decision re-emits the identical
  decision (same id), so a crash between the state write and the send loses nothing;
* a decision is judged at its trigger's event time, or at the newest evidence it cites
  if that is later (evidence that arrived out of order): ``event_ts_ms`` is never
  earlier than any evidence in the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamsafe.events.values import EvidenceRef
from streamsafe.policy.decisions import Decision
from streamsafe.policy.features import feature_named, trusted
from streamsafe.policy.model import Action, Policy, Rule
from streamsafe.scoring.evidence import Evidence
from streamsafe.scoring.fusion import RiskAssessment
from streamsafe.scoring.state import StreamState

__all__ = ["Evaluation", "decide", "evaluate_rules"]

_OPS = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Which rules hold at ``at_ms``, with the risk they were judged on."""

    assessment: RiskAssessment
    fired: tuple[tuple[Rule, tuple[str, ...]], ...]  # (rule, the conditions as observed)


def evaluate_rules(policy: Policy, state: StreamState, at_ms: int) -> Evaluation:
    assessment = state.assess(policy.fusion, at_ms)
    fired = []
    for rule in policy.rules:
        observed = []
        for predicate in rule.predicates:
            feature = feature_named(predicate.feature)
            value = None if feature is None else feature.read(policy, state, predicate, at_ms, assessment)
            if value is None or not _OPS[predicate.op](value, predicate.value):
                break
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            observed.append(f"{predicate.feature} {shown} {predicate.op} {predicate.value}")
        else:
            fired.append((rule, tuple(observed)))
    return Evaluation(assessment, tuple(fired))


def _evidence(policy: Policy, state: StreamState, rule: Rule, at_ms: int) -> tuple[Evidence, ...]:
    items: list[Evidence] = []
    for predicate in rule.predicates:
        name = predicate.feature
        if name in ("strong_matches", "weak_match_frames"):
            refs = state.strong_matches if name == "strong_matches" else state.weak_matches
            for m in refs:
                if trusted(policy, m, predicate):
                    items.append(Evidence("hash_match", m.ts_ms, (
                        ("signal_type", m.signal_type), ("bank", m.bank), ("entry_id", m.entry_id),
                        ("distance", m.distance), ("frame_seq", m.frame_seq), ("transform", m.transform))))
        elif name.startswith("score.") and (slot := state.scores.get(name[6:])) is not None:
            detail: list[tuple[str, Any]] = [("classifier", name[6:]), ("score", slot.score)]
            ref = EvidenceRef.parse(slot.ref)
            if ref is not None:
                detail.extend(ref.fields().items())
            items.append(Evidence("classifier", slot.ts_ms, tuple(detail)))
        elif name == "reports.distinct" and state.reporters:
            count = state.distinct_reporters(at_ms - int((predicate.window_s or 600.0) * 1000))
            items.append(Evidence("user_report", max(ts for _, ts in state.reporters),
                                  (("count", count),)))
        elif name.startswith("context."):
            items.append(Evidence("context", state.context_ms or at_ms, (
                ("visibility", state.visibility), ("account_age_days", state.account_age_days),
                ("age_verified", state.age_verified))))
    if not items:  # risk-only rules: the explanation's contributions are the evidence
        items.append(Evidence("risk", at_ms, (("log_odds", round(state.assess(policy.fusion, at_ms)
                                                                 .log_odds, 4)),)))
    unique = {e: None for e in items}
    return tuple(unique)


def _key(action: Action) -> list[str]:
    if action.kind == "escalate":
        return [f"escalate:{action.priority}"]
    if action.kind == "restrict":
        return [f"restrict:{r}" for r in action.restrictions]
    return [action.kind]


def _not_higher(state: StreamState, action: Action, shadow: str | None, at_ms: int) -> bool:
    """An escalation is raised again only when its priority rises, and not while a
    reviewer's benign verdict is cooling down (unless its priority is higher)."""
    if action.kind != "escalate":
        return False
    priority = action.priority or "P3"
    return state.escalated_at_or_above(priority, shadow) or state.cooling_down(priority, at_ms)


def decide(
    policy: Policy,
    state: StreamState,
    stream_id: str,
    at_ms: int,
    record_ts_ms: int,
    shadow: bool = False,
) -> tuple[StreamState, tuple[Decision, ...]]:
    """Decisions the policy makes now that were not made before, and the state that
    remembers them. ``shadow`` keeps the bookkeeping apart from the live policy's."""
    evaluation = evaluate_rules(policy, state, at_ms)
    if not evaluation.fired:
        return state, ()
    # A decision is never earlier than the evidence it cites: evidence that arrived out of
    # order (a signal, the newest stream context) moves the judgement to its own time.
    newest = max(e.ts_ms for rule, _ in evaluation.fired for e in _evidence(policy, state, rule, at_ms))
    if newest > at_ms:
        at_ms = newest
        evaluation = evaluate_rules(policy, state, at_ms)
        if not evaluation.fired:
            return state, ()
    shadow_name = policy.version if shadow else None
    emitted = state.emitted_for(shadow_name)
    explanation = evaluation.assessment.explanation()
    decisions: list[Decision] = []
    claimed: set[str] = set()
    blocked = "block" in emitted or any(a.kind == "block" for rule, _ in evaluation.fired for a in rule.actions)
    for rule, observed in evaluation.fired:
        reasons = (f"rule {rule.name!r}: " + "; ".join(observed),)
        evidence = _evidence(policy, state, rule, at_ms)

        def make(action: Action, rule: Rule = rule, reasons: tuple[str, ...] = reasons,
                 evidence: tuple[Evidence, ...] = evidence) -> Decision:
            return Decision.create(
                stream_id, action, reasons, evidence, policy.version, decided_at_ms=record_ts_ms,
                event_ts_ms=at_ms, rule=rule.name, explanation=explanation,
                review_sla_s=policy.review_sla_s.get(action.priority or ""), shadow=shadow,
            )

        blocks = any(a.kind == "block" for a in rule.actions)
        for action in rule.actions:
            if action.kind == "monitor" or (action.kind == "escalate" and blocked and not blocks):
                continue
            keys = _key(action)
            if action.kind == "restrict":
                fresh = [k for k in keys if k not in emitted and k not in claimed]
                if not fresh:
                    # nothing new to restrict; re-emit this rule's earlier restriction if this
                    # is the input that produced it (its id comes out the same again)
                    for decision_id in sorted({emitted[k] for k in keys if k in emitted}):
                        subset = [k for k in keys if emitted.get(k) == decision_id]
                        again = make(Action("restrict", restrictions=tuple(k[9:] for k in subset)))
                        if again.decision_id == decision_id:
                            decisions.append(again)
                    claimed.update(keys)
                    continue
                action = Action("restrict", restrictions=tuple(k[9:] for k in fresh))
                keys = fresh
            if any(k in claimed for k in keys):
                continue
            decision = make(action)
            previous = [emitted.get(k) for k in keys]
            if all(p == decision.decision_id for p in previous):
                decisions.append(decision)  # the same input again: the identical decision again
            elif any(p is not None for p in previous) or _not_higher(state, action, shadow_name, at_ms):
                continue
            else:
                decisions.append(decision)
                for k in keys:
                    state = state.with_emitted(k, decision.decision_id, shadow_name)
            claimed.update(keys)
    return state, tuple(decisions)
