"""The records a transparency report is computed from, gathered by topic and
de-duplicated the way their consumers de-duplicate them (decisions on ``decision_id``,
reports on ``report_id``, preservation requests on ``preservation_id``, appeals on
``appeal_id``, dead letters on the input record they came from). A value that is not
an object, or lacks the fields the report reads, is counted as unreadable, never fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamsafe.events.contract import (
    ACTIONS,
    DEAD_LETTER,
    ESCALATIONS,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
)

__all__ = ["APPEALS", "SOURCE_TOPICS", "EnforcementLog"]

APPEALS = "review.appeals"  # a broadcaster's appeal against a block or restrict (DSA Art. 20)
SOURCE_TOPICS = (ACTIONS, ESCALATIONS, REPORTS, PRESERVATION, REVIEW_VERDICTS, APPEALS, DEAD_LETTER)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decision_ok(v: dict[str, Any]) -> bool:
    return (isinstance(v.get("decision_id"), str) and isinstance(v.get("stream_id"), str)
            and isinstance(v.get("action"), str) and _int(v.get("decided_at_ms"))
            and isinstance(v.get("evidence", []), list))


def _report_ok(v: dict[str, Any]) -> bool:
    times = v.get("times")
    return (isinstance(v.get("report_id"), str) and isinstance(times, dict)
            and isinstance(times.get("reported"), dict) and _int(times["reported"].get("ms")))


def _dead_letter_key(v: dict[str, Any]) -> tuple[Any, ...] | None:
    source = v.get("source")
    if not isinstance(v.get("reason"), str) or not _int(v.get("dead_lettered_at_ms")) or not isinstance(source, dict):
        return None
    return (source.get("topic"), source.get("partition"), source.get("offset"), v["reason"])


def _record_time(topic: str, v: dict[str, Any]) -> int | None:
    if topic in (ACTIONS, ESCALATIONS):
        return int(v["decided_at_ms"])
    if topic == REPORTS:
        return int(v["times"]["reported"]["ms"])
    if topic == PRESERVATION:
        return None  # no time of its own: it goes with its report
    if topic == REVIEW_VERDICTS:
        return int(v["ts_ms"])
    if topic == APPEALS:
        return int(v["submitted_at_ms"])
    return int(v["dead_lettered_at_ms"])


@dataclass
class EnforcementLog:
    """Records by kind, each once; ``unreadable`` counts the values skipped, by topic."""

    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # actions and escalations
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    preservation: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    appeals: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    newest_ms: int | None = None  # the latest record time (see compute's clock) among them
    read: Counter[str] = field(default_factory=Counter)
    unreadable: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, records: Iterable[tuple[str, dict[str, Any] | None]]) -> EnforcementLog:
        """A log of ``(topic, value)`` pairs; topics are contract names (no prefix), others are ignored."""
        log = cls()
        for topic, value in records:
            log.add(topic, value)
        return log

    def add(self, topic: str, value: dict[str, Any] | None) -> None:
        if topic not in SOURCE_TOPICS or value is None:  # a tombstone retracts nothing here
            return
        self.read[topic] += 1
        if not isinstance(value, dict) or not self._add(topic, value):
            self.unreadable[topic] += 1
            return
        at = _record_time(topic, value)
        if at is not None:
            self.newest_ms = at if self.newest_ms is None else max(self.newest_ms, at)

    def _add(self, topic: str, v: dict[str, Any]) -> bool:
        if topic in (ACTIONS, ESCALATIONS):
            if not _decision_ok(v):
                return False
            self.decisions.setdefault(v["decision_id"], v)
        elif topic == REPORTS:
            if not _report_ok(v):
                return False
            self.reports.setdefault(v["report_id"], v)
        elif topic == PRESERVATION:
            if not isinstance(v.get("preservation_id"), str) or not isinstance(v.get("report_id"), str):
                return False
            self.preservation.setdefault(v["preservation_id"], v)
        elif topic == REVIEW_VERDICTS:
            if not isinstance(v.get("stream_id"), str) or not isinstance(v.get("verdict"), str) \
                    or not _int(v.get("ts_ms")):
                return False
            self.verdicts.append(v)
        elif topic == APPEALS:
            if not isinstance(v.get("appeal_id"), str) or not _int(v.get("submitted_at_ms")):
                return False
            self.appeals.setdefault(v["appeal_id"], v)
        else:
            key = _dead_letter_key(v)
            if key is None:
                return False
            self.dead_letters.setdefault(key, v)
        return True
