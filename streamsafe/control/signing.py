"""Ed25519 signatures on control records: bank entries, policies and review verdicts.

A signed record is the topic's JSON object with one more field, ``signature``:
``{"key_id": "<16 hex>", "alg": "ed25519", "sig": "<base64>"}``. What is signed is the
canonical encoding of

    {"context": "streamsafe/signed/v1", "topic": <contract topic name, no prefix>,
     "key": <the record key, base64>, "record": <the object without "signature">}

(orjson, keys sorted, no whitespace). The topic and the record key are inside, so a signed
shadow policy cannot be replayed as the live one, nor an entry under another entry's key,
nor a record on another topic. A signature says who wrote a record, not when: an old signed
record published again is valid again (a policy rollback is exactly that), which is why every
applied or refused record is written to the audit trail.

Verifying costs ~50-170 µs a record (the Ed25519 check itself, holding the GIL). A worker
judges each bank entry twice -- its control reader applies it, its audit reader audits it --
so :class:`TrustedKeys` remembers the records it verified (by SHA-256 of topic, key and
value; at most :data:`VERIFIED_MEMO` of them, the oldest forgotten first): the same bytes
verify the same way, and a hit still requires the signing key to be trusted.

The key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
Trusted public keys come from a PEM file (one or more ``PUBLIC KEY`` blocks) or a directory of
``*.pem`` / ``*.pub`` files: several keys at once, for rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streamsafe.errors import ConfigError, RejectedInput

__all__ = ["ALG", "BAD_SIGNATURE", "SIGNATURE", "SigningKey", "TrustedKeys", "canonical", "generate_key",
           "key_id_of", "signed_message", "signer_for", "signer_of"]

SIGNATURE = "signature"
ALG = "ed25519"
CONTEXT = "streamsafe/signed/v1"
#: the dead-letter reason of an unsigned, badly signed or unknown-key record
BAD_SIGNATURE = "bad_signature"
_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"
#: how many verified records :class:`TrustedKeys` remembers (~100 bytes each)
VERIFIED_MEMO = 131_072


def canonical(value: Any) -> bytes:
    """The one byte encoding of a JSON value: orjson, keys sorted at every level."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def signed_message(topic: str, key: bytes | None, record: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: context, topic, record key and the record without its signature."""
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    return canonical({"context": CONTEXT, "topic": topic, "key": base64.b64encode(key or b"").decode(),
                      "record": body})


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signer_of(record: Mapping[str, Any]) -> str | None:
    """The key id a record claims to be signed with (unverified; None: unsigned)."""
    signature = record.get(SIGNATURE)
    key_id = signature.get("key_id") if isinstance(signature, Mapping) else None
    return key_id if isinstance(key_id, str) else None


@dataclass(frozen=True)
class SigningKey:
    """A private key and its id; :meth:`sign` returns the record with its signature."""

    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path | str) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read signing key {path}: {exc}") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"signing key {path} is not an Ed25519 private key")
        return cls(key_id_of(private.public_key()), private)

    def sign(self, topic: str, key: bytes | None, record: Mapping[str, Any]) -> dict[str, Any]:
        # round-trip first: what is signed is exactly what a reader will parse
        body = orjson.loads(orjson.dumps({k: v for k, v in record.items() if k != SIGNATURE}))
        sig = self.private.sign(signed_message(topic, key, body))
        return {**body, SIGNATURE: {"key_id": self.key_id, "alg": ALG, "sig": base64.b64encode(sig).decode()}}

    def sign_bytes(self, topic: str, key: bytes | None, record: Mapping[str, Any]) -> bytes:
        return orjson.dumps(self.sign(topic, key, record))


