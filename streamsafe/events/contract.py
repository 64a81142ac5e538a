"""Load the event contract: one file per Kafka topic under ``topics/``.

``topics/`` is the single source of truth for topic names, partition counts,
configs, keys, schemas and examples. In a source checkout it sits next to the
package; an installed wheel carries a copy under ``streamsafe/_contract/topics``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from streamsafe.errors import ContractError

__all__ = [
    "ACCOUNT_FINDINGS",
    "ACCOUNT_SIGNALS",
    "ACTIONS",
    "AUDIT",
    "CLASSIFIER_SIGNALS",
    "DEAD_LETTER",
    "ESCALATIONS",
    "FRAME_HASHES",
    "FRAME_MATCHES",
    "HASHBANK_ENTRIES",
    "INPUT_TOPICS",
    "METADATA",
    "POLICY",
    "PRESERVATION",
    "REPORTS",
    "REVIEW_APPEALS",
    "REVIEW_VERDICTS",
    "SHADOW_DECISIONS",
    "STATEMENTS",
    "TIMERS",
    "USER_REPORTS",
    "TopicSpec",
    "contract_dir",
    "load_contract",
]

METADATA = "livestream.metadata"
FRAME_HASHES = "livestream.frame-hashes"
CLASSIFIER_SIGNALS = "livestream.classifier-signals"
USER_REPORTS = "livestream.user-reports"
ACTIONS = "enforcement.actions"
ESCALATIONS = "enforcement.escalations"
DEAD_LETTER = "streamsafe.dead-letter"
SHADOW_DECISIONS = "streamsafe.shadow-decisions"
POLICY = "streamsafe.policy"
HASHBANK_ENTRIES = "hashbank.entries"
REVIEW_VERDICTS = "review.verdicts"
REVIEW_APPEALS = "review.appeals"
REPORTS = "enforcement.reports"
PRESERVATION = "enforcement.preservation"
TIMERS = "streamsafe.timers"
FRAME_MATCHES = "streamsafe.frame-matches"
STATEMENTS = "enforcement.statements"
AUDIT = "streamsafe.audit"
ACCOUNT_SIGNALS = "streamsafe.account-signals"
ACCOUNT_FINDINGS = "streamsafe.account-findings"

INPUT_TOPICS = (METADATA, FRAME_HASHES, CLASSIFIER_SIGNALS, USER_REPORTS)
REQUIRED_TOPICS = (*INPUT_TOPICS, REVIEW_VERDICTS, REVIEW_APPEALS, ACTIONS, ESCALATIONS, SHADOW_DECISIONS, DEAD_LETTER,
                   POLICY, HASHBANK_ENTRIES, REPORTS, PRESERVATION, TIMERS, FRAME_MATCHES, STATEMENTS, AUDIT,
                   ACCOUNT_SIGNALS, ACCOUNT_FINDINGS)
#: in: the platform's inputs; out: what workers publish; control: policies and banks every worker
#: reads; internal: the workers' own; service: a side service's own (e.g. streamsafe coop forward)
DIRECTIONS = ("in", "out", "control", "internal", "service")
_FIELDS = ("name", "direction", "description", "partitions", "key", "replication_factor", "config",
           "schema_versions", "schema", "example")
#: examples: further valid records, e.g. one of each later schema version; access: which roles
#: (:mod:`streamsafe.roles`) own, read and write the topic -- ``{"owner": r, "read": [...], "write": [...]}``
_OPTIONAL_FIELDS = ("examples", "access")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the contract defines it (names here are without prefix)."""

    name: str
    direction: str
    description: str
    partitions: int
    key: str
    config: Mapping[str, str]
    schema_versions: tuple[int, ...]
    schema: Mapping[str, Any]
    example: Mapping[str, Any]
    examples: tuple[Mapping[str, Any], ...] = ()
    #: production durability: copies of each partition, and (``config["min.insync.replicas"]``)
    #: how many must hold a record before an ``acks=all`` send is acknowledged
    replication_factor: int = 3
    #: the role answerable for what the topic holds (one of its writers), and who reads and writes it
    owner: str | None = None
    readers: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()

    @property
    def min_insync_replicas(self) -> int:
        """The contract's ``min.insync.replicas`` (1, Kafka's default, when the file names none)."""
        return int(self.config.get("min.insync.replicas", "1"))


