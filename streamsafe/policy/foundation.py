"""The foundation policy: exact known-hash matches block, high classifier scores escalate.

``decide_*`` functions are pure: (state, event) -> :class:`Outcome`. They never
await, so an agent can read state, decide and write state back without another
coroutine interleaving, and only then publish.

Idempotence: when an event that already produced a decision is processed again
(a re-delivery after a crash), the same decision id comes out and is emitted
again, identical, so a decision is never lost between the state write and the
send. Any *other* evidence for an already-blocked stream is suppressed: at most
one block per stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from streamsafe.events.models import ClassifierSignal, StreamMetadata, UserReport
from streamsafe.matching.banks import Match
from streamsafe.policy.decisions import Decision
from streamsafe.scoring.evidence import classifier_evidence, match_evidence
from streamsafe.scoring.state import StreamState

__all__ = ["FoundationPolicy", "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    state: StreamState
    decisions: tuple[Decision, ...] = ()
    state_changed: bool = False


@dataclass(frozen=True, slots=True)
class FoundationPolicy:
    version: str
    thresholds: Mapping[str, float] = field(default_factory=dict)
    default_threshold: float = 0.9
    escalation_priority: str = "P1"

    def threshold_for(self, classifier: str) -> float:
        return self.thresholds.get(classifier, self.default_threshold)

    def escalates(self, signal: ClassifierSignal) -> bool:
        """Whether this signal alone can lead to a decision (checked before reading state)."""
        return signal.score >= self.threshold_for(signal.classifier)

    def decide_matches(
        self, state: StreamState, stream_id: str, matches: Sequence[Match], record_ts_ms: int
    ) -> Outcome:
        if not matches:
            return Outcome(state)
        evidence = tuple(match_evidence(m) for m in matches)
        reasons = tuple(
            f"frame {m.frame_seq} matched bank {m.bank!r} ({m.signal_type}, exact)" for m in matches
        )
        decision = Decision.create(
            stream_id, "block", reasons, evidence, self.version, record_ts_ms
        )
        if state.block_id is None:
            return Outcome(replace(state, block_id=decision.decision_id), (decision,), True)
        if state.block_id == decision.decision_id:
            return Outcome(state, (decision,))
        return Outcome(state)

    def decide_signal(
        self, state: StreamState, signal: ClassifierSignal, record_ts_ms: int
    ) -> Outcome:
        if not self.escalates(signal):
            return Outcome(state)
        threshold = self.threshold_for(signal.classifier)
        evidence = (classifier_evidence(signal, threshold),)
        reason = (
            f"classifier {signal.classifier!r} scored {signal.score:.2f} "
            f">= threshold {threshold:.2f}"
        )
        decision = Decision.create(
            signal.stream_id, "escalate", (reason,), evidence, self.version, record_ts_ms,
            priority=self.escalation_priority,
        )
        if state.escalation_id == decision.decision_id:
            return Outcome(state, (decision,))
        if not state.escalation_rises_to(self.escalation_priority):
            return Outcome(state)
        new_state = replace(
            state, escalation_id=decision.decision_id, escalation_priority=decision.priority
        )
        return Outcome(new_state, (decision,), True)

    def decide_metadata(self, state: StreamState, event: StreamMetadata) -> Outcome:
        new_state = state.with_metadata(event)
        return Outcome(new_state, (), new_state != state)

    def decide_report(self, state: StreamState, report: UserReport) -> Outcome:
        new_state = replace(state, user_reports=state.user_reports + 1)
        return Outcome(new_state, (), True)


