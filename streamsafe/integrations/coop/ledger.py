"""The record of escalations already forwarded to Coop: a compacted topic, keyed by escalation id.

Coop's report API has no idempotency key, and the forwarder commits an escalation's offset
only after Coop answered, so a crash or rebalance between the answer and the commit
re-delivers escalations Coop already has. The forwarder writes each escalation's id here
(with Coop's ``reportId``) before it commits, and skips ids it finds, so a re-delivered
or re-emitted escalation is reported once. A topic rather than a local file, because a
partition of ``enforcement.escalations`` moves between forwarder hosts on a rebalance and
the record must move with it; compacted (one record per escalation) and also deleted after
the escalations topic's own retention, when no re-delivery can come any more.
``coop serve`` reads it too: a callback names a stream, and this record tells which
escalation of that stream StreamSafe sent to Coop.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import Gauge

from streamsafe.brokers.topics import apply_topics
from streamsafe.control.broadcast import BroadcastReader
from streamsafe.errors import BrokerError
from streamsafe.events.contract import load_contract
from streamsafe.settings import Settings

__all__ = ["LEDGER_TOPIC", "Forwarded", "ForwardedLedger"]

LEDGER_TOPIC = "streamsafe.coop-reports"
_PER_STREAM = 24


@dataclass(frozen=True, slots=True)
class Forwarded:
    escalation_id: str
    stream_id: str
    priority: str
    report_id: str | None
    forwarded_at_ms: int
    decided_at_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"schema_version": 1, "escalation_id": self.escalation_id, "stream_id": self.stream_id,
                             "priority": self.priority, "report_id": self.report_id,
                             "forwarded_at_ms": self.forwarded_at_ms, "decided_at_ms": self.decided_at_ms})

    @classmethod
    def decode(cls, value: bytes) -> Forwarded:
        raw = orjson.loads(value)
        return cls(str(raw["escalation_id"]), str(raw["stream_id"]), str(raw["priority"]), raw.get("report_id"),
                   int(raw["forwarded_at_ms"]), int(raw["decided_at_ms"]))


class ForwardedLedger:
    """Every forwarded escalation, read whole from the ledger topic and followed."""

    def __init__(self, settings: Settings, size: Gauge | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic_name(LEDGER_TOPIC)
        self._by_id: dict[str, Forwarded] = {}
        self._by_stream: dict[str, list[tuple[int, str]]] = {}
        self._reader = BroadcastReader(settings, self.topic, self._apply)
        if size is not None:
            size.set_function(lambda: len(self._by_id))

    async def start(self, timeout_s: float = 60.0) -> None:
        await apply_topics(self.settings, {LEDGER_TOPIC: load_contract()[LEDGER_TOPIC]})
        await self._reader.start()
        try:
            await asyncio.wait_for(self._reader.caught_up.wait(), timeout_s)
        except TimeoutError as exc:
            await self._reader.stop()
            raise BrokerError(f"could not read {self.topic} within {timeout_s:.0f}s") from exc

    async def stop(self) -> None:
        await self._reader.stop()

    async def _apply(self, records: Sequence[ConsumerRecord]) -> None:
        for record in records:
            if record.value is not None:
                self.add(Forwarded.decode(record.value))

    def add(self, forwarded: Forwarded) -> None:
        if forwarded.escalation_id in self._by_id:
            return
        self._by_id[forwarded.escalation_id] = forwarded
        times = self._by_stream.setdefault(forwarded.stream_id, [])
        bisect.insort(times, (forwarded.decided_at_ms, forwarded.escalation_id))
        del times[:-_PER_STREAM]

    async def record(self, producer: AIOKafkaProducer, forwarded: Forwarded) -> None:
        """Write ``forwarded`` to the topic (acknowledged by every in-sync replica), then remember it."""
        await producer.send_and_wait(self.topic, forwarded.encode(), key=forwarded.escalation_id.encode())
        self.add(forwarded)

    def get(self, escalation_id: str) -> Forwarded | None:
        return self._by_id.get(escalation_id)

    def latest_for(self, stream_id: str, at_ms: int) -> Forwarded | None:
        """The stream's latest escalation decided at or before ``at_ms`` that went to Coop."""
        times = self._by_stream.get(stream_id) or []
        i = bisect.bisect_right(times, (at_ms, "\uffff"))
        return self._by_id[times[i - 1][1]] if i else None

    def __len__(self) -> int:
        return len(self._by_id)
