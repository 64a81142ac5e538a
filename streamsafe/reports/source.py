"""Report packets from the broker: the whole ``enforcement.reports`` topic as it stands
when the read starts (up to the end offsets seen then), through the one client factory."""

from __future__ import annotations

from typing import Any

from streamsafe import clients
from streamsafe.control.broadcast import assign_whole_topic, stop_consumer
from streamsafe.events.contract import REPORTS
from streamsafe.reports.cybertip import UnmappableReport, packet_from_json
from streamsafe.settings import Settings

__all__ = ["read_report_topic"]


async def read_report_topic(settings: Settings) -> list[tuple[str, Any]]:
    """(where, packet or an :class:`UnmappableReport`) for every record, in partition order."""
    consumer = clients.consumer(settings)
    await clients.start(consumer)
    try:
        partitions = await assign_whole_topic(consumer, settings.topic_name(REPORTS))
        end = await consumer.end_offsets(partitions)
        packets: list[tuple[str, Any]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in sorted(batch.items()):
                for record in records:
                    if record.offset >= end[tp]:
                        continue  # written after the read began: the next export takes it
                    where = f"{tp.topic}[{tp.partition}]@{record.offset}"
                    try:
                        packets.append((where, packet_from_json(record.value or b"")))
                    except UnmappableReport as exc:
                        packets.append((where, exc))
        return packets
    finally:
        await stop_consumer(consumer)
