"""The processing clock: what "now" is for review deadlines and state expiry.

A worker normally runs on the wall clock. A replay runs on record time
(``STREAMSAFE_CLOCK=records``): "now" is the newest broker timestamp the worker has
read, so a recording's deadlines fall due and its streams expire in the recording's
own timeline, whenever and however fast it is replayed.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["CLOCKS", "ProcessingClock", "RecordClock", "WallClock", "clock_named"]


class ProcessingClock(Protocol):
    def now_ms(self) -> int: ...

    def observe(self, record_ts_ms: int | None) -> None:
        """A record with this broker timestamp was read."""
        ...


class WallClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def observe(self, record_ts_ms: int | None) -> None:
        return None


class RecordClock:
    """The newest record timestamp read so far (0 before the first)."""

    def __init__(self) -> None:
        self._now = 0

    def now_ms(self) -> int:
        return self._now

    def observe(self, record_ts_ms: int | None) -> None:
        if record_ts_ms is not None and record_ts_ms > self._now:
            self._now = record_ts_ms


CLOCKS = {"wall": WallClock, "records": RecordClock}


def clock_named(name: str) -> ProcessingClock:
    return CLOCKS[name]()
