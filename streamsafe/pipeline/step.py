"""``step(event, state, incident, context) -> Outcome``: what one record does to one stream.

Pure and synchronous: the agent reads the stream's state, calls :func:`step` with a
reader of the stream's incident (read from its table only if the step needs it: most
records change nothing and never do), writes what the outcome names and publishes what
it carries, with no ``await`` between the read and the write, so two agents handling
one stream cannot interleave.

Clocks, one per question:

* **Event time** (each record's own ``ts_ms``) for evidence: decay, windows, and the
  time a decision is judged at: the triggering event's time, or the newest evidence
  the decision cites if that is later (``policy/engine.py``), so it never cites
  evidence from its own future, and evidence that arrived out of order is weighed at
  its own time.
* **The triggering record's broker timestamp** for a decision's identity and
  ``decided_at_ms``, and so for review deadlines (``decided_at_ms`` + SLA).
* **The processing clock** (``context.now_ms``: the worker's clock, or in a replay the
  newest record timestamp it has read) for when a stream's state was last touched,
  and so for releasing ended or idle streams; the sweep that finds due deadlines and
  expiries reads the same clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from streamsafe.accounts.feed import earlier_block
from streamsafe.accounts.signals import AccountSignal
from streamsafe.events.models import (
    AccountFinding,
    Appeal,
    ClassifierSignal,
    FrameMatches,
    Match,
    ReviewVerdict,
    StreamMetadata,
    TimerTick,
    UserReport,
)
from streamsafe.pipeline.appeals import open_appeal
from streamsafe.pipeline.outcome import EMPTY, NO_OPEN_ESCALATION, Outcome
from streamsafe.pipeline.review import ReviewConfig, apply_verdict, miss_deadline, report_if_due, revise_report
from streamsafe.policy.decisions import Decision
from streamsafe.policy.engine import decide
from streamsafe.policy.model import Action
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.incident import Incident, Verdict, viewer_of
from streamsafe.review.reports import PreservationRequest, ReportPacket
from streamsafe.scoring.evidence import Evidence
from streamsafe.scoring.state import MatchRef, ScoreSlot, StreamState

__all__ = ["IncidentReader", "Lifecycle", "StepContext", "StepEvent", "expiry_ms", "reporter_digest", "step"]

StepEvent = (FrameMatches | ClassifierSignal | UserReport | StreamMetadata | ReviewVerdict | Appeal | TimerTick
             | AccountFinding)
IncidentReader = Callable[[], Incident | None]  # the stream's stored incident (None: none yet)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """How long a stream's state is kept once it ended, or after it was last touched."""

    ended_ttl_ms: int = 3_600_000
    inactive_ttl_ms: int = 21_600_000


@dataclass(slots=True)
class StepContext:  # one per record: not frozen, which would make building it several times slower
    policies: PolicySet
    record_ts_ms: int  # the triggering record's broker timestamp
    partition: int  # where the stream's records (and its state) live
    now_ms: int  # the processing clock
    review: ReviewConfig = field(default_factory=ReviewConfig)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


def reporter_digest(reporter_id: str) -> str:
    """State keeps a digest, not the reporter's id: enough to count distinct reporters."""
    return hashlib.sha256(reporter_id.encode()).hexdigest()[:12]


def expiry_ms(touched_ms: int, ended: bool, lifecycle: Lifecycle) -> int:
    """When (processing clock) a stream's state may be released."""
    return touched_ms + (lifecycle.ended_ttl_ms if ended else lifecycle.inactive_ttl_ms)


