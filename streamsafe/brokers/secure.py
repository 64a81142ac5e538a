"""A secured Apache Kafka on loopback, as a platform's shared cluster is: SCRAM-SHA-512 over TLS
(SASL_SSL), KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, a SCRAM
user per role (:mod:`streamsafe.roles`) holding exactly the ACLs ``streamsafe acls`` renders.

The CA and the broker's certificate are made at start (``cryptography``) and written as PEM
files the broker reads directly (``ssl.keystore.type=PEM``); clients trust the CA file. Each
role's password is random, written to ``<data dir>/credentials/<user>.password`` (mode 0600)
and never printed: clients read it through ``STREAMSAFE_SASL_PASSWORD_FILE``.

The broker also keeps a PLAINTEXT listener on 127.0.0.1 whose anonymous user is a super user:
the broker's own (between its listeners), its readiness check, and where topics and ACLs are
created. It is a development and test broker: anyone on the machine can use that port.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamsafe.brokers.base import BrokerProcess, free_ports
from streamsafe.brokers.kafka import start_kafka
from streamsafe.errors import BrokerError
from streamsafe.settings import KafkaSecurity, Settings

__all__ = ["ADMIN_USER", "SCRAM_MECHANISM", "Credential", "SecureKafka", "TlsFiles", "acl_binding", "apply_acls",
           "start_secure_kafka", "start_streamsafe_secure", "write_certificates", "write_password"]

SCRAM_MECHANISM = "SCRAM-SHA-512"
#: the development broker's cluster admin (a super user), beside one user per role
ADMIN_USER = "admin"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA clients trust, and the broker's certificate chain and private key."""

    ca: Path
    certificate_chain: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Credential:
    """One SCRAM user: its name and the file holding its password (0600)."""

    user: str
    password_file: Path

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


