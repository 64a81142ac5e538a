"""Coop's action callbacks -> ``review.verdicts`` records (pure code, no network).

A callback is trusted only when, in this order: its ``Coop-Signature`` verifies (base64
RSASSA-PKCS1-v1_5 / SHA-256 over the raw body, with the organisation's public key); its body
is a JSON object; it says when the reviewer acted (the mapping's ``time_field``, by default
``custom.decidedAt``: Coop's callback has no timestamp header, so the time must be inside the
signed body) and that time is neither older than ``max_age_s`` nor further than ``max_skew_s``
in the future; and its body digest was not accepted before within that window (the
:class:`ReplayCache`, which needs to remember only as long as a callback is fresh).

The verdict record is a function of the signed body (and the ledger of what StreamSafe sent),
so a callback Coop retries yields the same record byte for byte; the worker takes a repeated
verdict as a no-op (the incident keeps one copy; a second ``benign`` finds the escalation
closed; a second ``confirmed`` re-derives the same block decision id and the one report).

The escalation a verdict answers is never taken from the body's free fields: it is the
stream's latest escalation that StreamSafe itself forwarded to Coop (the ledger), decided
before the reviewer acted. With none, the verdict is on the stream as a whole.

The reviewer is named by the mapping file's ``reviewers`` (email -> id), else by a
pseudonym: ``coop-`` + 24 hex of HMAC-SHA256 over the lower-cased email (keyed with the
reviewer key when one is configured; a bare SHA-256 otherwise, which anyone holding a list of
emails can reverse, so configure one). Emails are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from streamsafe.errors import ConfigError
from streamsafe.integrations.coop.mapping import CoopMapping

__all__ = ["SIGNATURE_HEADER", "CallbackRefused", "ReplayCache", "body_digest", "callback_time_ms",
           "load_public_key", "parse_body", "reviewer_id_for", "verdict_record", "verify_signature"]

SIGNATURE_HEADER = "Coop-Signature"
_STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_VERDICTS = ("confirmed", "benign", "needs_more_context")
_CATEGORIES = {c.lower(): c for c in ("A1", "A2", "B1", "B2", "grooming", "other")}
_MIN_MS, _MAX_MS = 946_684_800_000, 4_102_444_800_000


class CallbackRefused(Exception):
    """A callback StreamSafe does not act on: ``reason`` is the metric label, ``status`` the HTTP answer."""

    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status
        self.detail = detail


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """The organisation's webhook signature verification key (PEM, as Coop shows it)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read Coop's public key (PEM expected): {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{path}: Coop signs with RSA; this is a {type(key).__name__}")
    return key


def verify_signature(key: rsa.RSAPublicKey, body: bytes, signature: str | None) -> None:
    """Raise :class:`CallbackRefused` unless ``signature`` signs ``body`` with ``key``."""
    if not signature:
        raise CallbackRefused("unsigned", 401, f"no {SIGNATURE_HEADER} header")
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise CallbackRefused("bad_signature", 401, "the signature does not verify") from exc


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class ReplayCache:
    """Digests of accepted callbacks, each kept ``ttl_s`` (at least the freshness window, so
    a callback is remembered for as long as it would pass as fresh) and at most ``max_entries``
    (oldest forgotten first: a replay that slips through then yields the same verdict record,
    which the worker absorbs)."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _expire(self, now_s: float) -> None:
        while self._seen and (len(self._seen) > self.max_entries or next(iter(self._seen.values())) <= now_s):
            self._seen.popitem(last=False)

    def seen(self, digest: str, now_s: float) -> bool:
        self._expire(now_s)
        return digest in self._seen

    def remember(self, digest: str, now_s: float) -> None:
        self._seen[digest] = now_s + self.ttl_s
        self._seen.move_to_end(digest)
        self._expire(now_s)

    def forget(self, digest: str) -> None:
        self._seen.pop(digest, None)

    def __len__(self) -> int:
        return len(self._seen)


def _at(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def callback_time_ms(document: Mapping[str, Any], mapping: CoopMapping, now_ms: int) -> int:
    """When the reviewer acted, from the signed body; refused when absent, unreadable, stale or ahead."""
    value = _at(document, mapping.time_field)
    if isinstance(value, bool) or value is None:
        raise CallbackRefused("undated", 400, f"no time at {mapping.time_field}")
    if isinstance(value, int | float):
        ms = int(value)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise CallbackRefused("undated", 400, f"{mapping.time_field} is not ISO 8601") from exc
        if moment.tzinfo is None:
            raise CallbackRefused("undated", 400, f"{mapping.time_field} names no UTC offset")
        ms = int(moment.astimezone(UTC).timestamp() * 1000)
    else:
        raise CallbackRefused("undated", 400, f"{mapping.time_field} is neither ISO 8601 nor epoch ms")
    if not _MIN_MS <= ms <= _MAX_MS:
        raise CallbackRefused("undated", 400, f"{mapping.time_field} is not epoch milliseconds 2000..2100")
    if ms < now_ms - mapping.max_age_s * 1000:
        raise CallbackRefused("stale", 403, f"acted {(now_ms - ms) / 1000:.0f}s ago, over {mapping.max_age_s:.0f}s")
    if ms > now_ms + mapping.max_skew_s * 1000:
        raise CallbackRefused("stale", 403, f"dated {(ms - now_ms) / 1000:.0f}s in the future")
    return ms


def reviewer_id_for(email: str, mapping: CoopMapping, key: bytes | None) -> str:
    """The reviewer id for ``email``: the mapping file's, else a keyed pseudonym."""
    normal = email.strip().lower()
    if normal in mapping.reviewers:
        return mapping.reviewers[normal]
    digest = hmac.new(key or b"streamsafe-coop-reviewer", normal.encode(), hashlib.sha256).hexdigest()
    return f"coop-{digest[:24]}"


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def verdict_record(document: Any, mapping: CoopMapping, ts_ms: int, reviewer_key: bytes | None,
                   escalation_for: Callable[[str, int], str | None]) -> dict[str, Any]:
    """The ``review.verdicts`` record a verified, fresh callback stands for.

    ``escalation_for(stream_id, at_ms)``: the escalation StreamSafe forwarded for the stream."""
    item = document.get("item")
    if not isinstance(item, Mapping) or not isinstance(item.get("id"), str) or not isinstance(item.get("typeId"), str):
        raise CallbackRefused("malformed", 400, "item {id, typeId} missing")
    if item["typeId"] != mapping.stream_item_type_id or not _STREAM_ID.match(item["id"]):
        raise CallbackRefused("unknown_item", 422, "the item is not a StreamSafe stream")
    custom = document.get("custom") if isinstance(document.get("custom"), Mapping) else {}
    action = document.get("action") if isinstance(document.get("action"), Mapping) else {}
    by_action = mapping.actions.get(str(action.get("id")))
    verdict = (_text(custom.get("verdict")) or (by_action.verdict if by_action else "")).lower()
    if verdict not in _VERDICTS:
        raise CallbackRefused("invalid_verdict", 422, f"verdict must be one of {', '.join(_VERDICTS)}")
    category_text = _text(custom.get("category")) or (by_action.category if by_action else None)
    category = _CATEGORIES.get(category_text.lower()) if category_text else None
    if category_text and category is None:
        raise CallbackRefused("invalid_verdict", 422, f"category must be one of {', '.join(_CATEGORIES.values())}")
    if verdict == "confirmed" and category is None:
        raise CallbackRefused("invalid_verdict", 422, "a confirmed verdict needs a category")
    email = _text(document.get("actorEmail")) or _text(custom.get("actorEmail"))
    if email is None:
        raise CallbackRefused("no_reviewer", 422, "no actorEmail: a verdict needs the person who gave it")
    record: dict[str, Any] = {"schema_version": 1, "stream_id": item["id"], "verdict": verdict,
                              "reviewer_id": reviewer_id_for(email, mapping, reviewer_key), "ts_ms": ts_ms}
    escalation_id = escalation_for(item["id"], ts_ms + int(mapping.max_skew_s * 1000))
    if escalation_id:
        record["escalation_id"] = escalation_id
    if verdict == "confirmed":
        record["category"] = category
    return record


def parse_body(body: bytes) -> dict[str, Any]:
    """The callback's JSON object, or :class:`CallbackRefused` (``malformed``)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallbackRefused("malformed", 400, "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise CallbackRefused("malformed", 400, "the body is not a JSON object")
    return document
