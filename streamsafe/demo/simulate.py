"""`streamsafe simulate`: synthetic traffic at a chosen rate to any broker."""

from __future__ import annotations

import itertools
import time

from streamsafe.demo.player import open_producer, play
from streamsafe.demo.scenario import build_demo_scenario
from streamsafe.settings import Settings

__all__ = ["run_simulation"]


async def run_simulation(
    settings: Settings, streams: int, rate: float, count: int, seed: int
) -> tuple[int, float]:
    """Send ``count`` messages from ``streams`` concurrent streams; returns (sent, seconds)."""
    scenario = build_demo_scenario(seed=seed, benign=max(streams - 4, 1), frames_per_stream=30)
    events = itertools.islice(itertools.cycle(scenario.events), count)
    producer = await open_producer(settings)
    started = time.monotonic()
    try:
        sent = await play(producer, settings, events, rate_per_s=rate or None)
    finally:
        await producer.stop()
    return sent, time.monotonic() - started
