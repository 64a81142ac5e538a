"""``streamsafe bank sync hma``: HMA's banks mirrored into ``hashbank.entries``.

Each poll reads what changed in HMA's PostgreSQL (:mod:`.source`), turns it into entry
publications and tombstones (:mod:`.state`), sends them, and only then writes the checkpoint
file: a crash re-reads from the last checkpoint and re-sends what it had (same keys, same
values: harmless on a compacted topic). Entries carry HMA's own ``create_time`` as
``added_ms``, so the bank-age alert sees when HMA got the hash, not when the sync ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamsafe import clients
from streamsafe.control.broadcast import assign_whole_topic, stop_consumer
from streamsafe.control.signing import signer_for
from streamsafe.events.bank_entries import bank_entry_document, check_bank_name, encode_bank_removal
from streamsafe.events.contract import HASHBANK_ENTRIES
from streamsafe.integrations.hma.mapping import HMA_SIGNAL_TYPES, BankMapping
from streamsafe.integrations.hma.source import HmaSnapshot, connect
from streamsafe.integrations.hma.state import SyncState
from streamsafe.settings import Settings

__all__ = ["HmaSync", "PollReport", "SyncMetrics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncMetrics:
    registry: CollectorRegistry
    published: Counter
    removed: Counter
    failures: Counter
    entries: Gauge
    last_success: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> SyncMetrics:
        r = registry or CollectorRegistry()
        failures = Counter("streamsafe_hma_sync_failures", "failed sync polls, by what failed", ["stage"], registry=r)
        for stage in ("hma", "broker"):
            failures.labels(stage)
        return cls(r, Counter("streamsafe_hma_sync_published", "entries published from HMA", registry=r),
                   Counter("streamsafe_hma_sync_removed", "entries removed (deleted or disabled in HMA)", registry=r),
                   failures,
                   Gauge("streamsafe_hma_sync_entries", "live entries mirrored from HMA", registry=r),
                   Gauge("streamsafe_hma_sync_last_success_timestamp_seconds",
                         "when a poll last completed (HMA read and broker write)", registry=r))


@dataclass(frozen=True)
class PollReport:
    new_rows: int
    dropped_rows: int
    disabled: int
    enabled: int
    published: int
    removed: int


class HmaSync:
    def __init__(self, settings: Settings, dsn: str, mapping: BankMapping, checkpoint: Path,
                 metrics: SyncMetrics | None = None) -> None:
        for mapped in mapping.banks:
            check_bank_name(mapped.bank)
        self.settings = settings
        self.signer = signer_for(settings.signing_key_file, "bank entries from HMA")  # fail at start, not at a poll
        self.dsn = dsn
        self.mapping = mapping
        self.checkpoint = checkpoint
        self.metrics = metrics or SyncMetrics.create()
        #: without a checkpoint, the first poll also removes entries an earlier sync published
        #: that HMA no longer has (deleted while the checkpoint was lost)
        self._reconcile = not checkpoint.exists()
        self.state = self._load()
        self._conn: psycopg.AsyncConnection | None = None
        self._producer: AIOKafkaProducer | None = None

    def _load(self) -> SyncState:
        if not self.checkpoint.exists():
            return SyncState(self.mapping)
        state = SyncState.from_doc(orjson.loads(self.checkpoint.read_bytes()), self.mapping)
        log.info("HMA sync checkpoint %s: %d rows, %d disabled, %d live entries", self.checkpoint,
                 len(state.rows), len(state.disabled), len(state.entries))
        return state

    def _save(self) -> None:
        """Write the checkpoint atomically (a crash leaves the old or the new one, never half)."""
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds hash values
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(self.state.to_doc()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.checkpoint)

    async def _read_hma(self) -> tuple[int, int, int, int]:
        if self._conn is None or self._conn.closed:
            self._conn = await connect(self.dsn)
        state = self.state
        async with self._conn.transaction():
            snap = HmaSnapshot(self._conn, self.mapping.hma_banks, list(HMA_SIGNAL_TYPES))
            went, came = state.set_disabled(await snap.disabled())  # before rows: a disabled item never shows
            rows, newest = await snap.rows_since(state.cursor)
            new = state.add_rows(rows)
            dropped = 0
            theirs, mine = await snap.totals(), state.bank_totals()
            for bank in self.mapping.hma_banks:
                if theirs.get(bank, (0, 0)) == mine.get(bank, (0, 0)):
                    continue
                keys, known = await snap.keys_of(bank), state.keys_of(bank)
                dropped += state.drop_rows(known - keys)
                missing = sorted({content_id for content_id, _ in keys - known})
                if missing:  # committed after a poll that had already read past their time
                    new += state.add_rows(await snap.rows_of(bank, missing))
            state.cursor = newest
        return new, dropped, went, came

    async def _published_by_sync(self) -> set[str]:
        """Entry ids live on the topic that a sync of these HMA banks published."""
        sources = {f"hma:{b}"[:128] for b in self.mapping.hma_banks}
        consumer = clients.consumer(self.settings)
        await clients.start(consumer)
        live: dict[bytes, bool] = {}
        try:
            partitions = await assign_whole_topic(consumer, self.settings.topic_name(HASHBANK_ENTRIES))
            end = await consumer.end_offsets(partitions)
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=50_000)).values():
                    for record in records:
                        try:
                            doc = orjson.loads(record.value) if record.value is not None else {}
                            live[record.key] = doc.get("source") in sources and not doc.get("removed")
                        except (orjson.JSONDecodeError, AttributeError):
                            live[record.key] = False
        finally:
            await stop_consumer(consumer)
        return {key.decode(errors="replace") for key, ours in live.items() if ours and key}

    async def _send(self) -> tuple[int, int]:
        changes = self.state.changes
        if not changes:
            return 0, 0
        if self._producer is None:
            self._producer = await clients.start(clients.producer(self.settings, linger_ms=20))
        topic = self.settings.topic_name(HASHBANK_ENTRIES)
        sign = self.signer.sign_bytes
        sends = [await self._producer.send(topic, sign(HASHBANK_ENTRIES, entry_id.encode(),
                                                       bank_entry_document(entry, source, entry.added_ms or 0)),
                                           key=entry_id.encode())
                 for entry_id, (entry, source) in changes.publish.items()]
        removed_ms = int(time.time() * 1000)
        sends += [await self._producer.send(topic, sign(HASHBANK_ENTRIES, entry_id.encode(),
                                                        encode_bank_removal(removed_ms, "hma")),
                                            key=entry_id.encode()) for entry_id in changes.remove]
        await asyncio.gather(*sends)
        published, removed = len(changes.publish), len(changes.remove)
        changes.clear()
        return published, removed

    async def poll(self) -> PollReport:
        """One poll: read HMA, send the changes, write the checkpoint."""
        try:
            new, dropped, went, came = await self._read_hma()
        except (psycopg.Error, OSError):
            self.metrics.failures.labels("hma").inc()
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            raise
        try:
            if self._reconcile:
                stale = await self._published_by_sync() - self.state.entries.keys()
                if stale:
                    log.info("removing %d entries an earlier HMA sync published that HMA no longer has", len(stale))
                self.state.changes.remove |= stale
            published, removed = await self._send()
            self._reconcile = False
        except Exception:
            self.metrics.failures.labels("broker").inc()  # the changes stay pending for the next poll
            raise
        if new or dropped or went or came or published or removed or not self.checkpoint.exists():
            self._save()
        self.metrics.published.inc(published)
        self.metrics.removed.inc(removed)
        self.metrics.entries.set(len(self.state.entries))
        self.metrics.last_success.set(time.time())
        return PollReport(new, dropped, went, came, published, removed)

    async def follow(self, interval_s: float, on_poll: Any = None) -> None:
        """Poll until cancelled; a failed poll (HMA or broker away) is logged, counted and retried."""
        while True:
            started = time.monotonic()
            try:
                report = await self.poll()
                if on_poll is not None:
                    on_poll(report)
            except Exception as exc:  # a long-running service: HMA or the broker away is retried
                log.warning("HMA sync poll failed (%s: %s); retrying in %.1f s", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "", interval_s)
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._producer is not None:
            await self._producer.stop()
