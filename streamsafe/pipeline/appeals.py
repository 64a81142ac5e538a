"""Appeals (DSA Art. 20 internal complaint handling): a broadcaster's appeal against a block
or restriction becomes a review item; a reviewer's verdict upholds or reverses it; a reversal
reinstates the stream. Pure: (policy, state, incident, input) -> Outcome.

* An appeal is an escalation with rule ``appeal`` at the policy's ``appeals.priority`` (default
  P2, deadline ``review_sla`` of it), naming the appeal and the appealed decision. A missed
  deadline raises it like any escalation (without restricting the stream: it is appealed).
* Nothing is ever reinstated without a reviewer: only ``reversed`` (or ``benign``) on the appeal's
  own review item reverses; a verdict on the stream as a whole never does. A block whose evidence
  came from an authority bank says so in its review item, for the reviewer to weigh.
* Re-delivery: an appeal id seen before creates nothing new (the same record again, after a
  crash, re-sends its byte-identical review item); a second appeal of a decision under review
  or already reversed joins it. A reversed verdict seen again re-sends the same reinstatement.
* An appeal naming a decision the incident does not hold (the stream's incident was released
  after it ended, or the id is wrong) is still escalated: a person looks it up, because a
  complaint must be answered (DSA Art. 20) and a dead letter would answer nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from streamsafe.events.models import Appeal
from streamsafe.events.values import Priority
from streamsafe.pipeline.outcome import Outcome
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import REINSTATE, Action, Policy
from streamsafe.review.incident import APPEAL_RULE, AppealItem, Escalation, Incident, Verdict
from streamsafe.review.reports import utc
from streamsafe.scoring.evidence import Evidence
from streamsafe.scoring.state import StreamState

__all__ = ["REVERSED_RULE", "answer_appeal", "open_appeal", "raise_appeal"]

REVERSED_RULE = "appeal-reversed"
APPEALABLE = ("block", "restrict")
_ANSWERS = {"reversed": "reversed", "benign": "reversed", "upheld": "upheld", "confirmed": "upheld"}


def authority_banks(policy: Policy, entry: Mapping[str, Any] | None) -> list[str]:
    """The authority banks a logged decision's hash evidence came from."""
    return [b for b in (entry or {}).get("b", ()) if policy.trust_of(b) == "authority"]


def _reasons(policy: Policy, appeal_id: str, decision_id: str, entry: Mapping[str, Any] | None) -> tuple[str, ...]:
    if entry is None:
        return (f"appeal {appeal_id} against {decision_id}, which is not in this stream's incident (released "
                "after the stream ended, or not a StreamSafe decision): look it up on enforcement.actions "
                "before answering; reversed reinstates it",)
    what = f"appeal {appeal_id} against {entry['action']} {decision_id} (rule '{entry.get('rule')}', " \
           f"policy {entry.get('pv')})"
    if entry["action"] not in APPEALABLE:
        return (what, f"a {entry['action']} decision is not a block or restriction: there is nothing to "
                      "reinstate; answer upheld")
    banks = authority_banks(policy, entry)
    if not banks:
        return (what,)
    return (what, f"the {entry['action']} came from a match in the authority bank(s) {', '.join(banks)}: it is "
                  "never reinstated automatically; reverse it only if you find the match itself wrong, and tell "
                  "the bank's owner")


def _review_item(policy: Policy, stream_id: str, appeal_id: str, decision_id: str,
                 entry: Mapping[str, Any] | None, *, priority: str, at_ms: int, event_ts_ms: int,
                 extra: tuple[tuple[str, Any], ...] = (), reasons: tuple[str, ...] = ()) -> Decision:
    banks = authority_banks(policy, entry)
    evidence = Evidence("review", event_ts_ms, (("appeal_id", appeal_id), ("appealed_decision_id", decision_id),
                                                ("authority_banks", tuple(banks) or None), *extra))
    return Decision.create(stream_id, Action("escalate", priority=priority),
                           (*reasons, *_reasons(policy, appeal_id, decision_id, entry)), (evidence,), policy.version,
                           decided_at_ms=at_ms, event_ts_ms=event_ts_ms, rule=APPEAL_RULE,
                           review_sla_s=policy.review_sla_s.get(priority), appeal_id=appeal_id,
                           appealed_decision_id=decision_id)