class TrustedKeys:
    """The public keys whose signatures a worker accepts, by key id."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], source: str = "", *,
                 memo_size: int = VERIFIED_MEMO) -> None:
        self.keys = dict(keys)
        self.source = source
        self.memo_size = memo_size
        self._verified: dict[bytes, str] = {}  # digest of (topic, key, value) -> key id; insertion order
        self.verifications = 0  # signatures checked (memo hits excluded)

    @classmethod
    def load(cls, path: Path | str | None) -> TrustedKeys:
        """Keys from a PEM file or a directory of ``*.pem``/``*.pub`` files (None: no key is trusted)."""
        if path is None:
            return cls({}, "")
        path = Path(path)
        files = sorted(p for p in path.iterdir() if p.suffix in (".pem", ".pub")) if path.is_dir() else [path]
        keys: dict[str, Ed25519PublicKey] = {}
        for file in files:
            try:
                text = file.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read trusted keys {file}: {exc}") from exc
            blocks = [_PEM_BEGIN + part for part in text.split(_PEM_BEGIN)[1:]]
            if not blocks and not path.is_dir():
                raise ConfigError(f"{file} holds no PEM public key")
            for block in blocks:
                try:
                    public = serialization.load_pem_public_key(block)
                except ValueError as exc:
                    raise ConfigError(f"{file}: not a PEM public key: {exc}") from exc
                if not isinstance(public, Ed25519PublicKey):
                    raise ConfigError(f"{file}: only Ed25519 public keys can be trusted")
                keys[key_id_of(public)] = public
        return cls(keys, str(path))

    def __len__(self) -> int:
        return len(self.keys)

    def verify(self, topic: str, key: bytes | None, record: Mapping[str, Any]) -> str:
        """The key id that signed ``record``; :class:`RejectedInput` ``bad_signature`` if it is
        unsigned, signed by a key not trusted here, or the signature does not hold."""
        signature = record.get(SIGNATURE)
        if signature is None:
            raise RejectedInput(BAD_SIGNATURE, "unsigned")
        if not isinstance(signature, Mapping) or signature.get("alg") != ALG:
            raise RejectedInput(BAD_SIGNATURE, f"signature must be an object with alg {ALG!r}")
        key_id, sig = signature.get("key_id"), signature.get("sig")
        if not isinstance(key_id, str) or not isinstance(sig, str):
            raise RejectedInput(BAD_SIGNATURE, "signature needs key_id and sig strings")
        public = self.keys.get(key_id)
        if public is None:
            raise RejectedInput(BAD_SIGNATURE, f"key {key_id} is not trusted")
        self.verifications += 1
        try:
            public.verify(base64.b64decode(sig, validate=True), signed_message(topic, key, record))
        except (InvalidSignature, binascii.Error, ValueError):
            raise RejectedInput(BAD_SIGNATURE, f"signature by key {key_id} does not verify") from None
        return key_id

    def verify_bytes(self, topic: str, key: bytes | None, value: bytes | None) -> tuple[dict[str, Any], str]:
        """Parse and verify a record value (a tombstone carries no signature and is refused);
        a record verified before is not checked again while its key is still trusted."""
        if value is None:
            raise RejectedInput(BAD_SIGNATURE, "a tombstone carries no signature; publish a signed removal")
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RejectedInput("malformed_json", str(exc)) from None
        if not isinstance(record, dict):
            raise RejectedInput("not_an_object", "a control record must be a JSON object")
        digest = _digest(topic, key, value)
        known = self._verified.get(digest)
        if known is not None and known in self.keys:
            return record, known
        key_id = self.verify(topic, key, record)
        if self.memo_size > 0:
            if len(self._verified) >= self.memo_size:
                del self._verified[next(iter(self._verified))]
            self._verified[digest] = key_id
        return record, key_id


def _digest(topic: str, key: bytes | None, value: bytes) -> bytes:
    h = hashlib.sha256(topic.encode())
    h.update(b"\0%d\0" % len(key or b""))
    h.update(key or b"")
    h.update(value)
    return h.digest()


def signer_for(path: Path | str | None, what: str = "control records") -> SigningKey:
    """The signing key at ``path`` (``--signing-key`` or ``STREAMSAFE_SIGNING_KEY_FILE``); nothing is
    published unsigned, so no key is a :class:`ConfigError` that says how to get one."""
    if path is None:
        raise ConfigError(f"{what} are signed: pass --signing-key FILE or set STREAMSAFE_SIGNING_KEY_FILE "
                          "(make one with: streamsafe keys generate --out DIR)")
    return SigningKey.load(path)


def generate_key(out_dir: Path, name: str = "streamsafe") -> tuple[Path, Path, str]:
    """Write ``<name>.key`` (private, mode 0600) and ``<name>.pub`` into ``out_dir``; returns
    both paths and the key id. Refuses to overwrite an existing private key."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ConfigError(f"key name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if private_path.exists():
        raise ConfigError(f"{private_path} exists; choose another --name")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = private.public_key()
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id_of(public)