def step(event: StepEvent, state: StreamState | None, incident: IncidentReader, ctx: StepContext) -> Outcome:
    """What ``event`` does to its stream, given what was stored (None: nothing yet)."""
    stored = state if state is not None else StreamState()
    live = ctx.policies.live
    match event:
        case FrameMatches(matches=matches):
            refs = [(MatchRef(m.bank, m.entry_id, m.signal_type, m.distance, m.frame_seq, m.frame_ts_ms,
                              m.transform), live.is_strong(m.distance)) for m in matches]
            observed = stored.with_matches([r for r, strong in refs if strong], [r for r, strong in refs if not strong])
            at_ms = max(m.frame_ts_ms for m in matches)
            return _observe(event, stored, incident, observed, at_ms, ctx, matches)
        case ClassifierSignal():
            ref = event.evidence_ref
            observed = stored.with_score(live.fusion, event.classifier,
                                         ScoreSlot(event.score, event.ts_ms, str(ref) if ref else None))
            return _observe(event, stored, incident, observed, event.ts_ms, ctx)
        case UserReport():
            observed = stored.with_report(reporter_digest(event.reporter_id), event.ts_ms)
            return _observe(event, stored, incident, observed, event.ts_ms, ctx)
        case StreamMetadata():
            return _observe(event, stored, incident, stored.with_metadata(event), event.ts_ms, ctx)
        case ReviewVerdict():
            current = replace(incident() or Incident(), partition=ctx.partition)
            verdict = Verdict(event.verdict, event.category, event.reviewer_id, event.ts_ms, event.escalation_id)
            if not _reviewable(current, verdict):
                return Outcome(review=NO_OPEN_ESCALATION)
            outcome = apply_verdict(live, stored, current, event.stream_id, verdict, ctx.record_ts_ms,
                                    ctx.review, event.propose_hashes)
            return _touched(outcome, stored, ctx)
        case Appeal():
            current = replace(incident() or Incident(), partition=ctx.partition)
            return _touched(open_appeal(live, state, current, event, ctx.record_ts_ms, ctx.partition), stored, ctx)
        case AccountFinding():
            return _account_finding(event, stored, incident, ctx)
        case TimerTick(kind="expire"):
            if state is None or not (incident() or Incident()).settled:
                return Outcome()  # nothing to release, or an open escalation still needs it
            if expiry_ms(state.touched_ms, state.ended_at_ms is not None, ctx.lifecycle) > event.due_ms:
                return Outcome()  # touched since the tick was sent
            return Outcome(release=True)
        case TimerTick():
            current = incident() or Incident()
            escalation = current.escalation(event.escalation_id or "")
            if escalation is None or escalation.status != "open":
                return Outcome()  # reviewed (or superseded) since the tick was sent
            return _touched(miss_deadline(live, stored, current, event.stream_id, escalation, ctx.review),
                            stored, ctx)
    raise TypeError(f"no step for {type(event).__name__}")


def _account_finding(finding: AccountFinding, stored: StreamState, incident: IncidentReader,
                     ctx: StepContext) -> Outcome:
    """An account's history about this stream: decided here, where the stream's incident lives, so its
    escalation has a review deadline, takes verdicts and appeals, and its restriction a statement of reasons."""
    live = ctx.policies.live
    evidence = tuple(Evidence("account", int(e["ts_ms"]),
                              tuple((k, v) for k, v in e.items() if k not in ("kind", "ts_ms")))
                     for e in finding.evidence)
    actions = [Action("restrict", restrictions=finding.restrictions)] if finding.restrictions else []
    actions.append(Action("escalate", finding.priority))
    decisions = tuple(Decision.create(finding.stream_id, action, (finding.reason,), evidence, live.version,
                                      decided_at_ms=finding.decided_at_ms, event_ts_ms=finding.ts_ms,
                                      rule=finding.rule, review_sla_s=live.review_sla_s.get(finding.priority),
                                      subject=("stream", finding.stream_id), streams=finding.streams)
                      for action in actions)
    current = replace(incident() or Incident(), partition=ctx.partition)
    viewer = next((viewer_of(d) for d in decisions), None)
    if finding.account_escalation_id and viewer:
        # the account's escalation (decided and sent by the account's worker, keyed by this stream) joins this
        # incident as it is, so a verdict keyed by this stream can name it and its deadline is watched here
        account = Decision.create(finding.stream_id, Action("escalate", finding.priority), (finding.reason,), evidence,
                                  live.version, decided_at_ms=finding.decided_at_ms, event_ts_ms=finding.ts_ms,
                                  rule=finding.rule, review_sla_s=live.review_sla_s.get(finding.priority),
                                  subject=("account", viewer), streams=finding.streams)
        current = current.with_decisions((replace(account, decision_id=finding.account_escalation_id),),
                                         ctx.partition)
    # touched, with its partition: a stream whose state was already released (a groomer's first target may
    # have ended hours ago) gets one again, so the sweep releases the incident once its review is settled
    touched = replace(stored, partition=ctx.partition, touched_ms=ctx.now_ms)
    return Outcome(state=touched, incident=current.with_decisions(decisions, ctx.partition), decisions=decisions)


