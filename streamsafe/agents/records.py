"""The imperative shell around :func:`~streamsafe.pipeline.step.step`: one record in,
its outcome written and published. Free of Faust, so unit tests drive it directly.

For each record: decode it (or screen it, for frames), read the stream's state and
incident, ``step``, write what the outcome names -- all without an ``await`` -- then
publish its decisions, report packets, bank proposals and dead letters, and count
it. Anything that raises on the way dead-letters the record as ``processing_error``:
one odd record can neither stop the agent nor vanish.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streamsafe.accounts.feed import account_signals
from streamsafe.agents.clock import ProcessingClock, WallClock
from streamsafe.agents.verdicts import audited_verdict, verify_verdict
from streamsafe.control.signing import TrustedKeys
from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    ACCOUNT_SIGNALS,
    FRAME_HASHES,
    INPUT_TOPICS,
    REVIEW_APPEALS,
    REVIEW_VERDICTS,
    TIMERS,
)
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.decode import InputDecoder, decode_frame_matches
from streamsafe.events.models import FrameMatches, ReviewVerdict, TimerTick
from streamsafe.matching.banks import HashBanks
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.pipeline.outcome import EMPTY, Outcome
from streamsafe.pipeline.review import ReviewConfig
from streamsafe.pipeline.screen import FrameScreen, Screened, processing_error
from streamsafe.pipeline.statements import with_statements
from streamsafe.pipeline.step import Lifecycle, StepContext, StepEvent, expiry_ms, step
from streamsafe.policy.decisions import Decision
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.incident import Incident
from streamsafe.scoring.state import StreamState

__all__ = ["RecordHandler", "RecordStats"]

VERDICT_OUTCOMES = {"confirmed", "benign", "needs_more_context", "unknown_escalation", "already_closed", "upheld",
                    "reversed", "not_an_appeal", "nothing_to_reinstate"}
APPEAL_OUTCOMES = {"appeal_opened", "duplicate_appeal", "appeal_merged"}

log = logging.getLogger(__name__)


@dataclass
class RecordStats:
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)
    shadow_decided: Counter[str] = field(default_factory=Counter)
    state_writes: int = 0


class RecordHandler:
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
        lifecycle: Lifecycle | None = None,
        clock: ProcessingClock | None = None,
        trusted_verdicts: TrustedKeys | None = None,
        worker: str = "streamsafe",
    ) -> None:
        #: the review tool's keys: a verdict signed by none of them is refused
        self.trusted_verdicts = trusted_verdicts if trusted_verdicts is not None else TrustedKeys({})
        self.worker = worker  # names this worker in audit records
        self.incidents = incidents if incidents is not None else {}
        self.review = review or ReviewConfig()
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock or WallClock()
        self.metrics = metrics or StreamSafeMetrics.create()
        topics = self.counted_topics = (*INPUT_TOPICS, REVIEW_APPEALS, REVIEW_VERDICTS, TIMERS, ACCOUNT_SIGNALS,
                                        ACCOUNT_FINDINGS)
        self._accepted = {t: self.metrics.input_messages.labels(t, "accepted", "") for t in topics}
        self._last_input = {t: self.metrics.last_input.labels(t) for t in topics}
        self.decoder = decoder
        self.banks = banks
        self.screen = FrameScreen(decoder, banks, lambda: self.policies.live)
        self.policies = policies
        self.use_policies(policies)
        self.states = states
        self.publisher = publisher
        self.stats = RecordStats()
        self.count_inputs = True  # per-record metrics; off only to measure what they cost
        self.input_topic_names: set[str] = set()  # broker-side names, for lag
        self.in_flight: dict[str, float] = {}  # topic -> when its record in hand started (monotonic)
        #: true for a forwarded match already stepped on in this process (``agents/inprocess.py``)
        self.skip_forwarded: Callable[[SourceRecord], bool] | None = None

    def use_policies(self, policies: PolicySet) -> None:
        """Switch policies (hot reload); the live policy also sets how banks match."""
        self.policies = policies
        live = policies.live
        self.banks.pdq_radius = live.pdq_radius
        self.banks.pdq_min_quality = live.pdq_min_quality
        self.banks.bank_radius = dict(live.bank_radius)

    # -- counting -------------------------------------------------------------------

    def note_arrival(self, topic: str) -> None:
        """An input record (or a batch of them) arrived now, accepted or not."""
        if self.count_inputs:
            self._last_input[topic].set_to_current_time()

    def count_input(self, topic: str) -> None:
        """Count an accepted input record."""
        self.stats.accepted[topic] += 1
        if self.count_inputs:
            self._accepted[topic].inc()

    def count_allow(self, screened: Screened) -> None:
        """Count what allow banks did to a screened frame-hash record (see ``pipeline/screen.py``)."""
        if screened.allow_cleared:
            self.metrics.allow_effects.labels("cleared").inc(screened.allow_cleared)
        if screened.allow_overruled:
            self.metrics.allow_effects.labels("overruled").inc(screened.allow_overruled)
            log.warning("an allow bank matched a frame that also strongly matched an authority bank: the "
                        "authority match stands (policy matching.allow_clears_authority); check the allow bank")

    def count_rejected(self, topic: str, rejected: DeadLetter) -> None:
        """Count (and log, without content) an input record on its way to the dead-letter topic."""
        self.stats.rejected[rejected.reason] += 1
        self.metrics.input_messages.labels(topic, "dead_lettered", rejected.reason).inc()
        source = rejected.source
        log.info("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, rejected.reason)

    def oldest_in_flight(self) -> float | None:
        """When (monotonic) the longest-running record still being handled started, if any."""
        return min(self.in_flight.values(), default=None)

    def oldest_delivery(self) -> float | None:
        """When (monotonic) the oldest record sent and not yet acknowledged was sent, if any."""
        return self.publisher.oldest_delivery()

    # -- records --------------------------------------------------------------------

    async def handle(self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord) -> None:
        """One record of contract topic ``topic`` (frames: screened here, the agent-only path)."""
        self.in_flight[topic] = time.monotonic()
        try:
            if topic != TIMERS:  # a tick carries the sweep's send time, not the input's
                self.clock.observe(source.timestamp_ms)
            outcome = self._decoded(topic, key, value, source)
            if outcome is not EMPTY:
                await self.publish(outcome, topic)
        except Exception as exc:  # one record must never take the agent down
            await self._failed(exc, topic, key, value, source)
        finally:
            self.in_flight.pop(topic, None)

    async def handle_forwarded(self, key: bytes | None, value: bytes | None, fallback: SourceRecord) -> None:
        """A ``streamsafe.frame-matches`` record: frames the pre-filter already decoded,
        matched and counted; its source is the original frame-hash record."""
        try:
            screened, source = decode_frame_matches(value)
        except RejectedInput as exc:
            rejected = DeadLetter(exc.reason, exc.detail, fallback, key, value)
            self.count_rejected(FRAME_HASHES, rejected)
            await self.publisher.dead_letter(rejected)
            return
        if self.skip_forwarded is not None and self.skip_forwarded(source):
            return  # the pre-filter already stepped on it in this process (``agents/inprocess.py``)
        self.in_flight[FRAME_HASHES] = time.monotonic()
        try:
            await self.publish(self.apply_matches(screened, source), FRAME_HASHES)
        except Exception as exc:  # one record must never take the agent down
            await self._failed(exc, FRAME_HASHES, key, value, source)
        finally:
            self.in_flight.pop(FRAME_HASHES, None)

    def apply_matches(self, screened: FrameMatches, source: SourceRecord) -> Outcome:
        """Step on a screened frame-hash record's matches (from its forward, or in the
        pre-filter's process): the same clock reading and step either way."""
        self.clock.observe(source.timestamp_ms)
        return self.apply(screened, source)

    async def publish_applied(self, outcome: Outcome, key: bytes | None, value: bytes | None,
                              source: SourceRecord) -> None:
        """Publish what a frame-hash record's match decided when it was stepped on outside
        :meth:`handle` (the pre-filter's in-process matches); a failure dead-letters the record."""
        try:
            await self.publish(outcome, FRAME_HASHES)
        except Exception as exc:  # one record must never take the pre-filter down
            await self._failed(exc, FRAME_HASHES, key, value, source)

    async def _failed(self, exc: Exception, topic: str, key: bytes | None, value: bytes | None,
                      source: SourceRecord) -> None:
        rejected = processing_error(exc, key, value, source)
        self.count_rejected(topic, rejected)
        await self.publisher.dead_letter(rejected)

    def _decoded(self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord) -> Outcome:
        self.note_arrival(topic)
        if topic == FRAME_HASHES:
            screened = self.screen.screen_one(key, value, source)
            if screened.dead_letter is not None:
                return Outcome(dead_letters=(screened.dead_letter,))
            self.count_input(topic)
            self.count_allow(screened)
            return self.apply(screened.matches, source) if screened.matches is not None else EMPTY
        try:
            # ticks are sent by StreamSafe to the partition that holds the stream's state
            event = self.decoder.decode(topic, key, value, source.timestamp_ms,
                                        None if topic == TIMERS else source.partition)
        except RejectedInput as exc:
            return Outcome(dead_letters=(DeadLetter(exc.reason, exc.detail, source, key, value),))
        if isinstance(event, ReviewVerdict):  # a control record: a valid one must also be signed
            signer, refused = verify_verdict(self.trusted_verdicts, key, value, source, self.worker)
            if refused is not None:
                return refused
            outcome = audited_verdict(self.apply(event, source), event, key, value, source, signer, self.worker)
            if not outcome.dead_letters:  # one naming no open escalation is counted as dead-lettered
                self.count_input(topic)
            return outcome
        self.count_input(topic)
        assert not isinstance(event, FrameMatches)
        return self.apply(event, source)  # type: ignore[arg-type]

    def apply(self, event: StepEvent, source: SourceRecord) -> Outcome:
        """Read, step, write: synchronous on purpose (no await between the read and the write)."""
        stream_id = event.stream_id
        stored_state = self.states.get(stream_id)
        state = StreamState.from_record(stored_state) if stored_state is not None else None
        read: list[Incident | None] = []  # the incident, once the step asked for it

        def incident() -> Incident | None:
            if not read:
                stored = self.incidents.get(stream_id)
                read.append(Incident.from_record(stored) if stored is not None else None)
            return read[0]

        ctx = StepContext(self.policies, source.timestamp_ms or 0, source.partition, self.clock.now_ms(),
                          self.review, self.lifecycle)
        outcome = with_statements(step(event, state, incident, ctx), ctx.policies.live, state, incident)
        if outcome.release:
            self.states.pop(stream_id, None)
            self.incidents.pop(stream_id, None)
            return outcome
        if outcome.state is not None and outcome.state != state:
            record = outcome.state.to_record()
            self.states[stream_id] = record
            self.stats.state_writes += 1
            self.metrics.state_writes.inc()
            self.metrics.state_bytes.observe(len(orjson.dumps(record)))
        if outcome.incident is not None and outcome.incident != incident():
            self.incidents[stream_id] = outcome.incident.to_record()
        signals = account_signals(event, outcome.state or state, outcome.decisions, ctx.policies.live,
                                  ctx.record_ts_ms)
        if signals:  # after any the step sent itself (``pipeline/step.py``: a block made before them)
            outcome = replace(outcome, account_signals=outcome.account_signals + signals)
        for m in outcome.matches:
            self.metrics.hash_matches.labels(m.bank, m.signal_type).inc()
        for d in outcome.decisions:
            (self.stats.shadow_decided if d.shadow else self.stats.decided)[d.action] += 1
        return outcome

    async def publish(self, outcome: Outcome, topic: str = "") -> None:
        """Send what an outcome carries, in order, each acknowledged; then count it. Account signals
        go first: a block's signal is on its account's partition before the block is published, so
        a stream the broadcaster starts after it is weighed with it."""
        if outcome.account_signals:
            await self.publisher.send_account_signals(outcome.account_signals)
        for rejected in outcome.dead_letters:
            self.count_rejected(topic, rejected)
            if topic == REVIEW_VERDICTS:
                self.metrics.control_refused.labels(topic, rejected.reason).inc()
            await self.publisher.dead_letter(rejected)
        if outcome.audit:
            await self.publisher.audit(outcome.audit)
        if outcome.decisions:
            await self.publisher.publish_many(outcome.decisions)
            for decision in outcome.decisions:
                self._observe_sent(decision)
        if outcome.statements:
            await self.publisher.publish_statements(outcome.statements)
        for report, preservation in outcome.reports:
            await self.publisher.publish_report(report, preservation)
            if "revision" not in report.record:  # a report sent again, completed, is one report
                self.metrics.reports.labels(str(report.record["incident_type"])).inc()
        if outcome.proposals:
            await self.publisher.propose_entries(outcome.proposals)
        if outcome.review in VERDICT_OUTCOMES:
            self.metrics.review_verdicts.labels(outcome.review).inc()
        elif outcome.review in APPEAL_OUTCOMES:
            self.metrics.appeals.labels(outcome.review).inc()
        if outcome.false_positive:
            self.metrics.false_positives.labels(outcome.false_positive).inc()
        if outcome.sla_breach:
            self.metrics.sla_breaches.labels(outcome.sla_breach).inc()

    def _observe_sent(self, decision: Decision) -> None:
        now = time.time()
        if decision.shadow:
            self.metrics.shadow_decisions.labels(decision.policy_version, decision.action).inc()
            return
        self.metrics.decisions.labels(decision.action, decision.priority or "").inc()
        self.metrics.event_to_decision.labels(decision.action).observe(max(0.0, now - decision.event_ts_ms / 1000))
        self.metrics.record_to_decision.labels(decision.action).observe(
            max(0.0, now - decision.decided_at_ms / 1000))
        log.debug("decision %s %s for stream %s by rule %s", decision.decision_id, decision.action,
                  decision.stream_id, decision.rule)

    # -- review deadlines and state lifecycle (found by a timer, carried out by ticks) --

    def due_ticks(self, now_ms: int | None = None) -> list[tuple[TimerTick, int]]:
        """Ticks to send now (processing clock): overdue escalations, and streams whose state may go."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        ticks: list[tuple[TimerTick, int]] = []
        for stream_id, record in list(self.incidents.items()):
            incident = Incident.from_record(record)
            for escalation in incident.overdue(now):
                ticks.append((TimerTick(stream_id, "sla_check", escalation.due_ms or now, escalation.decision_id),
                              incident.partition))
        for stream_id, record in list(self.states.items()):
            touched, ended, partition = StreamState.lifecycle_of(record)
            due = expiry_ms(touched, ended, self.lifecycle)
            if due <= now and partition is not None:
                ticks.append((TimerTick(stream_id, "expire", due), partition))
        return ticks
