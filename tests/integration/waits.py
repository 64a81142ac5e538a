"""Waiting on what a worker has done, never on a fixed sleep: its metrics and its group's
committed offsets. A worker reads each topic on its own, in no fixed order across topics, so
a test that needs record A handled before record B (on another topic) waits for A first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamsafe.brokers.offsets import GroupOffsets, end_offsets

__all__ = ["metric", "processed", "wait_for_metric"]


async def metric(worker: Any, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on ``worker``'s /metrics whose labels include ``labels``
    (0 when there are none)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker.http_port}/metrics") as r:
        text = await r.text()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


async def wait_for_metric(worker: Any, name: str, predicate: Callable[[float], bool], timeout_s: float = 30.0,
                          **labels: str) -> float:
    """Until ``predicate`` holds for :func:`metric`; its value then."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await metric(worker, name, **labels)
        if predicate(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} = {value} after {timeout_s} s")


async def processed(pipeline: Any, topic: str, timeout_s: float = 60.0) -> None:
    """Until the workers' group has committed every record now on ``topic``."""
    name = pipeline.topic(topic)
    partitions = pipeline.contract[topic].partitions
    ends = await end_offsets(pipeline.settings, (TopicPartition(name, p) for p in range(partitions)))
    deadline = time.monotonic() + timeout_s
    async with GroupOffsets(pipeline.settings, pipeline.settings.app_id) as offsets:
        while time.monotonic() < deadline:
            committed = await offsets.committed(ends)
            if all(committed[tp] >= end for tp, end in ends.items()):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{topic} not processed within {timeout_s} s")
