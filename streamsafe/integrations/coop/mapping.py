"""The Coop mapping file: how StreamSafe names things in a platform's Coop organisation.

Coop's ids (item types, policies, actions) are created by the platform's Coop admin, so
they live in a YAML file the platform owns, never in code. The file is checked against
:data:`MAPPING_SCHEMA` when loaded; a wrong file fails at start-up with the field named.
README "Using StreamSafe with Coop" shows an example.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

from streamsafe.errors import ConfigError

__all__ = ["MAPPING_SCHEMA", "ActionVerdict", "CoopMapping", "ReportReason", "load_mapping", "parse_mapping"]

_ID = {"type": "string", "minLength": 1, "maxLength": 256}
_REASON = {
    "type": "object",
    "additionalProperties": False,
    "required": ["policy_id"],
    "properties": {"policy_id": _ID, "csam": {"type": "boolean"}},
}
_VERDICTS = ["confirmed", "benign", "needs_more_context"]
_CATEGORIES = ["A1", "A2", "B1", "B2", "grooming", "other"]

MAPPING_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "reporter", "stream_item_type_id"],
    "properties": {
        "version": {"const": 1},
        "reporter": {
            "type": "object", "additionalProperties": False, "required": ["type_id", "id"],
            "properties": {"type_id": _ID, "id": _ID},
        },
        "stream_item_type_id": _ID,
        "policies": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "by_rule": {"type": "object", "additionalProperties": _REASON},
                "by_evidence": {
                    "type": "object", "additionalProperties": False,
                    "properties": {kind: _REASON for kind in
                                   ("hash_match", "classifier", "user_report", "context", "risk", "review")},
                },
                "default": _REASON,
            },
        },
        "actions": {
            "type": "object",
            "additionalProperties": {
                "type": "object", "additionalProperties": False, "required": ["verdict"],
                "properties": {"verdict": {"enum": _VERDICTS}, "category": {"enum": _CATEGORIES}},
            },
        },
        "reviewers": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"},
        },
        "callbacks": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "time_field": {"type": "string", "minLength": 1},
                "max_age_s": {"type": "number", "exclusiveMinimum": 0},
                "max_skew_s": {"type": "number", "minimum": 0},
            },
        },
    },
}
_validate = fastjsonschema.compile(MAPPING_SCHEMA)


@dataclass(frozen=True, slots=True)
class ReportReason:
    """``reportedForReason`` of a report: the Coop policy, and whether Coop routes it to its NCMEC queue."""

    policy_id: str
    csam: bool = False


@dataclass(frozen=True, slots=True)
class ActionVerdict:
    """What a Coop action means when its callback body carries no ``custom.verdict``."""

    verdict: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class CoopMapping:
    reporter_type_id: str
    reporter_id: str
    stream_item_type_id: str
    by_rule: Mapping[str, ReportReason] = field(default_factory=dict)
    by_evidence: Mapping[str, ReportReason] = field(default_factory=dict)
    default_reason: ReportReason | None = None
    actions: Mapping[str, ActionVerdict] = field(default_factory=dict)
    reviewers: Mapping[str, str] = field(default_factory=dict)
    #: where the callback body says when the reviewer acted: a dotted path (ISO 8601 or epoch ms)
    time_field: str = "custom.decidedAt"
    max_age_s: float = 3600.0
    max_skew_s: float = 300.0

    def reason_for(self, rule: str | None, evidence_kinds: Sequence[str]) -> ReportReason | None:
        """The policy an escalation is reported under: its rule's (names may use ``*`` globs),
        else the first evidence kind's in the file's order, else the default."""
        if rule:
            for pattern, reason in self.by_rule.items():
                if fnmatch.fnmatchcase(rule, pattern):
                    return reason
        for kind, reason in self.by_evidence.items():
            if kind in evidence_kinds:
                return reason
        return self.default_reason


def _reason(raw: Mapping[str, Any]) -> ReportReason:
    return ReportReason(raw["policy_id"], bool(raw.get("csam", False)))


def parse_mapping(raw: Any, source: str = "mapping") -> CoopMapping:
    """A :class:`CoopMapping` from a parsed document, or :class:`ConfigError` naming what is wrong."""
    try:
        _validate(raw)
    except fastjsonschema.JsonSchemaException as exc:
        raise ConfigError(f"{source}: {exc.message}") from exc
    policies = raw.get("policies") or {}
    callbacks = raw.get("callbacks") or {}
    return CoopMapping(
        reporter_type_id=raw["reporter"]["type_id"],
        reporter_id=raw["reporter"]["id"],
        stream_item_type_id=raw["stream_item_type_id"],
        by_rule={k: _reason(v) for k, v in (policies.get("by_rule") or {}).items()},
        by_evidence={k: _reason(v) for k, v in (policies.get("by_evidence") or {}).items()},
        default_reason=_reason(policies["default"]) if "default" in policies else None,
        actions={k: ActionVerdict(v["verdict"], v.get("category")) for k, v in (raw.get("actions") or {}).items()},
        reviewers={k.strip().lower(): v for k, v in (raw.get("reviewers") or {}).items()},
        time_field=callbacks.get("time_field", "custom.decidedAt"),
        max_age_s=float(callbacks.get("max_age_s", 3600.0)),
        max_skew_s=float(callbacks.get("max_skew_s", 300.0)),
    )


def load_mapping(path: Path) -> CoopMapping:
    """Read and check the mapping file at ``path``."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the Coop mapping file: {exc}") from exc
    return parse_mapping(raw, str(path))
