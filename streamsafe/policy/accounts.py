"""The policy's ``accounts`` section: what an account's history across streams does.

    accounts:
      retention: 30d               # anything kept about an account is forgotten after this
      repeat_broadcaster:          # null: off
        window: 30d
        priority: {authority-hash-strong: P0, default: P1}
        restrict: [chat, gifting, discovery, new_viewers]
      viewer_grooming:             # null: off
        classifiers: [grooming_text]
        min_score: 0.8
        min_streams: 3
        window: 24h
        priority: P1
        restrict: [chat]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from streamsafe.policy.model import PRIORITIES, RESTRICTIONS, AccountPolicy, RepeatBroadcaster, ViewerGrooming

__all__ = ["account_policy"]

MAX_RETENTION_S = 365 * 86400.0


class _Problems(Protocol):
    def add(self, where: str, what: str) -> None: ...
    def duration(self, where: str, value: Any, default: float, most_s: float = ...) -> float: ...
    def number(self, where: str, value: Any, default: float, low: float, high: float) -> float: ...
    def integer(self, where: str, value: Any, default: int, low: int, high: int) -> int: ...


def account_policy(p: _Problems, doc: Any) -> AccountPolicy:
    """The section (absent: the defaults of :class:`AccountPolicy`)."""
    if doc is None:
        return AccountPolicy()
    if not isinstance(doc, Mapping) or set(doc) - {"retention", "repeat_broadcaster", "viewer_grooming"}:
        p.add("accounts", "must be a mapping of retention, repeat_broadcaster, viewer_grooming")
        return AccountPolicy()
    retention = p.duration("accounts.retention", doc.get("retention"), AccountPolicy().retention_s, MAX_RETENTION_S)
    repeat = _repeat(p, doc["repeat_broadcaster"]) if "repeat_broadcaster" in doc else RepeatBroadcaster()
    grooming = _grooming(p, doc["viewer_grooming"]) if "viewer_grooming" in doc else ViewerGrooming()
    for where, window in (("repeat_broadcaster", repeat and repeat.window_s),
                          ("viewer_grooming", grooming and grooming.window_s)):
        if window and window > retention:
            p.add(f"accounts.{where}.window", "must not be longer than accounts.retention (state is gone by then)")
    return AccountPolicy(retention, repeat, grooming)


def _restrictions(p: _Problems, where: str, value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(r in RESTRICTIONS for r in value):
        p.add(where, f"must list restrictions of {RESTRICTIONS}")
        return default
    return tuple(value)


def _priority(p: _Problems, where: str, value: Any, default: str) -> str:
    if value is None:
        return default
    if value not in PRIORITIES:
        p.add(where, f"must be one of {PRIORITIES}")
        return default
    return str(value)


def _repeat(p: _Problems, doc: Any) -> RepeatBroadcaster | None:
    if doc is None:
        return None
    where = "accounts.repeat_broadcaster"
    if not isinstance(doc, Mapping) or set(doc) - {"window", "priority", "restrict"}:
        p.add(where, "must be a mapping of window, priority, restrict (or null: off)")
        return RepeatBroadcaster()
    priorities = doc.get("priority", {"default": "P1"})
    if isinstance(priorities, str):
        priorities = {"default": priorities}
    if not isinstance(priorities, Mapping):
        p.add(f"{where}.priority", "must be a priority or map rule names (and default) to priorities")
        priorities = {"default": "P1"}
    by_rule = {str(rule): _priority(p, f"{where}.priority.{rule}", value, "P1") for rule, value in priorities.items()}
    return RepeatBroadcaster(p.duration(f"{where}.window", doc.get("window"), RepeatBroadcaster().window_s,
                                        MAX_RETENTION_S), by_rule,
                             _restrictions(p, f"{where}.restrict", doc.get("restrict"),
                                           RepeatBroadcaster().restrictions))


def _grooming(p: _Problems, doc: Any) -> ViewerGrooming | None:
    if doc is None:
        return None
    where = "accounts.viewer_grooming"
    known = {"classifiers", "min_score", "min_streams", "window", "priority", "restrict"}
    if not isinstance(doc, Mapping) or set(doc) - known:
        p.add(where, f"must be a mapping of {sorted(known)} (or null: off)")
        return ViewerGrooming()
    classifiers = doc.get("classifiers", ["grooming_text"])
    if not isinstance(classifiers, list) or not classifiers or not all(isinstance(c, str) for c in classifiers):
        p.add(f"{where}.classifiers", "must list classifier names")
        classifiers = ["grooming_text"]
    return ViewerGrooming(
        frozenset(classifiers),
        p.number(f"{where}.min_score", doc.get("min_score"), ViewerGrooming().min_score, 0, 1),
        p.integer(f"{where}.min_streams", doc.get("min_streams"), ViewerGrooming().min_streams, 2, 1000),
        p.duration(f"{where}.window", doc.get("window"), ViewerGrooming().window_s, MAX_RETENTION_S),
        _priority(p, f"{where}.priority", doc.get("priority"), ViewerGrooming().priority),
        _restrictions(p, f"{where}.restrict", doc.get("restrict"), ViewerGrooming().restrictions),
    )
