"""What verdicts and missed review deadlines do to a stream (the human review loop). Pure:
(policy, state, incident, input) -> :class:`~streamsafe.pipeline.outcome.Outcome`, with
deterministic decision and report ids.

* ``confirmed`` on an escalation naming a grooming viewer (the account's escalation, or a
  targeted stream's): the viewer is reported with the streams involved; the stream is not
  blocked (its broadcaster is the likely victim).
* ``confirmed``: block (if not already), a report with its preservation request (one
  per incident), and the matched frames' hashes proposed to the internal-confirmed bank
  (the report and the banks whose frames are proposed as the policy's ``verdicts`` allow).
  Only a signed verdict naming an open escalation gets here (:mod:`streamsafe.agents.verdicts`).
* ``benign``: the stream's open escalations close, re-escalation at that priority or
  below is held off for a cooldown, and the classifier that drove the escalation is
  charged with a false positive.
* ``needs_more_context``: recorded; the escalation stays open with its deadline.
* A missed deadline re-escalates at the next priority; a missed P0 also restricts
  the stream (configurable).
* Verdicts on an appeal's review item (``upheld``, ``reversed``) are answered in
  :mod:`.appeals`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.models import BankEntry
from streamsafe.events.values import Priority
from streamsafe.pipeline.appeals import answer_appeal, raise_appeal
from streamsafe.pipeline.outcome import Outcome
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import REINSTATE, Action, Policy
from streamsafe.review.incident import APPEAL_RULE, Escalation, Incident, Verdict
from streamsafe.review.reports import PreservationRequest, ReportPacket, build_report, build_viewer_report, utc
from streamsafe.scoring.evidence import Evidence
from streamsafe.scoring.state import StreamState

__all__ = ["ReviewConfig", "apply_verdict", "miss_deadline", "report_if_due", "revise_report"]

CONFIRMED_BANK = "internal-confirmed"


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    benign_cooldown_s: float = 1800.0
    p0_breach_restrictions: tuple[str, ...] = ("chat", "discovery", "gifting", "new_viewers")
    preserve_days: int = 365


def _frame_evidence(incident: Incident) -> list[Evidence]:
    return [Evidence("hash_match", f.ts_ms, (("signal_type", f.signal_type), ("bank", f.bank),
                                              ("entry_id", f.entry_id), ("distance", f.distance),
                                              ("frame_seq", f.frame_seq), ("transform", f.transform)))
            for f in incident.frames]


def _emit(state: StreamState, decision: Decision, key: str) -> StreamState:
    return state.with_emitted(key, decision.decision_id)


def report_if_due(stream_id: str, state: StreamState, incident: Incident, *, trigger: str,
                  category: str | None, at_ms: int, config: ReviewConfig
                  ) -> tuple[Incident, tuple[tuple[ReportPacket, PreservationRequest], ...]]:
    """The incident's one report (and its preservation request), unless it was already made."""
    if incident.report_id is not None:
        return incident, ()
    report, preservation = build_report(stream_id, incident, state, trigger=trigger, category=category,
                                        reported_at_ms=at_ms, preserve_days=config.preserve_days)
    return (replace(incident, report_id=report.report_id, reported_at_ms=at_ms, report_trigger=trigger,
                    report_category=category), ((report, preservation),))


def revise_report(stream_id: str, state: StreamState, incident: Incident, config: ReviewConfig,
                  ) -> tuple[ReportPacket, PreservationRequest] | None:
    """The incident's report sent again, completed, now that the stream's broadcaster is known.

    Frames and metadata are read independently, so a known frame may be reported before the
    record naming the broadcaster is read; a packet naming no one is of little use to an
    authority. The same report (id, trigger, category, time reported) goes again with what is
    known now, as ``revision`` 2, with its preservation request; the reporting service keeps
    a report's highest revision (``streamsafe reports export`` does). Called when the state
    first names the broadcaster, so a re-delivered record sends the same packet again, never
    a third revision. None: no report, or one stored before its trigger was kept."""
    if incident.report_id is None or incident.reported_at_ms is None or incident.report_trigger is None:
        return None
    return build_report(stream_id, incident, state, trigger=incident.report_trigger,
                        category=incident.report_category, reported_at_ms=incident.reported_at_ms,
                        preserve_days=config.preserve_days, report_id=incident.report_id, completed=True)


