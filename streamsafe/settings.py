"""One frozen settings object, built from the environment (prefix ``STREAMSAFE_``)
and command-line overrides, validated when built and never read at import time.

Every setting, its environment variable, default and meaning are in one table,
:data:`ENV_FIELDS`: :meth:`Settings.from_env` reads it, :meth:`Settings.to_env` writes it
(the environment of a spawned worker), and the table below is rendered from it when
this module is imported (``python -c "import streamsafe.settings as s; print(s.__doc__)"``).
Kafka TLS/SASL options are in :data:`SECURITY_ENV`; the SASL password may also come from
a file named by ``STREAMSAFE_SASL_PASSWORD_FILE``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamsafe.errors import ConfigError

__all__ = ["KafkaSecurity", "Settings"]

ENV_PREFIX = "STREAMSAFE_"
STORES = ("memory://", "rocksdb://")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS and SASL options passed through to every Kafka client StreamSafe opens."""

    protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")

def _text_flag(value: bool) -> str:
    return "true" if value else "false"


#: environment variable (without the prefix) -> (field, parse, meaning): the one table of settings
ENV_FIELDS: dict[str, tuple[str, Any, str]] = {
    "BROKER": ("broker_url", str, "kafka://host:port[,host:port]"),
    "TOPIC_PREFIX": ("topic_prefix", str, "prefix of every topic name"),
    "APP_ID": ("app_id", str, "consumer group and table namespace"),
    "STORE": ("store", str, "table store: memory:// or rocksdb://"),
    "DATA_DIR": ("data_dir", Path, "where rocksdb tables live"),
    "HASH_LIST": ("hash_list", Path, "a hash list loaded as a bank at start"),
    "POLICY_FILE": ("policy_file", Path, "policy until one is published (default: the packaged one)"),
    "MAX_MESSAGE_BYTES": ("max_message_bytes", int, "larger input values are dead-lettered as oversized"),
    "SESSION_TIMEOUT_S": ("session_timeout_s", float, "consumer group session timeout"),
    "REBALANCE_TIMEOUT_S": ("rebalance_timeout_s", float, "consumer group rebalance timeout"),
    "COMMIT_INTERVAL_S": ("commit_interval_s", float, "offset commit interval"),
    "CHANGELOG_LINGER_S": ("changelog_linger_s", float, "table writes wait this long to go out together"),
    "INSTANCE_ID": ("instance_id", str, "static group membership: a stable id per worker (none: dynamic)"),
    "DELIVERY_TIMEOUT_S": ("delivery_timeout_s", float, "a send not acknowledged by then is resent"),
    "STALL_AFTER_S": ("stall_after_s", float, "not ready: a record in hand, or lag without a commit, for this long"),
    "CLOCK": ("clock", str, "processing clock: wall, or records (replay)"),
    "LOG_LEVEL": ("log_level", str, "debug, info, warning or error"),
    "LOG_FORMAT": ("log_format", str, "json or text"),
    "TRANSPORT": ("transport", str, "fast (task-free delivery) or stock (Faust's loop)"),
    "INPUT_METRICS": ("input_metrics", _flag, "per-record input counters"),
    "PREFILTER": ("prefilter", _flag, "screen frames outside Faust, forward only matches"),
    "MATCHES_IN_PROCESS": ("matches_in_process", _flag,
                           "the pre-filter steps on a match itself when this worker owns its partition"),
    "EVENT_LOOP": ("event_loop", str, "uvloop or asyncio"),
    "ENDED_STREAM_TTL_S": ("ended_stream_ttl_s", float, "state kept after stream.ended"),
    "INACTIVE_STREAM_TTL_S": ("inactive_stream_ttl_s", float, "state kept after it was last touched"),
    "SWEEP_INTERVAL_S": ("sweep_interval_s", float, "how often review deadlines and expiry are checked"),
    "BENIGN_COOLDOWN_S": ("benign_cooldown_s", float, "no re-escalation after a benign verdict for this long"),
    "PRESERVE_DAYS": ("preserve_days", int, "how long preservation requests ask evidence to be kept"),
    "P0_BREACH_RESTRICT": ("p0_breach_restrict", _flag, "restrict a stream whose P0 review deadline was missed"),
    "REPLICATION_FACTOR": ("replication_factor", int,
                           "copies of each partition of topics StreamSafe creates (none: each topic's, 3)"),
    "MIN_INSYNC_REPLICAS": ("min_insync_replicas", int,
                            "min.insync.replicas of topics it creates (none: each topic's, 2, at most RF-1)"),
    "CREATE_TOPICS": ("create_topics", _flag, "create missing topics at start (false: managed clusters)"),
    "IDEMPOTENT_PRODUCER": ("idempotent_producer", str, "auto (where the broker supports it), true or false"),
    "HTTP_HOST": ("http_host", str, "address of /metrics, /healthz, /readyz"),
    "HTTP_PORT": ("http_port", int, "port of /metrics, /healthz, /readyz (0: no HTTP server)"),
    "TRUSTED_CONTROL_KEYS": ("trusted_control_keys", Path,
                             "Ed25519 public keys (PEM file or directory) trusted to sign bank entries and policies"),
    "TRUSTED_VERDICT_KEYS": ("trusted_verdict_keys", Path,
                             "Ed25519 public keys (PEM file or directory) trusted to sign review verdicts"),
    "SIGNING_KEY_FILE": ("signing_key_file", Path,
                         "Ed25519 private key (PEM) this process signs the control records it writes with"),
}
#: environment variable -> KafkaSecurity field (the password travels as SASL_PASSWORD)
SECURITY_ENV = {
    "SECURITY_PROTOCOL": "protocol",
    "SSL_CAFILE": "ssl_cafile",
    "SSL_CERTFILE": "ssl_certfile",
    "SSL_KEYFILE": "ssl_keyfile",
    "SASL_MECHANISM": "sasl_mechanism",
    "SASL_USERNAME": "sasl_username",
    "SASL_PASSWORD": "sasl_password",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a StreamSafe process needs to know; see the module docstring."""

    broker_url: str = "kafka://127.0.0.1:9092"
    topic_prefix: str = ""
    app_id: str = "streamsafe"
    store: str = "memory://"
    data_dir: Path = Path(".streamsafe-data")
    hash_list: Path | None = None
    policy_file: Path | None = None
    max_message_bytes: int = 65536
    session_timeout_s: float = 10.0
    rebalance_timeout_s: float = 10.0
    commit_interval_s: float = 2.8
    changelog_linger_s: float = 0.01
    instance_id: str | None = None
    delivery_timeout_s: float = 10.0
    stall_after_s: float = 30.0
    clock: str = "wall"
    ended_stream_ttl_s: float = 3600.0
    inactive_stream_ttl_s: float = 21600.0
    sweep_interval_s: float = 5.0
    benign_cooldown_s: float = 1800.0
    preserve_days: int = 365
    p0_breach_restrict: bool = True
    input_metrics: bool = True
    prefilter: bool = True
    matches_in_process: bool = True
    transport: str = "fast"
    event_loop: str = "uvloop"
    log_level: str = "info"
    log_format: str = "json"
    http_host: str = "0.0.0.0"
    http_port: int = 8466
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    create_topics: bool = True
    idempotent_producer: str = "auto"
    trusted_control_keys: Path | None = None
    trusted_verdict_keys: Path | None = None
    signing_key_file: Path | None = None
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        if not self.broker_url.startswith("kafka://"):
            raise ConfigError(f"broker_url must look like kafka://host:port, got {self.broker_url!r}")
        if self.store not in STORES:
            raise ConfigError(f"store must be one of {STORES}, got {self.store!r}")
        if self.transport not in ("fast", "stock"):
            raise ConfigError("transport must be fast or stock")
        if self.clock not in ("wall", "records"):
            raise ConfigError("clock must be wall or records")
        if not 0 <= self.changelog_linger_s <= 3600:
            raise ConfigError(f"changelog_linger_s must be between 0 and 3600, got {self.changelog_linger_s}")
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ConfigError("event_loop must be uvloop or asyncio")
        if self.log_format not in ("json", "text"):
            raise ConfigError("log_format must be json or text")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level must be debug, info, warning or error")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("http_port must be 0..65535")
        if not 1024 <= self.max_message_bytes <= 1_000_000:
            raise ConfigError("max_message_bytes must be 1024..1000000 (the producer's and broker's limit)")
        if self.instance_id is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", self.instance_id):
            raise ConfigError("instance_id must be 1-200 letters, digits, '.', '_' or '-'")
        if self.delivery_timeout_s <= 0 or self.stall_after_s <= 0:
            raise ConfigError("delivery_timeout_s and stall_after_s must be positive")
        if any(n is not None and n < 1 for n in (self.replication_factor, self.min_insync_replicas)):
            raise ConfigError("replication_factor and min_insync_replicas must be at least 1")
        if (self.replication_factor is not None and self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ConfigError("min_insync_replicas cannot exceed replication_factor (no acks=all send would succeed)")
        if self.idempotent_producer not in ("auto", "true", "false"):
            raise ConfigError("idempotent_producer must be auto, true or false")
        if self.security.protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"security_protocol must be one of {SECURITY_PROTOCOLS}")
        if self.security.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"sasl_mechanism must be one of {SASL_MECHANISMS}")
        if self.security.protocol.startswith("SASL") and not (
            self.security.sasl_username and self.security.sasl_password
        ):
            raise ConfigError("SASL needs sasl_username and a sasl_password (or password file)")

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for aiokafka clients."""
        urls = re.split(r"[;,]", self.broker_url)
        return ",".join(u.strip().split("://", 1)[-1] for u in urls if u.strip())

    @property
    def faust_broker_url(self) -> str:
        """The broker URL for Faust, naming the transport (see :mod:`streamsafe.transport`):
        ``streamsafe://`` the task-free delivery path, ``streamsafe-stock://`` Faust's
        stock delivery loop; both with the safe seek after a rebalance."""
        scheme = "streamsafe" if self.transport == "fast" else "streamsafe-stock"
        return ";".join(f"{scheme}://{host}" for host in self.bootstrap_servers.split(","))

    @property
    def prefilter_group(self) -> str:
        """The frame pre-filter's consumer group (see :mod:`streamsafe.agents.prefilter`)."""
        return f"{self.app_id}-prefilter"

    @property
    def audit_group(self) -> str:
        """The consumer group of the workers' audit reader (see :mod:`streamsafe.control.auditor`)."""
        return f"{self.app_id}-audit"

    @property
    def prefilter_instance_id(self) -> str | None:
        """The pre-filter's static member id, derived from :attr:`instance_id` (None: dynamic)."""
        return None if self.instance_id is None else f"{self.instance_id}-prefilter"

    def topic_name(self, base: str) -> str:
        """The broker-side name of a contract topic (with the configured prefix)."""
        return f"{self.topic_prefix}{base}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The ``STREAMSAFE_*`` environment that :meth:`from_env` turns back into these
        settings (for spawned workers: every setting, security included)."""
        env: dict[str, str] = {}
        for name, (attr, _, _) in ENV_FIELDS.items():
            value = getattr(self, attr)
            if value is not None:
                env[ENV_PREFIX + name] = _text_flag(value) if isinstance(value, bool) else str(value)
        for name, attr in SECURITY_ENV.items():
            value = getattr(self.security, attr)
            if value is not None:
                env[ENV_PREFIX + name] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``STREAMSAFE_*`` variables, then apply non-None overrides."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        values: dict[str, Any] = {}
        for env_name, (attr, convert, _) in ENV_FIELDS.items():
            raw = get(env_name)
            if raw is not None:
                try:
                    values[attr] = convert(raw)
                except ValueError as exc:
                    raise ConfigError(f"{ENV_PREFIX}{env_name}={raw!r}: {exc}") from exc

        password = get("SASL_PASSWORD")
        password_file = get("SASL_PASSWORD_FILE")
        if password is None and password_file is not None:
            try:
                password = Path(password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read SASL password file: {exc}") from exc
        values["security"] = KafkaSecurity(
            protocol=get("SECURITY_PROTOCOL") or "PLAINTEXT",
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
            sasl_mechanism=get("SASL_MECHANISM") or "PLAIN",
            sasl_username=get("SASL_USERNAME"),
            sasl_password=password,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def settings_table() -> str:
    """Every setting as a table: field, environment variable, default, meaning."""
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    rows = [(attr, ENV_PREFIX + name, "none" if defaults[attr] in (None, "") else str(defaults[attr]), meaning)
            for name, (attr, _, meaning) in ENV_FIELDS.items()]
    rows += [(f"security.{attr}", ENV_PREFIX + name, "PLAINTEXT" if attr == "protocol" else
              "PLAIN" if attr == "sasl_mechanism" else "none", "Kafka TLS/SASL") for name, attr in SECURITY_ENV.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(("field", "env", "default", "meaning"), widths, strict=True)),
             rule, *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows), rule]
    return "\n".join(lines)


__doc__ = f"{__doc__}\n{settings_table()}\n"
