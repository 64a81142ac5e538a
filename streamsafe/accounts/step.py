"""``account_step(signal, state, policy) -> AccountOutcome``: what one account signal does.

Pure and synchronous, like :func:`streamsafe.pipeline.step.step` for streams. Two rules,
set in the policy's ``accounts`` section:

* **repeat-broadcaster**: a stream started by a broadcaster blocked within the window is
  restricted and escalated at ``stream.started`` (priority by the prior block's rule);
* **viewer-grooming-across-streams**: a viewer whose grooming signals reached the streams of
  ``min_streams`` broadcasters not verified as adults within the window is escalated (and
  restricted) as an account, once while the action is in force, and each stream involved
  is escalated naming the viewer.

Beside them, the author's own rules over account features (``accounts.rules``,
:mod:`streamsafe.accounts.rules`) are evaluated on every signal but the sweep's tick. A user
report naming the account adds to its state (when and which stream, never who reported).

Account decisions (``subject``: the account, schema version 2) are made here. What concerns
a stream is a :class:`~streamsafe.events.models.AccountFinding`, sent to the stream's
partition, where the stream's own agent decides (``pipeline/step.py``), so those decisions
join the stream's incident: review deadlines, verdicts, appeals, statements of reasons.
Ids are deterministic, as every decision's: the causing stream record's broker timestamp
is part of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamsafe.accounts.rules import account_rule_decisions
from streamsafe.accounts.signals import AccountSignal
from streamsafe.accounts.state import AccountState, Block, Grooming, Report, Start
from streamsafe.events.models import AccountFinding
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import Action, Policy
from streamsafe.scoring.evidence import Evidence

__all__ = ["REPEAT_BROADCASTER", "VIEWER_GROOMING", "AccountOutcome", "account_step", "young_target"]

REPEAT_BROADCASTER = "repeat-broadcaster"
VIEWER_GROOMING = "viewer-grooming-across-streams"
MAX_EVIDENCE = 10


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    state: AccountState | None = None  # to write (None: leave it)
    delete: bool = False  # nothing is left within retention: drop the account's state
    decisions: tuple[Decision, ...] = ()  # about the account
    findings: tuple[AccountFinding, ...] = ()  # about its streams, for the streams' workers to decide


def young_target(signal: AccountSignal) -> bool:
    """A signal's stream counts as a young broadcaster's when its metadata was seen and did not
    verify the broadcaster as an adult (unknown context: not counted, to keep false actions down)."""
    return signal.target is not None and signal.target.age_verified is not True


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds / 3600:g}h"


def account_step(signal: AccountSignal, state: AccountState | None, policy: Policy) -> AccountOutcome:
    accounts = policy.accounts
    stored = state or AccountState()
    current = stored.pruned(signal.ts_ms - int(accounts.retention_s * 1000), signal.ts_ms)
    if signal.kind == "expire":
        if current.empty:
            return AccountOutcome(delete=state is not None)
        return AccountOutcome(state=current if current != stored else None)
    decisions: tuple[Decision, ...] = ()
    findings: tuple[AccountFinding, ...] = ()
    if signal.kind == "stream_started" and signal.stream_id and policy.accounts.repeat_broadcaster:
        findings = _repeat_broadcaster(signal, current, policy)
        current = current.with_start(Start(signal.ts_ms, signal.stream_id, signal.decided_at_ms, bool(findings)))
    elif signal.kind == "blocked" and signal.stream_id and signal.rule:
        current = current.with_block(Block(signal.ts_ms, signal.stream_id, signal.rule, signal.decision_id))
        # input topics are read independently: a later stream's start may have arrived first
        for start in current.starts:
            if not start.decided and start.ts_ms > signal.ts_ms and start.stream_id != signal.stream_id:
                again = AccountSignal(signal.account_id, "stream_started", start.ts_ms, start.decided_at_ms,
                                      start.stream_id)
                decided = _repeat_broadcaster(again, current, policy)
                if decided:
                    findings += decided
                    current = current.with_start(Start(start.ts_ms, start.stream_id, start.decided_at_ms, True))
    elif signal.kind == "grooming" and signal.stream_id and signal.classifier and signal.score is not None:
        grooming = accounts.viewer_grooming
        if grooming and signal.classifier in grooming.classifiers and signal.score >= grooming.min_score:
            private = bool(signal.target and signal.target.private)
            current = current.with_grooming(Grooming(signal.ts_ms, signal.stream_id, signal.score, signal.classifier,
                                                     young_target(signal), private))
            current, decisions, findings = _viewer_grooming(signal, current, policy)
    elif signal.kind == "user_report" and signal.stream_id:
        current = current.with_report(Report(signal.ts_ms, signal.stream_id))
    if accounts.rules and signal.stream_id:
        current, more = account_rule_decisions(signal, current, policy)
        decisions += more
    if current.empty and state is not None:
        return AccountOutcome(delete=True, decisions=decisions, findings=findings)
    return AccountOutcome(state=current if current != stored else None, decisions=decisions, findings=findings)


def _repeat_broadcaster(signal: AccountSignal, state: AccountState, policy: Policy) -> tuple[AccountFinding, ...]:
    rule = policy.accounts.repeat_broadcaster
    assert signal.stream_id is not None
    if rule is None:
        return ()
    since = signal.ts_ms - int(rule.window_s * 1000)
    prior = sorted((b for b in state.blocks if since <= b.ts_ms <= signal.ts_ms and b.stream_id != signal.stream_id),
                   key=lambda b: b.ts_ms)
    if not prior:
        return ()
    last = prior[-1]
    priority = rule.priority_after(last.rule)
    evidence = tuple({"kind": "account", "ts_ms": b.ts_ms, "role": "broadcaster", "account_id": signal.account_id,
                      "rule": b.rule, "stream_id": b.stream_id} for b in prior[-MAX_EVIDENCE:])
    reason = (f"rule '{REPEAT_BROADCASTER}': account.prior_blocks {len(prior)} gte 1 within "
              f"{_days(rule.window_s)} (last by '{last.rule}')")
    return (AccountFinding(signal.stream_id, REPEAT_BROADCASTER, signal.ts_ms, signal.decided_at_ms, reason, evidence,
                           priority, rule.restrictions),)


def _viewer_grooming(signal: AccountSignal, state: AccountState, policy: Policy,
                     ) -> tuple[AccountState, tuple[Decision, ...], tuple[AccountFinding, ...]]:
    rule = policy.accounts.viewer_grooming
    assert rule is not None and signal.stream_id is not None
    since = signal.ts_ms - int(rule.window_s * 1000)
    seen = sorted((g for g in state.grooming if g.young_target and since <= g.ts_ms), key=lambda g: g.ts_ms)
    if len(seen) < rule.min_streams or state.active(VIEWER_GROOMING):
        return state, (), ()
    streams = tuple(g.stream_id for g in seen)
    evidence = tuple(Evidence("account", g.ts_ms, (("role", "viewer"), ("account_id", signal.account_id),
                                                   ("classifier", g.classifier), ("score", g.score),
                                                   ("stream_id", g.stream_id)))
                     for g in seen[-MAX_EVIDENCE:])
    reason = (f"rule '{VIEWER_GROOMING}': viewer.young_targets {len(seen)} gte {rule.min_streams} within "
              f"{_days(rule.window_s)}")
    sla = policy.review_sla_s.get(rule.priority)
    account = ("account", signal.account_id)
    actions = [Action("escalate", rule.priority)]
    if rule.restrictions:
        actions.append(Action("restrict", restrictions=rule.restrictions))
    decisions = [Decision.create(signal.stream_id, action, (reason,), evidence, policy.version,
                                 decided_at_ms=signal.decided_at_ms, event_ts_ms=signal.ts_ms, rule=VIEWER_GROOMING,
                                 review_sla_s=sla, subject=account, streams=streams) for action in actions]
    # each stream involved: an escalation naming the viewer, so its reviewer sees the pattern
    records = tuple(e.as_record() for e in evidence)
    # the account escalation joins the incident of the stream that completed the evidence (its decisions' key),
    # so a verdict keyed by that stream can name it
    escalation_id = decisions[0].decision_id
    findings = tuple(AccountFinding(g.stream_id, VIEWER_GROOMING, signal.ts_ms, signal.decided_at_ms, reason, records,
                                    rule.priority, streams=streams,
                                    account_escalation_id=escalation_id if g.stream_id == signal.stream_id else None)
                     for g in seen)
    return state.with_action(VIEWER_GROOMING, signal.ts_ms), tuple(decisions), findings
