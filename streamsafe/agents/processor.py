"""The per-record path shared by every agent, free of Faust so it runs in unit tests.

decode (contract) -> match / decide (pure policy) -> write state only if it
changed -> publish decisions. Bad input becomes a dead-letter record.

State is read, decided on and written back without an ``await`` in between, so
two agents handling the same stream cannot interleave a read-modify-write.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, USER_REPORTS
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import ClassifierSignal, FrameBatch, StreamMetadata, UserReport
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.foundation import FoundationPolicy, Outcome
from streamsafe.scoring.state import StreamState

__all__ = ["StreamProcessor"]

log = logging.getLogger(__name__)


class StreamProcessor:
    def __init__(
        self,
        decoder: InputDecoder,
        banks: HashBanks,
        policy: FoundationPolicy,
        states: MutableMapping[str, Any],
        publisher: DecisionPublisher,
    ) -> None:
        self.decoder = decoder
        self.banks = banks
        self.policy = policy
        self.states = states
        self.publisher = publisher
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.decided: Counter[str] = Counter()

    async def handle(
        self, topic: str, key: bytes | None, value: bytes | None, source: SourceRecord
    ) -> None:
        """Process one record of contract topic ``topic``; never raises on bad input."""
        try:
            event = self.decoder.decode(topic, key, value)
        except RejectedInput as exc:
            self.rejected[exc.reason] += 1
            log.info("dead-lettered %s[%d]@%d: %s", source.topic, source.partition,
                     source.offset, exc.reason)
            await self.publisher.dead_letter(DeadLetter(exc.reason, exc.detail, source, key, value))
            return
        self.accepted[topic] += 1
        outcome = self._decide(topic, event, source)
        if outcome is None:
            return
        if outcome.state_changed:
            self.states[event.stream_id] = outcome.state.to_record()
        for decision in outcome.decisions:
            self.decided[decision.action] += 1
            await self.publisher.publish(decision)

    def _decide(self, topic: str, event: Any, source: SourceRecord) -> Outcome | None:
        record_ts = source.timestamp_ms or 0
        if topic == FRAME_HASHES:
            assert isinstance(event, FrameBatch)
            # Nearly every frame matches nothing: match before touching state.
            matches = [m for frame in event.frames for m in self.banks.match_frame(frame)]
            if not matches:
                return None
            state = self._state(event.stream_id)
            return self.policy.decide_matches(state, event.stream_id, matches, record_ts)
        if topic == CLASSIFIER_SIGNALS:
            assert isinstance(event, ClassifierSignal)
            if not self.policy.escalates(event):
                return None
            return self.policy.decide_signal(self._state(event.stream_id), event, record_ts)
        if topic == METADATA:
            assert isinstance(event, StreamMetadata)
            return self.policy.decide_metadata(self._state(event.stream_id), event)
        if topic == USER_REPORTS:
            assert isinstance(event, UserReport)
            return self.policy.decide_report(self._state(event.stream_id), event)
        raise ValueError(f"not an input topic: {topic}")

    def _state(self, stream_id: str) -> StreamState:
        return StreamState.from_record(self.states.get(stream_id))
