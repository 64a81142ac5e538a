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
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import (
    CLASSIFIER_SIGNALS,
    FRAME_HASHES,
    INPUT_TOPICS,
    METADATA,
    REVIEW_VERDICTS,
    TIMERS,
    USER_REPORTS,
)
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import (
    ClassifierSignal,
    FrameBatch,
    ReviewVerdict,
    StreamMetadata,
    TimerTick,
    UserReport,
)
from streamsafe.matching.banks import HashBanks, Match
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.policy.decisions import Decision
from streamsafe.policy.engine import decide
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.incident import Incident, Verdict
from streamsafe.review.loop import ReviewConfig, ReviewOutcome, apply_verdict, miss_deadline, report_if_due
from streamsafe.scoring.state import MatchRef, ScoreSlot, StreamState

__all__ = ["StreamProcessor"]

VERDICT_OUTCOMES = {"confirmed", "benign", "needs_more_context", "unknown_escalation", "already_closed"}

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
        incidents: MutableMapping[str, Any] | None = None,
        review: ReviewConfig | None = None,
    ) -> None:
        self.incidents = incidents if incidents is not None else {}
        self.review = review or ReviewConfig()
        self.metrics = metrics or StreamSafeMetrics.create()
        topics = (*INPUT_TOPICS, REVIEW_VERDICTS, TIMERS)
        self._accepted = {t: self.metrics.input_messages.labels(t, "accepted", "") for t in topics}
        self._last_input = {t: self.metrics.last_input.labels(t) for t in topics}
        self.decoder = decoder
        self.banks = banks
        self.policies = policies
        self.use_policies(policies)
        self.states = states
        self.publisher = publisher
        self.stats = ProcessorStats()
        self.count_inputs = True  # per-record metrics; off only to measure what they cost
        self._pending: ReviewOutcome | None = None  # reports made while deciding, sent after the decisions
        self.input_topic_names: set[str] = set()  # broker-side names, for lag
        self.in_flight: dict[str, float] = {}  # topic -> when its record in hand started (monotonic)

    def use_policies(self, policies: PolicySet) -> None:
        """Switch policies (hot reload); the live policy also sets how banks match."""
        self.policies = policies
        live = policies.live
        self.banks.pdq_radius = live.pdq_radius
        self.banks.pdq_min_quality = live.pdq_min_quality
        self.banks.bank_radius = dict(live.bank_radius)

    def frame_matches(self, event: FrameBatch) -> list[Match]:
        """The bank matches of a frame-hash message, minus frames an allow bank clears."""
        return self._without_allowed(self.banks.match_frames(event.frames))

    def frame_matches_many(self, events: list[FrameBatch]) -> list[list[Match]]:
        """:meth:`frame_matches` of many messages, their PDQ hashes in one index lookup."""
        groups = self.banks.match_frame_groups([e.frames for e in events])
        return [self._without_allowed(matches) for matches in groups]

    def count_input(self, topic: str) -> None:
        """Count an accepted input record (the frame pre-filter counts the frames it screens)."""
        self.stats.accepted[topic] += 1
        if self.count_inputs:
            self._last_input[topic].set_to_current_time()
            self._accepted[topic].inc()

    def count_rejected(self, topic: str, rejected: DeadLetter) -> None:
        """Count (and log, without content) an input record on its way to the dead-letter topic."""
        self.stats.rejected[rejected.reason] += 1
        self.metrics.input_messages.labels(topic, "dead_lettered", rejected.reason).inc()
        source = rejected.source
        log.info("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, rejected.reason)

    async def handle(
        self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord,
        *, counted: bool = False,
    ) -> None:
        """Process one record of contract topic ``topic``; never raises (but for cancellation).
        ``counted``: the record was already counted as input (forwarded by the pre-filter).

        Bad input is dead-lettered with its contract reason; anything that raises while
        deciding about the record dead-letters it as ``processing_error`` (with the
        exception's type), so one odd record can neither stop the agent nor vanish."""
        self.in_flight[topic] = time.monotonic()
        try:
            await self._handle(topic, key, value, source, counted)
        except Exception as exc:  # one record must never take the agent down
            self._pending = None
            rejected = DeadLetter("processing_error", f"{type(exc).__name__}: {exc}", source, key, value)
            log.error("processing %s[%d]@%d raised %s; dead-lettered", source.topic, source.partition,
                      source.offset, type(exc).__name__)
            log.debug("processing error", exc_info=True)
            self.count_rejected(topic, rejected)
            await self.publisher.dead_letter(rejected)
        finally:
            self.in_flight.pop(topic, None)

    def oldest_in_flight(self) -> float | None:
        """When (monotonic) the longest-running record still being handled started, if any."""
        return min(self.in_flight.values(), default=None)

    async def _handle(self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord,
                      counted: bool) -> None:
        if self.count_inputs and not counted:
            self._last_input[topic].set_to_current_time()
        try:
            event = self.decoder.decode(topic, key, value, source.timestamp_ms)
        except RejectedInput as exc:
            rejected = DeadLetter(exc.reason, exc.detail, source, key, value)
            self.count_rejected(topic, rejected)
            await self.publisher.dead_letter(rejected)
            return
        if not counted:
            self.stats.accepted[topic] += 1
            if self.count_inputs:
                self._accepted[topic].inc()
        record_ts = source.timestamp_ms or 0
        if topic == REVIEW_VERDICTS:
            assert isinstance(event, ReviewVerdict)
            await self._deliver(self._review(event, source.partition, record_ts))
            return
        if topic == TIMERS:
            assert isinstance(event, TimerTick)
            await self._deliver(self._tick(event))
            return
        decisions = self._process(topic, event, record_ts, source.partition)
        if decisions:
            await self.publisher.publish_many(decisions)
            for decision in decisions:
                self._observe_sent(decision)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await self._deliver(pending)

    async def _deliver(self, outcome: ReviewOutcome | None) -> None:
        """Publish what the review loop decided: decisions, reports, bank proposals."""
        if outcome is None:
            return
        if outcome.decisions:
            await self.publisher.publish_many(outcome.decisions)
            for decision in outcome.decisions:
                self._observe_sent(decision)
        for report, preservation in zip(outcome.reports, outcome.preservations, strict=True):
            await self.publisher.publish_report(report, preservation)
            self.metrics.reports.labels(str(report.record["incident_type"])).inc()
        if outcome.proposals:
            await self.publisher.propose_entries(outcome.proposals)
        if outcome.outcome in VERDICT_OUTCOMES:
            self.metrics.review_verdicts.labels(outcome.outcome).inc()
        if outcome.false_positive:
            self.metrics.false_positives.labels(outcome.false_positive).inc()
        if outcome.sla_breach:
            self.metrics.sla_breaches.labels(outcome.sla_breach).inc()

    def _review(self, verdict: ReviewVerdict, partition: int, record_ts: int) -> ReviewOutcome:
        state = self._state(verdict.stream_id)
        incident = Incident.from_record(self.incidents.get(verdict.stream_id))
        incident = replace(incident, partition=partition)
        outcome = apply_verdict(self.policies.live, state, incident, verdict.stream_id,
                                Verdict(verdict.verdict, verdict.category, verdict.reviewer_id, verdict.ts_ms,
                                        verdict.escalation_id),
                                record_ts, self.review, verdict.propose_hashes)
        self._store(verdict.stream_id, state, outcome.state, incident, outcome.incident)
        return outcome

    def _tick(self, tick: TimerTick) -> ReviewOutcome | None:
        if tick.kind == "expire":
            self.expire(tick.stream_id, tick.due_ms)
            return None
        incident = Incident.from_record(self.incidents.get(tick.stream_id))
        escalation = incident.escalation(tick.escalation_id or "")
        if escalation is None or escalation.status != "open":
            return None  # reviewed (or superseded) since the tick was sent
        state = self._state(tick.stream_id)
        outcome = miss_deadline(self.policies.live, state, incident, tick.stream_id, escalation, self.review)
        self._store(tick.stream_id, state, outcome.state, incident, outcome.incident)
        return outcome

    def _store(self, stream_id: str, state_before: StreamState, state: StreamState, incident_before: Incident,
               incident: Incident) -> None:
        if state != state_before:
            self.states[stream_id] = state.to_record()
            self.metrics.state_writes.inc()
        if incident != incident_before:
            self.incidents[stream_id] = incident.to_record()

    # -- review deadlines and state lifecycle (driven by a timer, executed via ticks) --

    def due_ticks(self, now_ms: int, ended_ttl_ms: int, inactive_ttl_ms: int) -> list[tuple[TimerTick, int]]:
        """Ticks to send now: overdue escalations, and streams whose state may go."""
        ticks: list[tuple[TimerTick, int]] = []
        for stream_id, record in list(self.incidents.items()):
            incident = Incident.from_record(record)
            for escalation in incident.overdue(now_ms):
                ticks.append((TimerTick(stream_id, "sla_check", escalation.due_ms or now_ms,
                                        escalation.decision_id), incident.partition))
        for stream_id, record in list(self.states.items()):
            ended, last = record.get("en"), record.get("t", 0)
            expiry = ended + ended_ttl_ms if ended is not None else last + inactive_ttl_ms
            if expiry <= now_ms:
                partition = record.get("pt")
                if partition is not None:
                    ticks.append((TimerTick(stream_id, "expire", expiry), partition))
        return ticks

    def expire(self, stream_id: str, due_ms: int) -> bool:
        """Release an ended or idle stream's state, unless an open escalation still needs it."""
        record = self.states.get(stream_id)
        if record is None:
            return False
        incident = Incident.from_record(self.incidents.get(stream_id))
        if not incident.settled:
            return False
        del self.states[stream_id]
        if stream_id in self.incidents:
            del self.incidents[stream_id]
        return True

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

    def _process(self, topic: str, event: Any, record_ts_ms: int, partition: int = 0) -> list[Decision]:
        """Synchronous on purpose: read, update and write state with no await in between."""
        matches: list[Match] = []
        frame_hashes: dict[int, dict[str, str]] = {}
        if topic == FRAME_HASHES:
            assert isinstance(event, FrameBatch)
            # Nearly every frame matches nothing: match before touching state.
            matches = self.frame_matches(event)
            if not matches:
                return []
            for m in matches:
                self.metrics.hash_matches.labels(m.bank, m.signal_type).inc()
            stored = self._state(event.stream_id)
            observed = self._observe_matches(stored, matches)
            at_ms = max(m.frame_ts_ms for m in matches)
            frame_hashes = {f.seq: {k: v for k, v in (("pdq", f.pdq), ("md5", f.md5), ("sha256", f.sha256))
                                    if v} for f in event.frames}
        elif topic == CLASSIFIER_SIGNALS:
            assert isinstance(event, ClassifierSignal)
            stored = self._state(event.stream_id)
            ref = event.evidence_ref
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
        if stored.partition != partition:
            observed = replace(observed, partition=partition)
        # judged at the event's own time: input topics are consumed independently, so
        # another topic's newer events may already be in the state
        state, decisions = decide(self.policies.live, observed, event.stream_id, at_ms, record_ts_ms)
        for shadow in self.policies.shadows.values():
            state, shadow_decisions = decide(shadow, state, event.stream_id, at_ms, record_ts_ms,
                                             shadow=True)
            decisions += shadow_decisions
        self._record_incident(event, state, decisions, matches, frame_hashes, partition, record_ts_ms)
        if state.differs_materially(stored, self.policies.live.fusion):
            record = state.to_record()
            self.states[event.stream_id] = record
            self.stats.state_writes += 1
            self.metrics.state_writes.inc()
            self.metrics.state_bytes.observe(len(orjson.dumps(record)))
        for d in decisions:
            (self.stats.shadow_decided if d.shadow else self.stats.decided)[d.action] += 1
        return list(decisions)

    def _record_incident(self, event: Any, state: StreamState, decisions: tuple[Decision, ...],
                         matches: list[Match], frame_hashes: dict[int, dict[str, str]], partition: int,
                         record_ts_ms: int) -> None:
        """Keep what a report would need; make the policy's report decisions into reports."""
        live = [d for d in decisions if not d.shadow]
        fusion = self.policies.live.fusion
        signal_evidence = (isinstance(event, ClassifierSignal)
                           and fusion.classifier(event.classifier).strength(event.score) > 0)
        stored = self.incidents.get(event.stream_id)
        if not (live or matches or (signal_evidence and stored is not None)):
            return
        before = Incident.from_record(stored)
        incident = before.with_matches(matches, frame_hashes, partition) if matches else before
        if isinstance(event, ClassifierSignal) and signal_evidence:
            ref = event.evidence_ref
            incident = incident.with_classifier(event.classifier, event.score, event.ts_ms, ref)
        incident = incident.with_decisions(live, partition)
        reports = next((d for d in live if d.action == "report"), None)
        if reports is not None:
            incident, packets, preservations = report_if_due(
                event.stream_id, state, incident, trigger="policy", category=None,
                at_ms=reports.decided_at_ms, config=self.review)
            if packets:
                self._pending = ReviewOutcome(state, incident, "policy_report", reports=packets,
                                              preservations=preservations)
        if incident != before:
            self.incidents[event.stream_id] = incident.to_record()

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
