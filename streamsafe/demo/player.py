"""Send scenario events to a broker with aiokafka, stamping event times at send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer

from streamsafe import clients
from streamsafe.demo.scenario import ScenarioEvent, stamp
from streamsafe.settings import Settings

__all__ = ["open_producer", "play"]


async def open_producer(settings: Settings, **extra: object) -> AIOKafkaProducer:
    producer = clients.producer(settings, acks=1, linger_ms=2, max_request_size=1_048_576, **extra)
    await clients.start(producer)
    return producer


async def play(
    producer: AIOKafkaProducer,
    settings: Settings,
    events: Iterable[ScenarioEvent],
    rate_per_s: float | None = None,
) -> int:
    """Send every event (paced to ``rate_per_s`` if given); returns how many were sent."""
    sent = 0
    started = time.monotonic()
    pending = []
    for event in events:
        if rate_per_s:
            due = started + sent / rate_per_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        value = stamp(event.value, int(time.time() * 1000))
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        pending.append(await producer.send(settings.topic_name(event.topic), payload, key=event.key))
        sent += 1
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return sent
