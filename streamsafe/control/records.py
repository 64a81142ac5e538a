"""What one control record would change, checked: size, signature, then shape.

The workers' control readers (:mod:`.banks`, :mod:`.policies`) and the audit reader
(:mod:`.audit`) judge a record with these same functions, so the audit trail says
exactly what the workers did. A refusal is a :class:`~streamsafe.errors.RejectedInput`
whose reason is the dead-letter reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from streamsafe.control.signing import BAD_SIGNATURE, TrustedKeys
from streamsafe.errors import PolicyError, RejectedInput
from streamsafe.events.bank_entries import MAX_ENTRY_BYTES, entry_from_document, is_removal
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY
from streamsafe.events.models import BankEntry
from streamsafe.policy.loader import policy_from_mapping
from streamsafe.policy.model import Policy

__all__ = ["LIVE_KEY", "MAX_POLICY_BYTES", "SHADOW_PREFIX", "BankChange", "PolicyChange", "check_bank_record",
           "check_policy_record"]

LIVE_KEY = "live"
SHADOW_PREFIX = "shadow/"
#: a policy document is a few KiB; anything near the broker's 1 MB limit is not a policy
MAX_POLICY_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BankChange:
    """An addition (``entry`` set) or a removal of the entry ``entry_id``, signed by ``key_id``."""

    entry_id: str
    entry: BankEntry | None
    key_id: str

    @property
    def change(self) -> str:
        return "bank_entries_added" if self.entry is not None else "bank_entries_removed"


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A policy published under ``key`` (``policy`` None: a shadow retired), signed by ``key_id``."""

    key: str
    policy: Policy | None
    key_id: str
    published_by: str | None
    document: dict[str, Any] | None = None  # the policy document as published

    @property
    def shadow(self) -> str | None:
        return self.key[len(SHADOW_PREFIX):] if self.key.startswith(SHADOW_PREFIX) else None

    @property
    def change(self) -> str:
        return "policy_published" if self.policy is not None else "shadow_retired"


def check_bank_record(trusted: TrustedKeys, key: bytes | None, value: bytes | None) -> BankChange:
    if not key:
        raise RejectedInput("key_mismatch", "a bank entry needs its entry id as the record key")
    if value is not None and len(value) > MAX_ENTRY_BYTES:
        raise RejectedInput("oversized", f"{len(value)} bytes exceeds {MAX_ENTRY_BYTES}")
    doc, key_id = trusted.verify_bytes(HASHBANK_ENTRIES, key, value)
    try:
        entry_id = key.decode()
    except UnicodeDecodeError:
        raise RejectedInput("key_mismatch", "entry id is not UTF-8") from None
    if is_removal(doc):
        return BankChange(entry_id, None, key_id)
    return BankChange(entry_id, entry_from_document(key, doc), key_id)


def check_policy_record(validate: Callable[[Any], Any], trusted: TrustedKeys, key: bytes | None,
                        value: bytes | None) -> PolicyChange:
    """``validate``: the topic's compiled JSON Schema."""
    if value is not None and len(value) > MAX_POLICY_BYTES:
        raise RejectedInput("oversized", f"{len(value)} bytes exceeds {MAX_POLICY_BYTES}")
    name = (key or b"").decode(errors="replace")
    try:
        doc, key_id = trusted.verify_bytes(POLICY, key, value)
    except RejectedInput as exc:
        if exc.reason == BAD_SIGNATURE:
            raise
        raise RejectedInput("invalid_policy", exc.detail) from None  # not JSON, or not an object
    if name != LIVE_KEY and not name.startswith(SHADOW_PREFIX):
        raise RejectedInput("invalid_policy", f"key must be {LIVE_KEY!r} or '{SHADOW_PREFIX}<name>', got {name!r}")
    try:
        validate(doc)
    except fastjsonschema.JsonSchemaException as exc:
        raise RejectedInput("invalid_policy", str(exc.message)) from None
    published_by = doc.get("published_by")
    published_by = published_by if isinstance(published_by, str) else None
    if doc.get("retired") is True:
        if name == LIVE_KEY:
            raise RejectedInput("invalid_policy", "the live policy cannot be retired, only replaced")
        return PolicyChange(name, None, key_id, published_by)
    try:
        policy = policy_from_mapping(doc["policy"])
    except PolicyError as exc:
        raise RejectedInput("invalid_policy", str(exc)) from None
    except Exception as exc:  # whatever a malformed document raises, it is refused
        raise RejectedInput("invalid_policy", f"{type(exc).__name__}: {exc}") from None
    return PolicyChange(name, policy, key_id, published_by, doc["policy"])