def contract_dir() -> Path:
    """Where the topic files live: the checkout's ``topics/`` or the wheel's copy."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "topics", package / "_contract" / "topics"):
        if candidate.is_dir():
            return candidate
    raise ContractError(f"no topics/ directory found next to {package}")


def _load_spec(path: Path) -> TopicSpec:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ContractError(f"{path.name}: cannot read topic definition: {exc}") from exc
    missing = [f for f in _FIELDS if f not in raw]
    if missing:
        raise ContractError(f"{path.name}: missing fields {missing}")
    unknown = sorted(set(raw) - {*_FIELDS, *_OPTIONAL_FIELDS})
    if unknown:
        raise ContractError(f"{path.name}: unknown fields {unknown}")
    if raw["name"] + ".json" != path.name:
        raise ContractError(f"{path.name}: file name does not match topic name {raw['name']!r}")
    if raw["direction"] not in DIRECTIONS:
        raise ContractError(f"{path.name}: direction must be one of {DIRECTIONS}")
    if not isinstance(raw["partitions"], int) or raw["partitions"] < 1:
        raise ContractError(f"{path.name}: partitions must be a positive integer")
    replication = raw["replication_factor"]
    if not isinstance(replication, int) or replication < 1:
        raise ContractError(f"{path.name}: replication_factor must be a positive integer")
    min_insync = str(raw["config"].get("min.insync.replicas", "1"))
    if not min_insync.isdigit() or not 1 <= int(min_insync) <= replication:
        raise ContractError(f"{path.name}: min.insync.replicas must be 1..replication_factor ({replication})")
    return TopicSpec(
        name=raw["name"],
        direction=raw["direction"],
        description=raw["description"],
        partitions=raw["partitions"],
        key=raw["key"],
        config={str(k): str(v) for k, v in raw["config"].items()},
        schema_versions=tuple(raw["schema_versions"]),
        schema=raw["schema"],
        example=raw["example"],
        examples=tuple(raw.get("examples", ())),
        replication_factor=replication,
        **_access(path.name, raw.get("access")),
    )


def _access(file: str, raw: Any) -> dict[str, Any]:
    """A topic file's ``access``: its owner and the roles that read and write it (names only;
    :func:`streamsafe.roles.unassigned_topics` checks them against the role table)."""
    if raw is None:
        return {}
    names = {"owner", "read", "write"}
    if not isinstance(raw, dict) or set(raw) - names:
        raise ContractError(f"{file}: access must be an object with {sorted(names)}")
    lists = {key: raw.get(key, []) for key in ("read", "write")}
    if not all(isinstance(v, list) and all(isinstance(r, str) for r in v) for v in lists.values()):
        raise ContractError(f"{file}: access.read and access.write must be lists of role names")
    owner = raw.get("owner")
    if owner is not None and owner not in lists["write"]:
        raise ContractError(f"{file}: access.owner {owner!r} must be one of its writers {lists['write']}")
    return {"owner": owner, "readers": tuple(lists["read"]), "writers": tuple(lists["write"])}


def load_contract(directory: Path | None = None) -> dict[str, TopicSpec]:
    """Every topic in the contract, by name; checks the contract is complete and
    that the topics keyed by stream id are co-partitioned."""
    return dict(_load_contract(directory or contract_dir()))


@cache
def _load_contract(directory: Path) -> tuple[tuple[str, TopicSpec], ...]:
    specs = {spec.name: spec for spec in map(_load_spec, sorted(directory.glob("*.json")))}
    absent = [t for t in REQUIRED_TOPICS if t not in specs]
    if absent:
        raise ContractError(f"topics/ lacks definitions for {absent}")
    by_stream = {s.name: s.partitions for s in specs.values() if s.key == "stream_id"}
    if len(set(by_stream.values())) != 1:
        raise ContractError(
            f"topics keyed by stream_id must share one partition count, got {by_stream}"
        )
    return tuple(specs.items())
