"""Apply policies published on the ``streamsafe.policy`` control topic: signed by a trusted
key (:mod:`.signing`) and valid, or refused to the dead-letter topic."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import fastjsonschema
from aiokafka import ConsumerRecord

from streamsafe.control.records import LIVE_KEY, MAX_POLICY_BYTES, SHADOW_PREFIX, check_policy_record
from streamsafe.control.signing import TrustedKeys
from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import POLICY, TopicSpec
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.policy.policyset import PolicySet

__all__ = ["LIVE_KEY", "MAX_POLICY_BYTES", "SHADOW_PREFIX", "PolicyControl"]


class PolicyControl:
    """Turns control records into a new :class:`PolicySet`, refusing unsigned or invalid ones."""

    def __init__(self, spec: TopicSpec, get: Callable[[], PolicySet], put: Callable[[PolicySet], None],
                 publisher: DecisionPublisher, metrics: StreamSafeMetrics | None = None,
                 trusted: TrustedKeys | None = None) -> None:
        self.metrics = metrics
        self._validate = fastjsonschema.compile(dict(spec.schema))
        self._get = get
        self._put = put
        self._publisher = publisher
        self.trusted = trusted if trusted is not None else TrustedKeys({})
        self.log = logging.getLogger(__name__)
        self.refused = 0

    async def apply(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply records in order; each refused one is dead-lettered and the rest go on."""
        for record in records:
            try:
                change = check_policy_record(self._validate, self.trusted, record.key, record.value)
            except RejectedInput as exc:
                await self._refuse(record, exc)
                continue
            current = self._get()
            if change.shadow is None:
                assert change.policy is not None
                self._put(current.with_live(change.policy))
            else:
                self._put(current.with_shadow(change.shadow, change.policy))
            self.log.info("policy %s %s (signed by key %s)", change.key,
                          change.policy.version if change.policy else "retired", change.key_id)

    async def _refuse(self, record: ConsumerRecord, exc: RejectedInput) -> None:
        self.refused += 1
        if self.metrics is not None:
            self.metrics.policies_refused.inc()
            self.metrics.control_refused.labels(POLICY, exc.reason).inc()
        self.log.error("refused policy at %s[%d]@%d (%s): %s; the policy in force stays",
                       record.topic, record.partition, record.offset, exc.reason, exc.detail)
        source = SourceRecord(record.topic, record.partition, record.offset, record.timestamp)
        await self._publisher.dead_letter(DeadLetter(exc.reason, exc.detail, source, record.key, record.value))