def open_appeal(policy: Policy, state: StreamState | None, incident: Incident, appeal: Appeal,
                record_ts_ms: int, partition: int) -> Outcome:
    """An appeal arrived: its review item, unless the appeal (or one of the same decision) is known."""
    entry = incident.logged(appeal.decision_id)

    def item_at(at_ms: int) -> Decision:
        return _review_item(policy, appeal.stream_id, appeal.appeal_id, appeal.decision_id, entry,
                            priority=policy.appeal_priority, at_ms=at_ms, event_ts_ms=appeal.submitted_at_ms)

    known = incident.appeal(appeal.appeal_id)
    if known is not None:
        if known.status == "open" and known.received_ms == record_ts_ms:  # the same record, re-delivered
            again = item_at(record_ts_ms)
            if again.decision_id == known.escalation_id:
                return Outcome(decisions=(again,), review="duplicate_appeal")
        return Outcome(review="duplicate_appeal")
    joined = next((a for a in incident.appeals if a.decision_id == appeal.decision_id
                   and a.status in ("open", "reversed")), None)
    if joined is not None:  # the decision is under review, or already reversed: the answer is the same
        merged = AppealItem(appeal.appeal_id, appeal.decision_id, joined.escalation_id, record_ts_ms, "merged")
        return Outcome(incident=incident.with_appeal(merged), review="appeal_merged")
    item = item_at(record_ts_ms)
    incident = incident.with_decisions([item], partition).with_appeal(
        AppealItem(appeal.appeal_id, appeal.decision_id, item.decision_id, record_ts_ms))
    # a stream whose state was released gets a fresh one, so that it is released again in time
    written = replace(StreamState(), partition=partition) if state is None else None
    return Outcome(state=written, incident=incident, decisions=(item,), review="appeal_opened")


def _reinstatement(policy: Policy, stream_id: str, item: AppealItem, entry: Mapping[str, Any] | None,
                   verdict: Verdict, record_ts_ms: int) -> Decision:
    action = (entry or {}).get("action", "decision")
    lifted = tuple((entry or {}).get("x", ())) if action == "restrict" else ()
    evidence = Evidence("review", verdict.ts_ms, (("verdict", "reversed"), ("escalation_id", item.escalation_id),
                                                  ("appeal_id", item.appeal_id)))
    return Decision.create(stream_id, Action(REINSTATE, restrictions=lifted),
                           (f"reviewer {verdict.reviewer_id} reversed {action} {item.decision_id} on appeal "
                            f"{item.appeal_id}",), (evidence,), policy.version, decided_at_ms=record_ts_ms,
                           event_ts_ms=verdict.ts_ms, rule=REVERSED_RULE, appeal_id=item.appeal_id,
                           reverses=item.decision_id)


def answer_appeal(policy: Policy, state: StreamState, incident: Incident, stream_id: str, verdict: Verdict,
                  item: AppealItem | None, record_ts_ms: int) -> Outcome:
    """A reviewer's verdict on an appeal's review item: upheld, or reversed (reinstate)."""
    incident = incident.with_verdict(verdict)
    answer = _ANSWERS.get(verdict.verdict)
    if item is None:  # upheld/reversed on something that is not an appeal's review item
        return Outcome(incident=incident, review="not_an_appeal")
    if answer is None:  # needs_more_context: the deadline stands
        return Outcome(incident=incident, review=verdict.verdict)
    entry = incident.logged(item.decision_id)
    if item.status != "open":
        if item.status == "reversed" and answer == "reversed" and item.reinstate_id:
            again = _reinstatement(policy, stream_id, item, entry, verdict, record_ts_ms)
            if again.decision_id == item.reinstate_id:  # the same verdict record, re-delivered
                return Outcome(decisions=(again,), review="already_closed")
        return Outcome(incident=incident, review="already_closed")
    if answer == "upheld":
        incident = incident.close("upheld", item.escalation_id).with_appeal(replace(item, status="upheld"))
        return Outcome(incident=incident, review="upheld")
    if entry is not None and entry["action"] not in APPEALABLE:
        incident = incident.close("reversed", item.escalation_id).with_appeal(replace(item, status="reversed"))
        return Outcome(incident=incident, review="nothing_to_reinstate")
    reinstate = _reinstatement(policy, stream_id, item, entry, verdict, record_ts_ms)
    state = state.with_emitted(f"{REINSTATE}:{item.decision_id}", reinstate.decision_id)
    incident = (incident.close("reversed", item.escalation_id)
                .with_decisions([reinstate], incident.partition)
                .with_appeal(replace(item, status="reversed", reinstate_id=reinstate.decision_id)))
    return Outcome(state, incident, decisions=(reinstate,), review="reversed")


def raise_appeal(policy: Policy, incident: Incident, stream_id: str, escalation: Escalation) -> Outcome:
    """An appeal's review item missed its deadline: raised to the next priority, still the
    appeal's (a stream under appeal is not restricted for it)."""
    item = incident.appeal_under_review(escalation.decision_id)
    if item is None or escalation.due_ms is None:
        return Outcome(review="not_due")
    due = escalation.due_ms
    priority = Priority(escalation.priority).raised.value
    missed = f"{escalation.priority} appeal review {escalation.decision_id} was not done by {utc(due)['utc']}"
    raised = _review_item(policy, stream_id, item.appeal_id, item.decision_id, incident.logged(item.decision_id),
                          priority=priority, at_ms=due, event_ts_ms=due, reasons=(missed,),
                          extra=(("escalation_id", escalation.decision_id), ("missed_priority", escalation.priority)))
    incident = (incident.close("breached", escalation.decision_id).with_decisions([raised], incident.partition)
                .with_appeal(replace(item, escalation_id=raised.decision_id)))
    return Outcome(incident=incident, decisions=(raised,), review="sla_breach", sla_breach=escalation.priority)