def _write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` readable by its owner alone (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)
    return path


def write_password(directory: Path, user: str, password: str | None = None) -> Credential:
    """A credential for ``user`` with ``password`` (default: 32 random bytes, URL-safe) in ``directory``."""
    password = password or secrets.token_urlsafe(32)
    return Credential(user, _write_private(directory / f"{user}.password", password.encode()))


def write_certificates(directory: Path, hosts: Iterable[str] = ("127.0.0.1", "localhost"),
                       days: int = 30) -> TlsFiles:
    """A fresh CA and a broker certificate it signs for ``hosts`` (IP addresses or DNS names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StreamSafe development"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(name("StreamSafe development CA")).issuer_name(
        name("StreamSafe development CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alternative: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternative.append(x509.DNSName(host))
    certificate = (x509.CertificateBuilder().subject_name(name("StreamSafe development broker")).issuer_name(
        ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain = directory / "broker-chain.pem"
    chain.write_bytes(certificate.public_bytes(pem) + ca.public_bytes(pem))
    key_file = _write_private(directory / "broker-key.pem", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return TlsFiles(ca_file, chain, key_file)


@dataclass
class SecureKafka:
    """A running secured broker: its SASL_SSL address, CA file, and the users it knows."""

    broker: BrokerProcess
    bootstrap: str  # SASL_SSL, host:port
    admin_bootstrap: str  # PLAINTEXT, the super user's (loopback)
    tls: TlsFiles
    credentials: dict[str, Credential]  # by user name
    data_dir: Path
    roles: dict[str, str] = field(default_factory=dict)  # role -> user, once its ACLs are applied

    def role_settings(self, role: str, base: Settings | None = None) -> Settings:
        """``base`` (or the defaults) connecting as ``role``'s user."""
        return self.settings(self.roles[role], base)

    def describe(self) -> dict[str, Any]:
        """What a client needs, as ``streamsafe broker start --secure --json`` prints it: passwords
        by file (0600), never by value, so that stdout (a terminal's scrollback, a CI log) holds none."""
        return {"broker": f"kafka://{self.bootstrap}", "bootstrap": self.bootstrap, "security_protocol": "SASL_SSL",
                "sasl_mechanism": SCRAM_MECHANISM, "ca_file": str(self.tls.ca),
                "admin_bootstrap": self.admin_bootstrap, "data_dir": str(self.data_dir),
                "roles": {role: {"user": user, "password_file": str(self.credentials[user].password_file)}
                          for role, user in sorted(self.roles.items())},
                "admin": ({"user": ADMIN_USER, "password_file": str(self.credentials[ADMIN_USER].password_file)}
                          if ADMIN_USER in self.credentials else None)}

    def security(self, user: str) -> KafkaSecurity:
        """What a client logging in as ``user`` needs (password read from its file)."""
        credential = self.credentials[user]
        return KafkaSecurity(protocol="SASL_SSL", ssl_cafile=str(self.tls.ca), sasl_mechanism=SCRAM_MECHANISM,
                             sasl_username=user, sasl_password=credential.password)

    def environment(self, user: str) -> dict[str, str]:
        """``STREAMSAFE_*`` variables for a client logging in as ``user`` (the password by file)."""
        return {"STREAMSAFE_BROKER": f"kafka://{self.bootstrap}", "STREAMSAFE_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMSAFE_SSL_CAFILE": str(self.tls.ca), "STREAMSAFE_SASL_MECHANISM": SCRAM_MECHANISM,
                "STREAMSAFE_SASL_USERNAME": user,
                "STREAMSAFE_SASL_PASSWORD_FILE": str(self.credentials[user].password_file)}

    def settings(self, user: str, base: Settings | None = None) -> Settings:
        return (base or Settings()).replace(broker_url=f"kafka://{self.bootstrap}", security=self.security(user))

    def stop(self) -> None:
        self.broker.stop()

    def __enter__(self) -> SecureKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_secure_kafka(users: Iterable[str], data_dir: Path | None = None, *,
                       passwords: Mapping[str, str] | None = None, admin: str | None = ADMIN_USER,
                       heap: str = "512m", ready_timeout_s: float = 120.0) -> SecureKafka:
    """Start a one-node KRaft broker with a SASL_SSL listener (SCRAM-SHA-512, a CA made now) and
    deny-by-default ACLs; ``users`` get SCRAM credentials (random passwords unless ``passwords``
    names them), written to ``<data dir>/credentials``; ``admin`` is a super user on the SASL_SSL
    listener too (a cluster admin's: ``topics apply``, ``kafka-acls``). No ACLs yet: :func:`apply_acls` adds them."""
    users = [*users, *([admin] if admin else [])]
    data = Path(data_dir or tempfile.mkdtemp(prefix="streamsafe-kafka-secure-"))
    tls = write_certificates(data / "tls")
    credentials = {user: write_password(data / "credentials", user, (passwords or {}).get(user))
                   for user in users}
    keystore = _write_keystore(tls)
    port, controller_port, secure_port = free_ports(3)
    broker = start_kafka(data / "broker", port=port, controller_port=controller_port, heap=heap,
                         ready_timeout_s=ready_timeout_s, kind="Apache Kafka (SASL_SSL, ACLs)",
                         scram_users={u: c.password for u, c in credentials.items()}, extra_properties=f"""
listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms={SCRAM_MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={_SCRAM_LOGIN}
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
listener.name.sasl_ssl.ssl.truststore.type=PEM
listener.name.sasl_ssl.ssl.truststore.location={tls.ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users={";".join(["User:ANONYMOUS", *([f"User:{admin}"] if admin else [])])}
allow.everyone.if.no.acl.found=false
""")
    return SecureKafka(broker, f"127.0.0.1:{secure_port}", broker.bootstrap, tls, credentials, data)


def start_streamsafe_secure(settings: Settings, data_dir: Path | None = None, **options: Any) -> SecureKafka:
    """A secured broker ready for StreamSafe: a user per role (``<app id>-<role>``), the
    contract's topics and the worker's changelogs created (one replica), and exactly the ACLs
    ``streamsafe acls --format json`` renders for ``settings``' app id and topic prefix applied."""
    import asyncio

    from streamsafe.app import changelog_topics
    from streamsafe.brokers.topics import apply_topics
    from streamsafe.deploy.acls import acl_document
    from streamsafe.deploy.options import RenderOptions
    from streamsafe.events.contract import load_contract

    contract = load_contract()
    document = acl_document(RenderOptions(settings), contract)
    secure = start_secure_kafka(document["users"].values(), data_dir, **options)
    try:
        admin = settings.replace(broker_url=f"kafka://{secure.admin_bootstrap}", security=KafkaSecurity(),
                                 replication_factor=1, min_insync_replicas=1, create_topics=True)
        asyncio.run(apply_topics(admin, contract, internal=changelog_topics(admin, contract)))
        apply_acls(secure.admin_bootstrap, document["acls"])
    except BaseException:
        secure.stop()
        raise
    secure.roles = dict(document["users"])
    return secure


def _write_keystore(tls: TlsFiles) -> Path:
    """The broker's PEM keystore: its private key followed by its certificate chain (0600)."""
    return _write_private(tls.certificate_chain.parent / "broker-keystore.pem",
                   tls.key.read_bytes() + tls.certificate_chain.read_bytes())


def apply_acls(admin_bootstrap: str, acls: Iterable[Mapping[str, Any]], timeout_s: float = 60.0) -> int:
    """Create ``acls`` (``streamsafe acls --format json`` entries) through the super-user
    listener and wait until the broker enforces them all; the number created."""
    try:
        from confluent_kafka import admin as kafka_admin
    except ImportError as exc:  # a test dependency: the development broker's alone
        raise BrokerError("creating ACLs needs confluent-kafka (pip install 'streamsafe[test]')") from exc
    bindings = [acl_binding(kafka_admin, acl) for acl in acls]
    client = kafka_admin.AdminClient({"bootstrap.servers": admin_bootstrap, "log_level": 4})
    for future in client.create_acls(bindings).values():
        future.result(timeout=timeout_s)
    everything = kafka_admin.AclBindingFilter(
        kafka_admin.ResourceType.ANY, None, kafka_admin.ResourcePatternType.ANY, None, None,
        kafka_admin.AclOperation.ANY, kafka_admin.AclPermissionType.ANY)
    deadline = time.monotonic() + timeout_s
    while len(client.describe_acls(everything).result(timeout=timeout_s)) < len(bindings):
        if time.monotonic() > deadline:
            raise BrokerError(f"ACLs not in force after {timeout_s:.0f} s")
        time.sleep(0.2)
    return len(bindings)


def acl_binding(kafka_admin: Any, acl: Mapping[str, Any]) -> Any:
    """One ``streamsafe acls`` JSON entry as a confluent-kafka ``AclBinding``."""
    kind = {"topic": kafka_admin.ResourceType.TOPIC, "group": kafka_admin.ResourceType.GROUP,
            "cluster": kafka_admin.ResourceType.BROKER}[acl["resource_type"]]
    pattern = {"literal": kafka_admin.ResourcePatternType.LITERAL,
               "prefixed": kafka_admin.ResourcePatternType.PREFIXED}[acl["pattern_type"]]
    operation = getattr(kafka_admin.AclOperation,
                        "".join("_" + c if c.isupper() else c for c in acl["operation"]).lstrip("_").upper())
    return kafka_admin.AclBinding(kind, acl["resource_name"], pattern, acl["principal"], acl.get("host", "*"),
                                  operation, kafka_admin.AclPermissionType.ALLOW)
