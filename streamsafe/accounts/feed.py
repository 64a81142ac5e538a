"""What a stream's record tells about accounts: the account signals to send after it.

Called by the stream's worker with the record's outcome. Cheap on purpose: a frame-hash
record yields a signal only when its outcome holds a block (frames never travel to the
account topic), a classifier signal only when it names its author and passes the
policy's grooming threshold, metadata only at ``stream.started``, a user report only when
it names an account (``reported_account_id``; the reporter never travels).

Frames and metadata are read independently, so a known frame may be blocked before the
record naming its stream's broadcaster is read: that block then sends no signal. When a
metadata record first names the broadcaster of a stream already blocked, the step sends it
then (:func:`earlier_block`, from ``pipeline/step.py``), from the incident's decision log,
with the block's own times and id.
"""

from __future__ import annotations

from streamsafe.accounts.signals import AccountSignal, Target
from streamsafe.events.models import ClassifierSignal, StreamMetadata, UserReport
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import Policy
from streamsafe.review.incident import Incident
from streamsafe.scoring.state import StreamState

__all__ = ["account_signals", "earlier_block"]


def account_signals(event: object, state: StreamState | None, decisions: tuple[Decision, ...], policy: Policy,
                    record_ts_ms: int) -> tuple[AccountSignal, ...]:
    """``state``: the stream's state after the record (None: none kept)."""
    signals: list[AccountSignal] = []
    if isinstance(event, StreamMetadata):
        if event.event == "stream.started" and policy.accounts.repeat_broadcaster is not None:
            signals.append(AccountSignal(event.broadcaster_id, "stream_started", event.ts_ms, record_ts_ms,
                                         event.stream_id))
    elif isinstance(event, ClassifierSignal) and event.actor_account_id:
        rule = policy.accounts.viewer_grooming
        if rule is not None and event.classifier in rule.classifiers and event.score >= rule.min_score:
            known = state is not None and state.broadcaster_id is not None
            target = Target(state.age_verified, state.account_age_days,
                            state.visibility == "private") if known and state is not None else None
            signals.append(AccountSignal(event.actor_account_id, "grooming", event.ts_ms, record_ts_ms,
                                         event.stream_id, classifier=event.classifier, score=event.score,
                                         target=target))
    elif isinstance(event, UserReport) and event.reported_account_id:
        signals.append(AccountSignal(event.reported_account_id, "user_report", event.ts_ms, record_ts_ms,
                                     event.stream_id))
    if decisions and state is not None and state.broadcaster_id:
        for d in decisions:
            if d.action == "block" and not d.shadow and d.subject is None and d.rule:
                signals.append(AccountSignal(state.broadcaster_id, "blocked", d.event_ts_ms, d.decided_at_ms,
                                             d.stream_id, rule=d.rule, decision_id=d.decision_id))
    return tuple(signals)


def earlier_block(stream_id: str, state: StreamState, incident: Incident) -> tuple[AccountSignal, ...]:
    """The signal of a block decided before ``state`` named the stream's broadcaster (none if
    no block, or it left the incident's bounded log)."""
    decision_id = state.emitted.get("block")
    entry = next((e for e in incident.decisions if e["id"] == decision_id), None) if decision_id else None
    if entry is None or entry.get("action") != "block" or not entry.get("rule") or not state.broadcaster_id:
        return ()
    return (AccountSignal(state.broadcaster_id, "blocked", int(entry.get("et", entry["at"])), int(entry["at"]),
                          stream_id, rule=str(entry["rule"]), decision_id=decision_id),)
