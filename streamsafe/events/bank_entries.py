"""Decoding of ``hashbank.entries`` records, fast enough for a 10M-entry cold start.

The checks are those of the topic's JSON Schema, written out by hand: a compiled
schema costs ~5 µs a record, a budget a bulk load of ten million entries cannot
spend. A unit test holds this decoder and the schema to the same verdicts.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from streamsafe.errors import BankError, RejectedInput
from streamsafe.events.models import BankEntry

__all__ = ["check_bank_name", "decode_bank_entry", "encode_bank_entry", "encode_bank_removal", "entry_from_document",
           "entry_id_for", "is_removal"]

_BANK = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_HEX = re.compile(r"[0-9a-f]+")
_LENGTH = {"pdq": 64, "md5": 32, "sha256": 64}
_ALLOWED = frozenset({"schema_version", "bank", "signal_type", "hash", "quality", "label", "source",
                      "added_ms", "signature"})
_REMOVAL_ALLOWED = frozenset({"schema_version", "removed", "removed_ms", "source", "signature"})
MAX_ENTRY_BYTES = 4096


def check_bank_name(bank: str) -> None:
    """Refuse (BankError) a bank name every worker would dead-letter: lower-case letters,
    digits, ``_``, ``.``, ``-``, at most 64, starting with a letter or digit."""
    if not _BANK.fullmatch(bank):
        raise BankError(f"bank name {bank!r} is not valid: use lower-case letters, digits, '_', '.' and '-' "
                        "(at most 64, starting with a letter or digit), e.g. ncmec or internal-confirmed")


def entry_id_for(bank: str, signal_type: str, hash_hex: str) -> str:
    """The record key of a bank entry: the bank and a digest of the hash (never the hash itself),
    so importing the same hash twice is one entry."""
    digest = hashlib.sha256(f"{signal_type}:{hash_hex}".encode()).hexdigest()[:20]
    return f"{bank}:{digest}"


def encode_bank_entry(entry: BankEntry, source: str | None, added_ms: int) -> bytes:
    """The ``hashbank.entries`` value of an entry (its key is ``entry.entry_id``), unsigned."""
    return orjson.dumps(bank_entry_document(entry, source, added_ms))


def bank_entry_document(entry: BankEntry, source: str | None, added_ms: int) -> dict[str, object]:
    """The ``hashbank.entries`` record of an entry, as a JSON object (to sign or encode)."""
    value: dict[str, object] = {"schema_version": 1, "bank": entry.bank, "signal_type": entry.signal_type,
                                "hash": entry.hash, "added_ms": added_ms}
    if entry.label:
        value["label"] = entry.label
    if entry.quality is not None:
        value["quality"] = entry.quality
    if source:
        value["source"] = source
    return value


def encode_bank_removal(removed_ms: int, source: str | None = None) -> dict[str, object]:
    """A removal of the entry named by the record key (a tombstone cannot be signed; this can)."""
    value: dict[str, object] = {"schema_version": 1, "removed": True, "removed_ms": removed_ms}
    if source:
        value["source"] = source
    return value


def is_removal(doc: dict[str, Any]) -> bool:
    """Whether a decoded record is a removal; :class:`RejectedInput` if it is a malformed one."""
    if "removed" not in doc:
        return False
    if doc.get("removed") is not True or doc.get("schema_version") != 1 or type(doc.get("schema_version")) is not int:
        raise RejectedInput("schema_violation", "a removal needs schema_version 1 and removed: true")
    extra = doc.keys() - _REMOVAL_ALLOWED
    if extra:
        raise RejectedInput("schema_violation", f"unknown fields in a removal {sorted(extra)}")
    removed = doc.get("removed_ms")
    if type(removed) is not int or removed < 0:
        raise RejectedInput("schema_violation", "removed_ms must be a non-negative integer")
    return True


def decode_bank_entry(key: bytes | None, value: bytes) -> BankEntry:
    """A bank entry from one record (tombstones are handled by the caller)."""
    if not key:
        raise RejectedInput("key_mismatch", "a bank entry needs its entry id as the record key")
    if len(value) > MAX_ENTRY_BYTES:
        raise RejectedInput("oversized", f"{len(value)} bytes exceeds {MAX_ENTRY_BYTES}")
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RejectedInput("malformed_json", str(exc)) from None
    return entry_from_document(key, doc)


def entry_from_document(key: bytes, doc: Any) -> BankEntry:
    """A bank entry from a parsed record (the checks of :func:`decode_bank_entry` after parsing)."""
    if not isinstance(doc, dict):
        raise RejectedInput("not_an_object", "a bank entry must be a JSON object")
    if doc.get("schema_version") != 1 or type(doc.get("schema_version")) is not int:
        raise RejectedInput("unknown_version", f"schema_version {doc.get('schema_version')!r} is not 1")
    extra = doc.keys() - _ALLOWED
    if extra:
        raise RejectedInput("schema_violation", f"unknown fields {sorted(extra)}")
    bank, signal_type, hash_ = doc.get("bank"), doc.get("signal_type"), doc.get("hash")
    if not isinstance(bank, str) or not _BANK.fullmatch(bank):
        raise RejectedInput("schema_violation", "bank must match ^[a-z0-9][a-z0-9_.-]{0,63}$")
    if signal_type not in _LENGTH:
        raise RejectedInput("schema_violation", f"unknown signal type {signal_type!r}")
    if not isinstance(hash_, str) or len(hash_) != _LENGTH[signal_type] or not _HEX.fullmatch(hash_):
        raise RejectedInput("schema_violation",
                            f"{signal_type} hash must be {_LENGTH[signal_type]} lower-case hex characters")
    quality = doc.get("quality")
    if quality is not None and (type(quality) is not int or not 0 <= quality <= 100):
        raise RejectedInput("schema_violation", "quality must be an integer 0..100")
    for name, limit in (("label", 256), ("source", 128)):
        text = doc.get(name)
        if text is not None and (not isinstance(text, str) or len(text) > limit):
            raise RejectedInput("schema_violation", f"{name} must be a string of at most {limit} characters")
    added = doc.get("added_ms")
    if added is not None and (type(added) is not int or added < 0):
        raise RejectedInput("schema_violation", "added_ms must be a non-negative integer")
    try:
        entry_id = key.decode()
    except UnicodeDecodeError:
        raise RejectedInput("key_mismatch", "entry id is not UTF-8") from None
    return BankEntry(entry_id, bank, signal_type, hash_, doc.get("label"), quality, added)
