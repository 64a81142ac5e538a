"""CPU time from /proc, for the benchmarks: a process's, and the whole host's.

The latency runs share a 2-core host between the broker, the sender and the process under
test, so how busy the host was while they ran belongs beside their percentiles.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")  # USER_HZ: the unit of /proc's CPU times


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of every core so far, in USER_HZ ticks (idle and iowait are not busy)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the host's CPU time that was busy between two :func:`host_jiffies`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None
