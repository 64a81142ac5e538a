"""``streamsafe coop serve``: Coop's action callbacks in, ``review.verdicts`` records out.

Routes: ``POST /coop/callback`` (the URL a Coop admin gives each StreamSafe action),
``GET /metrics``, ``GET /healthz``. Answers: ``200`` accepted (the verdict is on the broker,
acknowledged by every in-sync replica); ``401`` unsigned or bad signature; ``403`` stale;
``409`` replayed; ``400``/``413``/``422`` a body StreamSafe cannot act on; ``503`` the broker did
not take the verdict (Coop retries; nothing was remembered, so the retry is not a replay).
Every refusal is counted by reason (``streamsafe_coop_callbacks_total``) and logged without
the body or the reviewer's email (stream ids and reviewer ids at debug level only).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import fastjsonschema
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives.asymmetric import rsa

from streamsafe import clients
from streamsafe.control.signing import signer_for
from streamsafe.events.contract import REVIEW_VERDICTS, load_contract
from streamsafe.integrations.coop.callbacks import (
    SIGNATURE_HEADER,
    CallbackRefused,
    ReplayCache,
    body_digest,
    callback_time_ms,
    parse_body,
    verdict_record,
    verify_signature,
)
from streamsafe.integrations.coop.ledger import ForwardedLedger
from streamsafe.integrations.coop.mapping import CoopMapping
from streamsafe.integrations.coop.metrics import CoopMetrics, metrics_handler
from streamsafe.settings import Settings

__all__ = ["CALLBACK_PATH", "CallbackService"]

log = logging.getLogger(__name__)

CALLBACK_PATH = "/coop/callback"
MAX_BODY_BYTES = 64 * 1024


class CallbackService:
    def __init__(self, settings: Settings, mapping: CoopMapping, public_key: rsa.RSAPublicKey,
                 metrics: CoopMetrics, reviewer_key: bytes | None = None) -> None:
        self.settings = settings
        self.mapping = mapping
        self.public_key = public_key
        self.metrics = metrics
        self.reviewer_key = reviewer_key
        #: the review tool's key: verdicts are control records, and workers refuse unsigned ones
        self.signer = signer_for(settings.signing_key_file, "review verdicts")
        self.ledger = ForwardedLedger(settings, metrics.ledger)
        self.replays = ReplayCache(ttl_s=mapping.max_age_s + mapping.max_skew_s)
        self.topic = settings.topic_name(REVIEW_VERDICTS)
        self._validate = fastjsonschema.compile(dict(load_contract()[REVIEW_VERDICTS].schema))
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(CALLBACK_PATH, self.callback)
        app.router.add_get("/metrics", metrics_handler(self.metrics))
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self, host: str, port: int) -> int:
        """Read the ledger, start the producer and listen; the bound port is returned."""
        settings = await clients.resolve_idempotence(self.settings)
        await self.ledger.start()
        self._producer = await clients.start(clients.producer(settings))
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("listening for Coop callbacks on http://%s:%d%s", host, self.port, CALLBACK_PATH)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()
        await self.ledger.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _escalation_for(self, stream_id: str, at_ms: int) -> str | None:
        forwarded = self.ledger.latest_for(stream_id, at_ms)
        return forwarded.escalation_id if forwarded else None

    async def callback(self, request: web.Request) -> web.Response:
        try:
            record = await self._accept(request)
        except CallbackRefused as refused:
            self.metrics.callbacks.labels(refused.reason).inc()
            log.warning("Coop callback refused (%s): %s", refused.reason, refused.detail)
            return web.json_response({"error": refused.reason, "detail": refused.detail}, status=refused.status)
        self.metrics.callbacks.labels("accepted").inc()
        log.info("Coop verdict %s on escalation %s", record["verdict"],
                 record.get("escalation_id", "none (the whole stream)"))
        log.debug("Coop verdict on stream %s by reviewer %s", record["stream_id"], record["reviewer_id"])
        return web.json_response({"status": "accepted"})

    async def _accept(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise CallbackRefused("too_large", 413, f"over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise CallbackRefused("too_large", 413, f"over {MAX_BODY_BYTES} bytes") from exc
        verify_signature(self.public_key, body, request.headers.get(SIGNATURE_HEADER))
        document = parse_body(body)
        now = time.time()
        ts_ms = callback_time_ms(document, self.mapping, int(now * 1000))
        digest = body_digest(body)
        if self.replays.seen(digest, now):
            raise CallbackRefused("replayed", 409, "this signed body was accepted before")
        record = verdict_record(document, self.mapping, ts_ms, self.reviewer_key, self._escalation_for)
        try:
            self._validate(record)
        except fastjsonschema.JsonSchemaException as exc:
            raise CallbackRefused("invalid_verdict", 422, f"not a valid verdict: {exc.message}") from exc
        self.replays.remember(digest, now)  # before the send: a concurrent copy is a replay
        try:
            assert self._producer is not None
            key = record["stream_id"].encode()
            value = self.signer.sign_bytes(REVIEW_VERDICTS, key, record)
            await self._producer.send_and_wait(self.topic, value, key=key)
        except KafkaError as exc:
            self.replays.forget(digest)
            raise CallbackRefused("unavailable", 503, f"the broker did not take the verdict: "
                                                      f"{type(exc).__name__}") from exc
        return record
