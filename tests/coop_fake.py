"""A Coop for tests: an HTTP server holding StreamSafe to exactly the documented report contract
(``POST /api/v1/report``; Coop's docs: docs/api/report.md and docs/api/errors.md of roostorg/coop),
and a signer of action callbacks the way Coop signs them (RSASSA-PKCS1-v1_5, SHA-256, base64 in
``Coop-Signature``), with a key pair made in the test.

It refuses: a missing or wrong ``X-API-KEY`` (401); a body that is not a JSON object, a missing
required field, a field of the wrong type, a ``reporter.kind`` other than ``"user"``, a
``reportedAt`` that is not ISO 8601, a top-level field the contract does not name (400, in Coop's
error format with a JSON pointer). It answers ``201 {"reportId": ...}`` and keeps what it took."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["CoopSigner", "FakeCoop", "report_errors"]

_TOP = {"reporter", "reportedAt", "reportedItem", "reportedForReason", "reportedItemThread",
        "reportedItemsInThread", "additionalItems"}


def _string(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def report_errors(body: Any) -> list[tuple[str, str]]:
    """(pointer, problem) for every way ``body`` breaks the report contract; [] when it keeps it."""
    if not isinstance(body, dict):
        return [("", "body must be a JSON object")]
    errors = [(f"/{k}", "unknown field") for k in body if k not in _TOP]
    reporter = body.get("reporter")
    if not isinstance(reporter, dict):
        errors.append(("/reporter", "required object"))
    else:
        if reporter.get("kind") != "user":
            errors.append(("/reporter/kind", 'must be "user"'))
        errors += [(f"/reporter/{k}", "required string") for k in ("typeId", "id") if not _string(reporter.get(k))]
    reported_at = body.get("reportedAt")
    try:
        if not _string(reported_at):
            raise ValueError
        datetime.fromisoformat(reported_at.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        errors.append(("/reportedAt", "required ISO 8601 date-time"))
    item = body.get("reportedItem")
    if not isinstance(item, dict):
        errors.append(("/reportedItem", "required object"))
    else:
        errors += [(f"/reportedItem/{k}", "required string") for k in ("id", "typeId") if not _string(item.get(k))]
        if not isinstance(item.get("data"), dict):
            errors.append(("/reportedItem/data", "required JSON object"))
    reason = body.get("reportedForReason")
    if reason is not None:
        if not isinstance(reason, dict):
            errors.append(("/reportedForReason", "must be an object"))
        else:
            errors += [(f"/reportedForReason/{k}", "must be a string") for k in ("policyId", "reason")
                       if k in reason and not isinstance(reason[k], str)]
            if "csam" in reason and not isinstance(reason["csam"], bool):
                errors.append(("/reportedForReason/csam", "must be a boolean"))
    return errors


def _error(status: int, title: str, pointer: str | None = None) -> web.Response:
    error: dict[str, Any] = {"status": status, "type": ["/errors/invalid-user-input" if status == 400
                                                         else "/errors/unauthenticated"], "title": title}
    if pointer is not None:
        error["pointer"] = pointer
    return web.json_response({"errors": [error]}, status=status)


@dataclass
class FakeCoop:
    api_key: str
    #: the organisation's item type ids, when given: a report naming another is refused (400), as Coop
    #: refuses "a report referencing a non-existent item" (docs/api/errors.md)
    item_types: frozenset[str] | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _report(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-KEY") != self.api_key:
            self.refused.append((401, "X-API-KEY"))
            return _error(401, "missing or invalid API key")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            self.refused.append((400, "not JSON"))
            return _error(400, "malformed JSON")
        errors = report_errors(body)
        if not errors and self.item_types is not None:
            errors = [(f"/{where}/typeId", "unknown item type") for where in ("reporter", "reportedItem")
                      if body[where]["typeId"] not in self.item_types]
        if errors:
            self.refused.append((400, "; ".join(f"{p} {m}" for p, m in errors)))
            return _error(400, errors[0][1], errors[0][0])
        report_id = str(uuid.uuid4())
        self.reports.append({"reportId": report_id, **body})
        return web.json_response({"reportId": report_id}, status=201)

    async def start(self, port: int = 0) -> FakeCoop:
        app = web.Application()
        app.router.add_post("/api/v1/report", self._report)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port or self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class CoopSigner:
    """An organisation's signing key pair, made fresh; signs callback bodies as Coop does."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
