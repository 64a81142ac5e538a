"""Reading ``enforcement.statements`` back: every statement on the topic, and the JSON lines
``streamsafe statements export`` writes (one per distinct statement, checked against the contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import fastjsonschema
import orjson
from aiokafka import TopicPartition

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.errors import ContractError, StreamSafeError
from streamsafe.events.contract import STATEMENTS, load_contract
from streamsafe.settings import Settings

__all__ = ["export_lines", "read_statements"]


def export_lines(records: Iterable[dict[str, Any]], envelope: bool = False) -> Iterator[str]:
    """One JSON line per distinct statement (by statement_id, first seen), each checked against
    the contract: the bare submission, or with ``envelope`` the whole topic record. A record the
    contract rejects raises :class:`~streamsafe.errors.ContractError` naming it."""
    validate = fastjsonschema.compile(dict(load_contract()[STATEMENTS].schema))
    seen: set[str] = set()
    for record in records:
        try:
            validate(record)
        except fastjsonschema.JsonSchemaException as exc:
            which = record.get("statement_id") if isinstance(record, dict) else None
            raise ContractError(f"statement {which!r} breaks the contract: {exc.message}") from None
        if record["statement_id"] in seen:
            continue  # a re-delivered decision's statement: the same one again
        seen.add(record["statement_id"])
        yield orjson.dumps(record if envelope else record["statement"]).decode()


async def read_statements(settings: Settings, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every record on the statements topic now, read from the start to the end offsets."""
    topic = settings.topic_name(STATEMENTS)
    partitions = [TopicPartition(topic, p) for p in range(load_contract()[STATEMENTS].partitions)]
    consumer = await clients.start(clients.consumer(settings))
    records: list[dict[str, Any]] = []
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining:
            if loop.time() > deadline:
                raise StreamSafeError(f"could not read {topic} to its end within {timeout_s:.0f}s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                records.extend(orjson.loads(m.value) for m in messages if m.offset < ends[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await stop_consumer(consumer)
    records.sort(key=lambda r: (r["decided_at_ms"], r["stream_id"], r["statement_id"]))
    return records
