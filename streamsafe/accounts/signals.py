"""``streamsafe.account-signals``: what a stream's records tell about an account.

The worker that holds a stream sends them, keyed by account id, to the partition where
the account's state lives. Only metadata, grooming signals that name their author, user
reports that name an account and block decisions produce them: frames never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from streamsafe.errors import RejectedInput
from streamsafe.events.contract import TopicSpec

__all__ = ["AccountSignal", "AccountSignalDecoder", "Target"]


@dataclass(frozen=True, slots=True)
class Target:
    """The context of the stream a viewer's signal was seen in, as its metadata said."""

    age_verified: bool | None = None
    account_age_days: int | None = None
    private: bool | None = None

    def to_record(self) -> dict[str, Any]:
        return {k: v for k, v in (("age_verified", self.age_verified), ("account_age_days", self.account_age_days),
                                  ("private", self.private)) if v is not None}


@dataclass(frozen=True, slots=True)
class AccountSignal:
    account_id: str
    kind: str  # stream_started | blocked | grooming | user_report | expire
    ts_ms: int  # event time (expire: when due)
    decided_at_ms: int = 0  # the causing stream record's broker timestamp
    stream_id: str | None = None
    rule: str | None = None
    decision_id: str | None = None
    classifier: str | None = None
    score: float | None = None
    target: Target | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"schema_version": 1, "account_id": self.account_id, "kind": self.kind,
                                  "ts_ms": self.ts_ms}
        if self.kind != "expire":
            record["decided_at_ms"] = self.decided_at_ms
        for name in ("stream_id", "rule", "decision_id", "classifier", "score"):
            if (value := getattr(self, name)) is not None:
                record[name] = value
        if self.target is not None:
            record["target"] = self.target.to_record()
        return record

    def encode(self) -> bytes:
        return orjson.dumps(self.to_record())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> AccountSignal:
        target = doc.get("target")
        return cls(doc["account_id"], doc["kind"], doc["ts_ms"], doc.get("decided_at_ms", 0), doc.get("stream_id"),
                   doc.get("rule"), doc.get("decision_id"), doc.get("classifier"), doc.get("score"),
                   Target(**target) if target is not None else None)


class AccountSignalDecoder:
    """Validates a record against the contract's schema; raises :class:`RejectedInput` with the reason."""

    def __init__(self, spec: TopicSpec) -> None:
        self._validate = fastjsonschema.compile(dict(spec.schema))

    def decode(self, key: bytes | None, value: bytes | None) -> AccountSignal:
        try:
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise RejectedInput("malformed_json", str(exc)) from None
        if not isinstance(doc, dict):
            raise RejectedInput("not_an_object", f"top-level JSON is a {type(doc).__name__}")
        if doc.get("schema_version") != 1:
            raise RejectedInput("unknown_version", f"schema_version {doc.get('schema_version')!r} is not 1")
        try:
            self._validate(doc)
        except fastjsonschema.JsonSchemaException as exc:
            raise RejectedInput("schema_violation", exc.message) from None
        if key is None or key != doc["account_id"].encode():
            raise RejectedInput("key_mismatch", "record key must equal the value's account_id")
        return AccountSignal.from_dict(doc)
