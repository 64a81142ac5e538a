"""Helpers for tests of who gets the event loop when: a stepping clock and a turn counter."""

from __future__ import annotations

import asyncio
from typing import Any


class StepClock:
    """Each reading is ``step`` seconds after the one before: each record "costs" a step."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class LoopTurns:
    """Counts the event loop's turns while the block runs: a task beside it takes one a turn
    (``count`` starts at 0 on entry)."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        self.count = 0
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
