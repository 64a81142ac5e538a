"""``streamsafe hma writeback``: hashes StreamSafe's reviewers confirmed, written to an HMA bank.

It follows ``hashbank.entries`` as a consumer group and takes the entries the review loop
proposes (``source: reviewer``, in the ``internal-confirmed`` bank): those are the matched
frames' PDQs of a confirmed escalation, already decided by the worker (unknown or closed
escalations, benign verdicts and hashes that came from that bank are sorted out there), so the
write-back repeats none of that logic. Offsets are committed only after HMA acknowledged every
entry up to them: HMA down delays a write-back, a crash re-delivers it, nothing is lost.

HMA does not deduplicate (posting one hash twice makes two content items), so each entry is
looked up first (``/m/raw_lookup`` at distance 0, then the content's bank and signal), and a
batch is committed once HMA matches what it wrote: a re-delivered entry then finds itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.control.records import check_bank_record
from streamsafe.control.signing import BAD_SIGNATURE, TrustedKeys
from streamsafe.errors import RejectedInput
from streamsafe.events.contract import HASHBANK_ENTRIES
from streamsafe.events.models import BankEntry
from streamsafe.integrations.hma.client import HmaClient, HmaRefused, HmaUnavailable
from streamsafe.pipeline.review import CONFIRMED_BANK
from streamsafe.settings import Settings

__all__ = ["HmaWriteback", "WritebackMetrics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WritebackMetrics:
    registry: CollectorRegistry
    written: Counter
    already: Counter
    failures: Counter
    pending: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WritebackMetrics:
        r = registry or CollectorRegistry()
        failures = Counter("streamsafe_hma_writeback_failures", "write-back attempts that failed, by reason "
                           "(unavailable: retried; refused, invalid, bad_signature: skipped)", ["reason"], registry=r)
        for reason in ("unavailable", "refused", "invalid", "bad_signature"):
            failures.labels(reason)
        return cls(r, Counter("streamsafe_hma_writeback_written", "confirmed hashes added to HMA", registry=r),
                   Counter("streamsafe_hma_writeback_already_present",
                           "confirmed hashes HMA's bank already held (re-deliveries)", registry=r),
                   failures,
                   Gauge("streamsafe_hma_writeback_pending", "hashbank.entries records not yet handled "
                         "(written to HMA or skipped) and committed", registry=r))


class HmaWriteback:
    def __init__(self, settings: Settings, client: HmaClient, hma_bank: str, *, group_id: str,
                 from_bank: str = CONFIRMED_BANK, metrics: WritebackMetrics | None = None,
                 retry_s: float = 2.0, matchable_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.client = client
        self.hma_bank = hma_bank
        self.from_bank = from_bank
        self.group_id = group_id
        self.metrics = metrics or WritebackMetrics.create()
        self.retry_s = retry_s
        self.matchable_timeout_s = matchable_timeout_s
        # only hashes the workers themselves took (signed by a trusted key) go on to HMA
        self.trusted = TrustedKeys.load(settings.trusted_control_keys)
        self._consumer: AIOKafkaConsumer | None = None

    def wanted(self, record: ConsumerRecord) -> BankEntry | None:
        """The reviewer-confirmed PDQ a record carries, if it is one (anything else is not ours)."""
        if record.value is None:
            return None
        try:
            entry = check_bank_record(self.trusted, record.key, record.value).entry
        except RejectedInput as exc:  # workers dead-letter it with its reason; here it is only counted
            self.metrics.failures.labels("bad_signature" if exc.reason == BAD_SIGNATURE else "invalid").inc()
            return None
        if entry is None:  # a removal
            return None
        source = _source_of(record.value)
        if entry.bank != self.from_bank or entry.signal_type != "pdq" or source != "reviewer":
            return None
        return entry

    async def write(self, entry: BankEntry) -> tuple[int, bool]:
        """(HMA content id, whether it was added now) -- HmaUnavailable when HMA cannot take it."""
        existing = await self.client.find_in_bank(self.hma_bank, "pdq", entry.hash)
        if existing is not None:
            self.metrics.already.inc()
            return existing, False
        note = f"StreamSafe reviewer-confirmed: {entry.label or entry.entry_id}"
        content_id = await self.client.add_signal(self.hma_bank, "pdq", entry.hash, note)
        self.metrics.written.inc()
        log.info("wrote a reviewer-confirmed PDQ (entry %s) to HMA bank %s as content %d",
                 entry.entry_id, self.hma_bank, content_id)
        return content_id, True

    async def _wait_matchable(self, written: list[tuple[BankEntry, int]]) -> None:
        deadline = time.monotonic() + self.matchable_timeout_s
        waiting = list(written)
        while waiting and time.monotonic() < deadline:
            still = []
            for entry, content_id in waiting:
                try:
                    if content_id not in await self.client.exact_matches("pdq", entry.hash):
                        still.append((entry, content_id))
                except HmaUnavailable:
                    still.append((entry, content_id))
            waiting = still
            if waiting:
                await asyncio.sleep(0.5)
        if waiting:
            log.warning("%d written hashes not matchable in HMA after %.0f s; committing anyway (HMA has them)",
                        len(waiting), self.matchable_timeout_s)

    async def handle_batch(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                           records: list[ConsumerRecord]) -> bool:
        """Write a partition's batch; commit what HMA took. False when HMA was unavailable
        (the consumer is sought back to the first record not written)."""
        done: int | None = None
        written: list[tuple[BankEntry, int]] = []
        ok = True
        for record in records:
            entry = self.wanted(record)
            if entry is not None:
                try:
                    content_id, added = await self.write(entry)
                    if added:
                        written.append((entry, content_id))
                except HmaRefused as exc:
                    self.metrics.failures.labels("refused").inc()
                    log.error("HMA refused entry %s for good, skipped: %s", entry.entry_id, exc)
                except HmaUnavailable as exc:
                    self.metrics.failures.labels("unavailable").inc()
                    log.warning("HMA unavailable (%s); retrying in %.1f s", exc, self.retry_s)
                    consumer.seek(tp, record.offset)
                    ok = False
                    break
            done = record.offset + 1
        if written:
            await self._wait_matchable(written)
        if done is not None:
            await consumer.commit({tp: OffsetAndMetadata(done, "")})
        return ok

    async def _update_pending(self, consumer: AIOKafkaConsumer) -> None:
        pending = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            committed = await consumer.committed(tp)
            if high is not None:
                pending += max(0, high - (committed or 0))
        self.metrics.pending.set(pending)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        topic = self.settings.topic_name(HASHBANK_ENTRIES)
        consumer = clients.consumer(self.settings, topic, group_id=self.group_id, max_poll_records=100)
        await clients.start(consumer)
        try:
            while stop is None or not stop.is_set():
                batch = await consumer.getmany(timeout_ms=1000)
                healthy = True
                for tp, records in batch.items():
                    healthy = await self.handle_batch(consumer, tp, records) and healthy
                await self._update_pending(consumer)
                if not healthy:
                    await asyncio.sleep(self.retry_s)
        finally:
            await stop_consumer(consumer)
            await self.client.close()


def _source_of(value: bytes) -> str | None:
    import orjson

    source = orjson.loads(value).get("source")
    return source if isinstance(source, str) else None