def apply_verdict(policy: Policy, state: StreamState, incident: Incident, stream_id: str, verdict: Verdict,
                  record_ts_ms: int, config: ReviewConfig, propose_hashes: bool = True) -> Outcome:
    appeal = incident.appeal_under_review(verdict.escalation_id) if verdict.escalation_id else None
    if appeal is not None or verdict.verdict in ("upheld", "reversed"):
        return answer_appeal(policy, state, incident, stream_id, verdict, appeal, record_ts_ms)
    target = incident.escalation(verdict.escalation_id) if verdict.escalation_id else None
    if verdict.escalation_id and target is None:
        outcome = "unknown_escalation"
    elif target is not None and target.status != "open":
        outcome = "already_closed"
    else:
        outcome = verdict.verdict
    incident = incident.with_verdict(verdict)
    viewer = incident.viewer_named(target.decision_id) if target is not None else None
    if viewer is not None and verdict.verdict == "confirmed":
        return _viewer_confirmed(policy, state, incident, stream_id, verdict, viewer, outcome, config)
    if verdict.verdict == "benign":
        if outcome in ("unknown_escalation", "already_closed"):
            return Outcome(state, incident, review=outcome)
        closing = [target] if target else incident.open_escalations()
        top = Priority.highest(e.priority for e in closing)
        incident = incident.close("benign", target.decision_id if target else None)
        if viewer is None:  # a viewer's pattern says nothing about this stream's own risk: no cooldown
            state = state.benign_cooldown(verdict.ts_ms + int(config.benign_cooldown_s * 1000), top)
        blamed = closing[0].top_signal if closing else None
        return Outcome(state, incident, review=outcome, false_positive=_classifier_of(blamed))
    if verdict.verdict == "needs_more_context":
        return Outcome(state, incident, review=outcome)
    # confirmed: act even on an unknown or closed escalation; a person has seen abuse
    incident = incident.close("confirmed")
    decisions: list[Decision] = []
    reason = f"reviewer {verdict.reviewer_id} confirmed ({verdict.category or 'uncategorised'})"
    evidence = (Evidence("review", verdict.ts_ms, (("verdict", "confirmed"), ("category", verdict.category),
                                                   ("escalation_id", verdict.escalation_id))),
                *_frame_evidence(incident))
    block = Decision.create(stream_id, Action("block"), (reason,), tuple(evidence), policy.version,
                            decided_at_ms=record_ts_ms, event_ts_ms=verdict.ts_ms, rule="reviewer-confirmed")
    # a block reversed on appeal (reinstated) no longer stands: a reviewer who now confirms blocks again
    standing = state.emitted.get("block")
    if standing is not None and f"{REINSTATE}:{standing}" in state.emitted:
        standing = None
    if standing is None or standing == block.decision_id:
        if standing is None:
            state = _emit(state, block, "block")
        decisions.append(block)
    incident = incident.with_decisions(decisions, incident.partition)
    effects = policy.verdict_effects  # what a confirmed verdict may set off beyond the block
    reports: tuple[tuple[ReportPacket, PreservationRequest], ...] = ()
    if effects.report:
        incident, reports = report_if_due(stream_id, state, incident, trigger="reviewer",
                                          category=verdict.category, at_ms=verdict.ts_ms, config=config)
    proposals = tuple(
        BankEntry(entry_id_for(CONFIRMED_BANK, f.signal_type, f.frame_hash), CONFIRMED_BANK, f.signal_type,
                  f.frame_hash, f"confirmed {verdict.category or ''} {incident.report_id or ''}".strip())
        for f in incident.frames if f.frame_hash and f.bank != CONFIRMED_BANK
        and policy.trust_of(f.bank) in effects.bank_from
    ) if propose_hashes else ()
    return Outcome(state, incident, decisions=tuple(decisions), reports=reports,
                   proposals=tuple({p.entry_id: p for p in proposals}.values()), review=outcome)


