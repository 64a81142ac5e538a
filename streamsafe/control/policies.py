"""Apply policies published on the ``streamsafe.policy`` control topic."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import fastjsonschema
import orjson
from aiokafka import ConsumerRecord

from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.errors import PolicyError
from streamsafe.events.contract import TopicSpec
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.policy.loader import policy_from_mapping
from streamsafe.policy.policyset import PolicySet

__all__ = ["LIVE_KEY", "SHADOW_PREFIX", "PolicyControl"]

LIVE_KEY = "live"
SHADOW_PREFIX = "shadow/"
#: a policy document is a few KiB; anything near the broker's 1 MB limit is not a policy
MAX_POLICY_BYTES = 256 * 1024


class PolicyControl:
    """Turns control records into a new :class:`PolicySet`, refusing invalid ones."""

    def __init__(self, spec: TopicSpec, get: Callable[[], PolicySet], put: Callable[[PolicySet], None],
                 publisher: DecisionPublisher, metrics: StreamSafeMetrics | None = None) -> None:
        self.metrics = metrics
        self._validate = fastjsonschema.compile(dict(spec.schema))
        self._get = get
        self._put = put
        self._publisher = publisher
        self.log = logging.getLogger(__name__)
        self.refused = 0

    async def apply(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply records in order; each invalid one is dead-lettered and the rest go on."""
        for record in records:
            reason = "invalid_policy"
            if record.value is not None and len(record.value) > MAX_POLICY_BYTES:
                reason, problem = "oversized", f"{len(record.value)} bytes exceeds {MAX_POLICY_BYTES}"
            else:
                try:
                    problem = self._apply_one(record)
                except Exception as exc:  # whatever a malformed document raises, the next record goes on
                    problem = f"{type(exc).__name__}: {exc}"
            if problem is not None:
                self.refused += 1
                if self.metrics is not None:
                    self.metrics.policies_refused.inc()
                self.log.error("refused policy at %s[%d]@%d: %s; the policy in force stays",
                               record.topic, record.partition, record.offset, problem)
                source = SourceRecord(record.topic, record.partition, record.offset, record.timestamp)
                await self._publisher.dead_letter(DeadLetter(reason, problem, source, record.key, record.value))

    def _apply_one(self, record: ConsumerRecord) -> str | None:
        key = (record.key or b"").decode(errors="replace")
        if key != LIVE_KEY and not key.startswith(SHADOW_PREFIX):
            return f"key must be {LIVE_KEY!r} or '{SHADOW_PREFIX}<name>', got {key!r}"
        if record.value is None:
            if key == LIVE_KEY:
                return "the live policy cannot be deleted, only replaced"
            self._put(self._get().with_shadow(key[len(SHADOW_PREFIX):], None))
            return None
        try:
            document = orjson.loads(record.value)
            self._validate(document)
            policy = policy_from_mapping(document["policy"])
        except (orjson.JSONDecodeError, fastjsonschema.JsonSchemaException, PolicyError) as exc:
            return str(getattr(exc, "message", exc))
        current = self._get()
        if key == LIVE_KEY:
            self._put(current.with_live(policy))
        else:
            self._put(current.with_shadow(key[len(SHADOW_PREFIX):], policy))
        return None