def _reviewable(incident: Incident, verdict: Verdict) -> bool:
    """A verdict acts on an escalation of its stream a reviewer was shown, never on a stream at large:
    an open one, or one a higher escalation superseded while the reviewer looked (the stream's review
    is still open). The same verdict again (a redelivery) goes on, to send again what it decided."""
    named = incident.escalation(verdict.escalation_id) if verdict.escalation_id else None
    if named is None:
        return False
    if named.status == "open" or verdict in incident.verdicts:
        return True
    return named.status == "superseded" and bool(incident.open_escalations())


def _touched(outcome: Outcome, stored: StreamState, ctx: StepContext) -> Outcome:
    """Stamp a state the outcome changes with the processing clock (for expiry)."""
    if outcome.state is None or outcome.state == stored:
        return replace(outcome, state=None)
    return replace(outcome, state=replace(outcome.state, touched_ms=ctx.now_ms))


def _observe(event: StepEvent, stored: StreamState, incident: IncidentReader, observed: StreamState,
             at_ms: int, ctx: StepContext, matches: tuple[Match, ...] = ()) -> Outcome:
    """Evidence observed: decide with the live and shadow policies, remember what a report needs."""
    if observed == stored:  # nothing new was learned: no rule can newly hold
        return Outcome(matches=matches) if matches else EMPTY
    stream_id = event.stream_id
    if stored.partition != ctx.partition:
        observed = replace(observed, partition=ctx.partition)
    live = ctx.policies.live
    # judged at the event's own time (or the newest evidence it cites, see policy/engine.py):
    # input topics are consumed independently, so another topic's newer events may already
    # be in the state without bearing on this decision
    state, decisions = decide(live, observed, stream_id, at_ms, ctx.record_ts_ms)
    for shadow in ctx.policies.shadows.values():
        state, shadow_decisions = decide(shadow, state, stream_id, at_ms, ctx.record_ts_ms, shadow=True)
        decisions += shadow_decisions
    new_incident, reports = _incident_after(event, state, incident, decisions, matches, ctx)
    signals: tuple[AccountSignal, ...] = ()
    if isinstance(event, StreamMetadata) and state.broadcaster_id and not stored.broadcaster_id:
        # frames and metadata are read independently: what was decided before the broadcaster
        # was known now names them (the block's account signal, the report sent again completed)
        current = new_incident or incident()
        if current is not None:
            signals = earlier_block(stream_id, state, current)
            revised = None if reports else revise_report(stream_id, state, current, ctx.review)
            reports = (revised,) if revised is not None else reports
    write = state.differs_materially(stored, live.fusion)
    return Outcome(state=replace(state, touched_ms=ctx.now_ms) if write else None, incident=new_incident,
                   decisions=decisions, reports=reports, matches=matches, account_signals=signals)


def _incident_after(event: StepEvent, state: StreamState, read: IncidentReader,
                    decisions: tuple[Decision, ...], matches: tuple[Match, ...], ctx: StepContext,
                    ) -> tuple[Incident | None, tuple[tuple[ReportPacket, PreservationRequest], ...]]:
    """Keep what a report would need; turn the live policy's report decision into a report.
    Returns the incident to write (None: unchanged) and the report packets."""
    live = [d for d in decisions if not d.shadow]
    fusion = ctx.policies.live.fusion
    signal_evidence = (isinstance(event, ClassifierSignal)
                       and fusion.classifier(event.classifier).strength(event.score) > 0)
    if not (live or matches or signal_evidence):
        return None, ()
    stored = read()
    if not (live or matches or stored is not None):
        return None, ()  # classifier evidence is kept only for a stream that already has an incident
    before = stored or Incident()
    incident = before
    if matches:
        hashes = event.frame_hashes() if isinstance(event, FrameMatches) else {}
        incident = incident.with_matches(matches, hashes, ctx.partition)
    if isinstance(event, ClassifierSignal) and signal_evidence:
        incident = incident.with_classifier(event.classifier, event.score, event.ts_ms, event.evidence_ref)
    incident = incident.with_decisions(live, ctx.partition)
    reports: tuple[tuple[ReportPacket, PreservationRequest], ...] = ()
    report = next((d for d in live if d.action == "report"), None)
    if report is not None:
        incident, reports = report_if_due(event.stream_id, state, incident, trigger="policy", category=None,
                                          at_ms=report.decided_at_ms, config=ctx.review)
    return (incident if incident != before else None), reports