def _viewer_confirmed(policy: Policy, state: StreamState, incident: Incident, stream_id: str, verdict: Verdict,
                      viewer: str, outcome: str, config: ReviewConfig) -> Outcome:
    """A reviewer confirmed a viewer's grooming (the account escalation, or a targeted stream's escalation
    naming the viewer): the viewer is reported, with the streams involved, and their activity preserved.
    The stream is not blocked: its broadcaster is the likely victim. The viewer's escalations here close."""
    for e in incident.open_escalations():
        if incident.viewer_named(e.decision_id) == viewer:
            incident = incident.close("confirmed", e.decision_id)
    reports: tuple[tuple[ReportPacket, PreservationRequest], ...] = ()
    if policy.verdict_effects.report:
        entry = incident.logged(verdict.escalation_id or "") or {}
        reports = (build_viewer_report(stream_id, incident, state, viewer, tuple(entry.get("streams", ())),
                                       category=verdict.category, reported_at_ms=verdict.ts_ms,
                                       preserve_days=config.preserve_days),)
    return Outcome(state, incident, reports=reports, review=outcome)


def miss_deadline(policy: Policy, state: StreamState, incident: Incident, stream_id: str,
                  escalation: Escalation, config: ReviewConfig) -> Outcome:
    """An escalation was not reviewed by its deadline: escalate to the next priority
    (a missed P0 is raised again and restricts the stream). Decided at the deadline,
    so a repeated tick yields the same decisions."""
    if escalation.status != "open" or escalation.due_ms is None:
        return Outcome(review="not_due")
    if escalation.rule == APPEAL_RULE:
        return raise_appeal(policy, incident, stream_id, escalation)
    due = escalation.due_ms
    priority = Priority(escalation.priority).raised.value
    reason = (f"{escalation.priority} escalation {escalation.decision_id} was not reviewed by "
              f"{utc(due)['utc']}")
    evidence: tuple[Evidence, ...] = (Evidence("review", due, (("escalation_id", escalation.decision_id),
                                                               ("missed_priority", escalation.priority))),)
    viewer = incident.viewer_named(escalation.decision_id)
    entry = incident.logged(escalation.decision_id) or {}
    if viewer is not None:  # the raised escalation still names the viewer: its verdict reports the viewer
        evidence += (Evidence("account", int(entry.get("since", due)), (("role", "viewer"), ("account_id", viewer))),)
    raised = Decision.create(stream_id, Action("escalate", priority=priority), (reason,), evidence,
                             policy.version, decided_at_ms=due, event_ts_ms=due, rule="review-sla-breach",
                             review_sla_s=policy.review_sla_s.get(priority),
                             subject=("stream", stream_id) if viewer is not None else None,
                             streams=tuple(entry.get("streams", ())) if viewer is not None else ())
    decisions = [raised]
    state = _emit(state, raised, f"escalate:{priority}")
    if escalation.priority == "P0" and config.p0_breach_restrictions:
        fresh = tuple(r for r in config.p0_breach_restrictions if f"restrict:{r}" not in state.emitted)
        if fresh:
            restrict = Decision.create(stream_id, Action("restrict", restrictions=tuple(sorted(fresh))),
                                       (reason,), evidence, policy.version, decided_at_ms=due,
                                       event_ts_ms=due, rule="review-sla-breach")
            for r in fresh:
                state = _emit(state, restrict, f"restrict:{r}")
            decisions.append(restrict)
    incident = incident.close("breached", escalation.decision_id)
    incident = incident.with_decisions(decisions, incident.partition)
    return Outcome(state, incident, decisions=tuple(decisions), review="sla_breach",
                   sla_breach=escalation.priority)


def _classifier_of(signal: str | None) -> str | None:
    if not signal:
        return None
    kind, _, rest = signal.partition(":")
    return rest if kind == "classifier" else kind
