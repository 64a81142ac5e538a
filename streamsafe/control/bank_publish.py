"""Publish bank entries to ``hashbank.entries`` and read bank sizes back from it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamsafe import clients
from streamsafe.control.broadcast import assign_whole_topic, stop_consumer
from streamsafe.control.signing import SigningKey, signer_for, signer_of
from streamsafe.events.bank_entries import bank_entry_document, check_bank_name, encode_bank_removal
from streamsafe.events.contract import HASHBANK_ENTRIES
from streamsafe.events.models import BankEntry
from streamsafe.settings import Settings

__all__ = ["bank_sizes", "entry_content", "live_entries", "publish_entries", "remove_entries"]


async def _producer(settings: Settings) -> AIOKafkaProducer:
    producer = clients.producer(settings, linger_ms=20, max_batch_size=512 * 1024)
    await clients.start(producer)
    return producer


async def publish_entries(settings: Settings, entries: Iterable[BankEntry], source: str | None = None,
                          on_sent: Callable[[int], None] | None = None, signer: SigningKey | None = None) -> int:
    """Publish entries, each signed with ``signer`` (default: the settings' signing key file)."""
    signer = signer or signer_for(settings.signing_key_file, "bank entries")
    producer = await _producer(settings)
    topic = settings.topic_name(HASHBANK_ENTRIES)
    now = int(time.time() * 1000)
    sent = 0
    pending = []
    checked: set[str] = set()
    try:
        for entry in entries:
            if entry.bank not in checked:  # a name workers would dead-letter is refused, not published
                check_bank_name(entry.bank)
                checked.add(entry.bank)
            key = entry.entry_id.encode()
            value = signer.sign_bytes(HASHBANK_ENTRIES, key, bank_entry_document(entry, source, now))
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                if on_sent:
                    on_sent(sent)
        await asyncio.gather(*pending)
        if on_sent:
            on_sent(sent)
    finally:
        await producer.stop()
    return sent


async def remove_entries(settings: Settings, entry_ids: Iterable[str], source: str | None = None,
                         signer: SigningKey | None = None) -> int:
    """Publish a signed removal of each entry (a tombstone cannot be signed, and workers refuse one)."""
    signer = signer or signer_for(settings.signing_key_file, "bank removals")
    producer = await _producer(settings)
    count = 0
    try:
        for entry_id in entry_ids:
            key = entry_id.encode()
            value = signer.sign_bytes(HASHBANK_ENTRIES, key, encode_bank_removal(int(time.time() * 1000), source))
            await producer.send_and_wait(settings.topic_name(HASHBANK_ENTRIES), value, key=key)
            count += 1
    finally:
        await producer.stop()
    return count


async def _latest(settings: Settings, value_of: Callable[[dict[str, Any]], Any]) -> dict[bytes, Any]:
    """The live value of every key of the whole topic, as ``value_of(record)`` makes it (None:
    removed, or corrupt -- workers dead-letter those)."""
    consumer = clients.consumer(settings)
    await clients.start(consumer)
    try:
        partitions = await assign_whole_topic(consumer, settings.topic_name(HASHBANK_ENTRIES))
        end = await consumer.end_offsets(partitions)
        latest: dict[bytes, Any] = {}
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        latest[record.key] = None
                        continue
                    try:
                        latest[record.key] = value_of(orjson.loads(record.value))
                    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                        latest[record.key] = None
        return latest
    finally:
        await stop_consumer(consumer)


async def bank_sizes(settings: Settings) -> dict[tuple[str, str], int]:
    """Live entries per (bank, signal type), read from the whole topic."""
    latest = await _latest(settings, lambda doc: (str(doc["bank"]), str(doc["signal_type"])))
    return dict(Counter(v for v in latest.values() if v is not None))


def entry_content(entry: BankEntry) -> tuple[str, str, str, str | None, int | None]:
    """What makes two entries the same entry (not when or by whom they were published)."""
    return entry.bank, entry.signal_type, entry.hash, entry.label, entry.quality


async def live_entries(settings: Settings, bank: str) -> dict[bytes, tuple[Any, ...]]:
    """The content of every live entry of ``bank`` on the topic and the key id that signed it, by
    record key: an import skips what is there unchanged and signed by its key, so a re-import neither
    resends it nor makes the bank look fresh (and one with a new key re-signs every entry)."""
    def content(doc: dict[str, Any]) -> tuple[Any, ...] | None:
        if doc.get("removed") or doc["bank"] != bank:
            return None
        return doc["bank"], doc["signal_type"], doc["hash"], doc.get("label"), doc.get("quality"), signer_of(doc)

    return {key: value for key, value in (await _latest(settings, content)).items() if value is not None}
