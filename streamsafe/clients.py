"""Every Kafka client StreamSafe opens comes from here: bootstrap servers and the
TLS/SASL options of :class:`~streamsafe.settings.Settings` are applied once.

Faust builds its own clients from the same settings (``app.py``:
``faust_credentials``); everything else -- the frame pre-filter, control readers,
publishers of policies and banks, the demo, replay, benchmarks and tests -- calls
:func:`producer`, :func:`consumer` or :func:`admin`.

Defaults: producers wait for every in-sync replica (``acks="all"``) and are idempotent
(no duplicate or reordered record when a send is retried) when ``idempotent_producer`` is
``true``. Its default, ``auto``, is settled once per worker by :func:`resolve_idempotence`:
true where the broker grants producer ids (Apache Kafka), false where it does not (the
embedded Tansu broker), with a warning; StreamSafe's records are idempotent by their ids either way.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2

from streamsafe.settings import Settings

__all__ = ["ClientErrors", "admin", "capture_client_errors", "consumer", "default_partition", "producer",
           "refresh_metadata", "resolve_idempotence", "start", "topic_denied"]

log = logging.getLogger(__name__)


def _common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers, **settings.security.aiokafka_kwargs()}


@functools.lru_cache(maxsize=65_536)
def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client and aiokafka
    compute it) gives ``key``; cached: a stream's records repeat its key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer (not started); ``options`` override the defaults (acks=all, idempotent when
    the settings say ``true``; a producer asked for fewer acks cannot be idempotent)."""
    idempotent = settings.idempotent_producer == "true" and options.get("acks", "all") in ("all", -1)
    return AIOKafkaProducer(**{**_common(settings), "acks": "all", "enable_idempotence": idempotent, **options})


async def resolve_idempotence(settings: Settings) -> Settings:
    """``settings`` with ``idempotent_producer`` settled: an ``auto`` becomes ``true`` if the
    broker grants an idempotent producer its id, else ``false`` (logged as a warning)."""
    if settings.idempotent_producer != "auto":
        return settings
    probe = AIOKafkaProducer(**_common(settings), acks="all", enable_idempotence=True)
    try:
        await probe.start()
    except KafkaConnectionError:
        raise
    except KafkaError as exc:
        log.warning("the broker does not grant idempotent producers (%s): sending with acks=all, "
                    "without idempotence", type(exc).__name__)
        return settings.replace(idempotent_producer="false")
    finally:
        await probe.stop()
    return settings.replace(idempotent_producer="true")


def consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started), subscribed to ``topics`` if any; no group unless ``group_id``."""
    return AIOKafkaConsumer(*topics, **{**_common(settings), "enable_auto_commit": False,
                                        "auto_offset_reset": "earliest", **options})


def admin(settings: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**{**_common(settings), **options})


async def refresh_metadata(client: AIOKafkaConsumer) -> None:
    """Ask the broker for fresh metadata now (a consumer learns of a new topic only at its
    next refresh otherwise). aiokafka has no public call for it: this is the one place
    StreamSafe reaches into its client, guarded so that a change in aiokafka degrades to
    waiting for the periodic refresh instead of failing."""
    inner = getattr(client, "_client", None)
    update = getattr(inner, "force_metadata_update", None)
    if update is None:
        log.warning("aiokafka has no force_metadata_update: waiting for the periodic metadata refresh")
        return
    await update()


class ClientErrors(logging.Handler):
    """Holds the Kafka client's last error record instead of printing it: why it could not
    connect (a refused password, an untrusted certificate), for a one-line error. Attach with
    :func:`capture_client_errors`, detach with :meth:`release`."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""
        self._restore: tuple[int, bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = " ".join(record.getMessage().split())

    def release(self) -> None:
        client = logging.getLogger("aiokafka")
        client.removeHandler(self)
        if self._restore is not None:
            client.setLevel(self._restore[0])
            client.propagate = self._restore[1]


def capture_client_errors() -> ClientErrors:
    """Route aiokafka's error records to a :class:`ClientErrors` (and nowhere else) until released."""
    client = logging.getLogger("aiokafka")
    handler = ClientErrors()
    handler._restore = (client.level, client.propagate)
    client.setLevel(logging.ERROR)
    client.propagate = False
    client.addHandler(handler)
    return handler


async def topic_denied(client: AIOKafkaConsumer, topic: str) -> bool:
    """Whether the broker says this client may not see ``topic``: a deny-by-default cluster
    leaves a topic outside the user's ACLs out of its answers, so without asking for it by
    name it looks like a missing one. Guarded like :func:`refresh_metadata` (false if aiokafka
    changes)."""
    inner = getattr(client, "_client", None)
    add_topic = getattr(inner, "add_topic", None)
    if add_topic is None:
        return False
    await add_topic(topic)  # the next metadata request names it
    return topic in set(getattr(getattr(inner, "cluster", None), "unauthorized_topics", ()) or ())


async def start(client: Any) -> Any:
    """Start a producer or consumer; if it cannot start (no broker), close it before the
    error propagates, so nothing is left half-open."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client
