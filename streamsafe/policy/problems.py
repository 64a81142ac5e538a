"""How a policy's sections are checked: every problem collected, with where it is, so a
policy is refused once, with all of them (see :mod:`streamsafe.policy.loader`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DURATION_S", "MAX_WINDOW_S", "OPERATORS", "Problems", "parse_duration"]

OPERATORS = ("gte", "gt", "lte", "lt", "eq")  # a rule's comparisons
MAX_DURATION_S = 30 * 86400.0
MAX_WINDOW_S = 86400.0

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Problems:
    """The problems found so far, and the checks that add to them (each returns the
    value to go on with: the default where the document's was refused)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def duration(self, where: str, value: Any, default: float, most_s: float = MAX_DURATION_S) -> float:
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.add(where, str(exc))
            return default
        if not 0 < seconds <= most_s:
            self.add(where, f"must be positive and at most {most_s:.0f} s")
            return default
        return seconds

    def number(self, where: str, value: Any, default: float, low: float, high: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.add(where, f"must be a number, got {value!r}")
            return default
        if not low <= value <= high:
            self.add(where, f"must be in {low:g}..{high:g}, got {value!r}")
            return default
        return float(value)

    def integer(self, where: str, value: Any, default: int, low: int, high: int) -> int:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.add(where, f"must be an integer, got {value!r}")
            return default
        return int(self.number(where, value, default, low, high))

    def known_keys(self, where: str, doc: Mapping[str, Any], keys: set[str]) -> None:
        """Every key of ``doc`` is one of ``keys`` (a misspelt key would be silently ignored)."""
        unknown = set(doc) - keys
        if unknown:
            self.add(where, f"unknown keys {sorted(unknown)}")

    def mapping(self, where: str, value: Any) -> Mapping[str, Any]:
        """A section that must be a mapping (absent or null: empty)."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(where, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value
