"""Forward ``enforcement.escalations`` to Coop's report API, losing none and repeating none.

* Its own consumer group (``<app id>-reviewer-tool-coop`` from the CLI unless told), through
  :mod:`streamsafe.clients`; an offset is committed only after Coop answered the escalation
  with 2xx (the contract's ``201 {reportId}``) and the ledger holds it, so Coop being down
  delays escalations and loses none.
* A failed attempt (connection error, timeout, 429, 5xx, 401/403) seeks the partition back to
  the escalation and waits a back-off (doubling from ``backoff_s`` up to ``max_backoff_s``)
  before the next poll; the escalation is never skipped. After ``warn_after`` failed attempts
  each further one is logged as an error, so a wrong API key or a long outage pages someone.
* A report Coop refuses as invalid (400, 404, 422) would be refused forever: it goes to the
  dead-letter topic with Coop's answer as the detail (the mapping file is the usual cause),
  and is counted ``rejected``. An escalation that breaks the contract is dead-lettered too.
* An escalation already in the :class:`~streamsafe.integrations.coop.ledger.ForwardedLedger`
  is skipped (``duplicate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import fastjsonschema
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streamsafe import clients
from streamsafe.events.contract import DEAD_LETTER, ESCALATIONS, load_contract
from streamsafe.events.dead_letter import DeadLetter, SourceRecord
from streamsafe.integrations.coop.ledger import Forwarded, ForwardedLedger
from streamsafe.integrations.coop.mapping import CoopMapping
from streamsafe.integrations.coop.metrics import CoopMetrics
from streamsafe.integrations.coop.reports import report_body
from streamsafe.settings import Settings

__all__ = ["CoopClient", "CoopRejected", "CoopUnavailable", "Forwarder", "ForwarderConfig"]

log = logging.getLogger(__name__)

REPORT_PATH = "/api/v1/report"
_PERMANENT = (400, 404, 409, 413, 422)


class CoopUnavailable(Exception):
    """Coop did not take the report this time (down, slow, throttled, key refused): retry."""


class CoopRejected(Exception):
    """Coop refused the report as invalid: sending it again cannot help."""


class CoopClient:
    """Coop's report API. The API key goes in ``X-API-KEY`` and nowhere else (never logged)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0) -> None:
        self.url = base_url.rstrip("/") + REPORT_PATH
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CoopClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_report(self, body: dict[str, Any]) -> str | None:
        """Coop's ``reportId`` for ``body``; raises :class:`CoopUnavailable` or :class:`CoopRejected`."""
        assert self._session is not None, "use CoopClient as an async context manager"
        headers = {"X-API-KEY": self._api_key, "Content-Type": "application/json"}
        try:
            async with self._session.post(self.url, data=orjson.dumps(body), headers=headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CoopUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300:
            try:
                answer = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                answer = {}
            report_id = answer.get("reportId") if isinstance(answer, dict) else None
            return str(report_id) if report_id is not None else None
        if status in _PERMANENT:
            raise CoopRejected(f"Coop answered {status}: {text[:800]}")
        raise CoopUnavailable(f"Coop answered {status}")


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    group_id: str = "streamsafe-reviewer-tool-coop"
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    warn_after: int = 5


class Forwarder:
    def __init__(self, settings: Settings, mapping: CoopMapping, coop: CoopClient, metrics: CoopMetrics,
                 config: ForwarderConfig | None = None) -> None:
        self.settings = settings
        self.mapping = mapping
        self.coop = coop
        self.metrics = metrics
        self.config = config or ForwarderConfig()
        self.ledger = ForwardedLedger(settings, metrics.ledger)
        self.topic = settings.topic_name(ESCALATIONS)
        self._validate = fastjsonschema.compile(dict(load_contract()[ESCALATIONS].schema))
        self._failures = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set."""
        settings = await clients.resolve_idempotence(self.settings)
        await self.ledger.start()
        producer = await clients.start(clients.producer(settings))
        consumer = await clients.start(clients.consumer(settings, self.topic, group_id=self.config.group_id,
                                                        max_poll_interval_ms=600_000))
        self._consumer, self._producer = consumer, producer
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=100)
                if batch:
                    self.metrics.pending.set(sum(len(r) for r in batch.values()))
                failed = False
                for tp, records in batch.items():
                    failed |= not await self._forward_partition(tp, records)
                if failed:
                    delay = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** min(self._failures - 1, 16))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        finally:
            await consumer.stop()
            await producer.stop()
            await self.ledger.stop()

    async def _forward_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> bool:
        """Forward ``records`` in order, committing each; on a failure, seek back to it and say so."""
        assert self._consumer is not None
        for record in records:
            if not await self._forward(record):
                self._consumer.seek(tp, record.offset)
                return False
            try:
                await self._consumer.commit({tp: record.offset + 1})
            except KafkaError as exc:  # a rebalance took the partition: its new owner finds the ledger entry
                log.warning("could not commit %s at %d (%s); a re-delivery will be skipped as a duplicate",
                            tp, record.offset + 1, type(exc).__name__)
                return True
            self.metrics.pending.dec()
        return True

    async def _forward(self, record: ConsumerRecord) -> bool:
        """True once the escalation is settled (forwarded, duplicate, or dead-lettered)."""
        try:
            escalation = orjson.loads(record.value) if record.value is not None else None
            self._validate(escalation)
        except (orjson.JSONDecodeError, fastjsonschema.JsonSchemaException) as exc:
            await self._dead_letter(record, "schema_violation", f"not a valid escalation: {exc}")
            self.metrics.escalations.labels("invalid").inc()
            return True
        escalation_id = escalation["decision_id"]
        if self.ledger.get(escalation_id) is not None:
            log.info("escalation %s was already forwarded to Coop: not sent again", escalation_id)
            self.metrics.escalations.labels("duplicate").inc()
            return True
        try:
            report_id = await self.coop.post_report(report_body(escalation, self.mapping))
        except CoopUnavailable as exc:
            self._failures += 1
            self.metrics.escalations.labels("failed").inc()
            level = logging.ERROR if self._failures > self.config.warn_after else logging.WARNING
            log.log(level, "Coop did not take escalation %s (attempt %d): %s; retrying", escalation_id,
                    self._failures, exc)
            return False
        except CoopRejected as exc:
            self._failures = 0
            log.error("Coop refused escalation %s as invalid; dead-lettered: %s", escalation_id, exc)
            await self._dead_letter(record, "processing_error", f"Coop refused the report: {exc}")
            self.metrics.escalations.labels("rejected").inc()
            return True
        self._failures = 0
        assert self._producer is not None
        await self.ledger.record(self._producer, Forwarded(
            escalation_id, escalation["stream_id"], escalation["priority"], report_id, int(time.time() * 1000),
            escalation["decided_at_ms"]))
        self.metrics.escalations.labels("forwarded").inc()
        log.info("escalation %s (%s) forwarded to Coop", escalation_id, escalation["priority"])
        return True

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        assert self._producer is not None
        letter = DeadLetter(reason, detail, SourceRecord(record.topic, record.partition, record.offset,
                                                         record.timestamp), record.key, record.value)
        await self._producer.send_and_wait(self.settings.topic_name(DEAD_LETTER), letter.encode(),
                                           key=record.topic.encode())
