"""The per-record path shared by every agent, free of Faust so it runs in unit tests.

decode (contract) -> observe (state) -> decide (live and shadow policies) -> write
state only if it changed materially -> publish decisions. Bad input becomes a
dead-letter record.

State is read, updated, decided on and written back without an ``await`` in
between, so two agents handling the same stream cannot interleave.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    INPUT_TOPICS,
    METADATA,
    USER_REPORTS,
)
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import ClassifierSignal, FrameBatch, StreamMetadata, UserReport
from streamsafe.matching.banks import HashBanks, Match
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.policy.decisions import Decision
from streamsafe.policy.engine import decide
from streamsafe.policy.policyset import PolicySet
from streamsafe.scoring.state import MatchRef, ScoreSlot, StreamState

__all__ = ["StreamProcessor"]

log = logging.getLogger(__name__)


@dataclass
class ProcessorStats:
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)
    shadow_decided: Counter[str] = field(default_factory=Counter)
    state_writes: int = 0


def reporter_digest(reporter_id: str) -> str:
    """State keeps a digest, not the reporter's id: enough to count distinct reporters."""
    return hashlib.sha256(reporter_id.encode()).hexdigest()[:12]


class StreamProcessor:
    def __init__(
        self,
        decoder: InputDecoder,
        banks: HashBanks,
        policies: PolicySet,
        states: MutableMapping[str, Any],
        publisher: DecisionPublisher,
        metrics: StreamSafeMetrics | None = None,
    ) -> None:
        self.metrics = metrics or StreamSafeMetrics.create()
        self._accepted = {t: self.metrics.input_messages.labels(t, "accepted", "") for t in INPUT_TOPICS}
        self._last_input = {t: self.metrics.last_input.labels(t) for t in INPUT_TOPICS}
        self.decoder = decoder
        self.banks = banks
        self.policies = policies
        self.use_policies(policies)
        self.states = states
        self.publisher = publisher
        self.stats = ProcessorStats()
        self.input_topic_names: set[str] = set()  # broker-side names, for lag

    def use_policies(self, policies: PolicySet) -> None:
        """Switch policies (hot reload); the live policy also sets how banks match."""
        self.policies = policies
        live = policies.live
        self.banks.pdq_radius = live.pdq_radius
        self.banks.pdq_min_quality = live.pdq_min_quality
        self.banks.bank_radius = dict(live.bank_radius)

    async def handle(
        self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord
    ) -> None:
        """Process one record of contract topic ``topic``; never raises on bad input."""
        self._last_input[topic].set_to_current_time()
        try:
            event = self.decoder.decode(topic, key, value)
        except RejectedInput as exc:
            self.stats.rejected[exc.reason] += 1
            self.metrics.input_messages.labels(topic, "dead_lettered", exc.reason).inc()
            log.info("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset,
                     exc.reason)
            await self.publisher.dead_letter(DeadLetter(exc.reason, exc.detail, source, key, value))
            return
        self.stats.accepted[topic] += 1
        self._accepted[topic].inc()
        decisions = self._process(topic, event, source.timestamp_ms or 0)
        for decision in decisions:
            await self.publisher.publish(decision)
            self._observe_sent(decision)

    def _observe_sent(self, decision: Decision) -> None:
        now = time.time()
        if decision.shadow:
            self.metrics.shadow_decisions.labels(decision.policy_version, decision.action).inc()
            return
        self.metrics.decisions.labels(decision.action, decision.priority or "").inc()
        event_age = max(0.0, now - decision.event_ts_ms / 1000)
        self.metrics.event_to_decision.labels(decision.action).observe(event_age)
        self.metrics.record_to_decision.labels(decision.action).observe(
            max(0.0, now - decision.decided_at_ms / 1000))
        log.debug("decision %s %s for stream %s by rule %s", decision.decision_id, decision.action,
                  decision.stream_id, decision.rule)

    def _process(self, topic: str, event: Any, record_ts_ms: int) -> list[Decision]:
        """Synchronous on purpose: read, update and write state with no await in between."""
        if topic == FRAME_HASHES:
            assert isinstance(event, FrameBatch)
            # Nearly every frame matches nothing: match before touching state.
            matches = self._without_allowed(self.banks.match_frames(event.frames))
            if not matches:
                return []
            for m in matches:
                self.metrics.hash_matches.labels(m.bank, m.signal_type).inc()
            stored = self._state(event.stream_id)
            observed = self._observe_matches(stored, matches)
            at_ms = max(m.frame_ts_ms for m in matches)
        elif topic == CLASSIFIER_SIGNALS:
            assert isinstance(event, ClassifierSignal)
            stored = self._state(event.stream_id)
            ref = (f"frame:{event.frame_seq}" if event.frame_seq is not None
                   else f"msg:{event.chat_message_id}" if event.chat_message_id else None)
            observed = stored.with_score(self.policies.live.fusion, event.classifier,
                                         ScoreSlot(event.score, event.ts_ms, ref))
            at_ms = event.ts_ms
        elif topic == USER_REPORTS:
            assert isinstance(event, UserReport)
            stored = self._state(event.stream_id)
            observed = stored.with_report(reporter_digest(event.reporter_id), event.ts_ms)
            at_ms = event.ts_ms
        elif topic == METADATA:
            assert isinstance(event, StreamMetadata)
            stored = self._state(event.stream_id)
            observed = stored.with_metadata(event)
            at_ms = event.ts_ms
        else:
            raise ValueError(f"not an input topic: {topic}")
        if observed == stored:
            return []  # nothing new was learned: no rule can newly hold
        # judged at the event's own time: input topics are consumed independently, so
        # another topic's newer events may already be in the state
        state, decisions = decide(self.policies.live, observed, event.stream_id, at_ms, record_ts_ms)
        for shadow in self.policies.shadows.values():
            state, shadow_decisions = decide(shadow, state, event.stream_id, at_ms, record_ts_ms,
                                             shadow=True)
            decisions += shadow_decisions
        if state.differs_materially(stored, self.policies.live.fusion):
            record = state.to_record()
            self.states[event.stream_id] = record
            self.stats.state_writes += 1
            self.metrics.state_writes.inc()
            self.metrics.state_bytes.observe(len(orjson.dumps(record)))
        for d in decisions:
            (self.stats.shadow_decided if d.shadow else self.stats.decided)[d.action] += 1
        return list(decisions)

    def _without_allowed(self, matches: list[Match]) -> list[Match]:
        """A match in an allow bank (overlays, test cards, black frames) clears its frame."""
        if not matches:
            return matches
        trust = self.policies.live.trust_of
        allowed = {m.frame_seq for m in matches if trust(m.bank) == "allow"}
        return [m for m in matches if m.frame_seq not in allowed] if allowed else matches

    def _observe_matches(self, state: StreamState, matches: list[Match]) -> StreamState:
        policy = self.policies.live
        refs = [(MatchRef(m.bank, m.entry_id, m.signal_type, m.distance, m.frame_seq, m.frame_ts_ms),
                 policy.is_strong(m.distance)) for m in matches]
        strong = [ref for ref, is_strong in refs if is_strong]
        weak = [ref for ref, is_strong in refs if not is_strong]
        return state.with_matches(strong, weak)

    def _state(self, stream_id: str) -> StreamState:
        return StreamState.from_record(self.states.get(stream_id))
