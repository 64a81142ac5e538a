"""Throwaway signing keys for tests: nothing runs unsigned, tests included.

One key signs policies and bank entries (a bank/policy admin's), another review verdicts
(the review tool's). Unit tests trust them in memory; integration tests write them to files
(:func:`write_keys`) and pass the files to workers and commands as settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamsafe.control.signing import SigningKey, TrustedKeys, key_id_of
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY, REVIEW_VERDICTS


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(key_id_of(private.public_key()), private)


CONTROL_KEY = new_key()
REVIEW_KEY = new_key()


def trust(*keys: SigningKey) -> TrustedKeys:
    return TrustedKeys({k.key_id: k.private.public_key() for k in keys})


CONTROL_TRUST = trust(CONTROL_KEY)
VERDICT_TRUST = trust(REVIEW_KEY)


def encoded(topic: str, key: bytes | None, value: dict[str, Any] | bytes | None) -> bytes | None:
    """A record's value as a test sends it: control records (a dict) signed by the key of their kind."""
    if value is None or isinstance(value, bytes):
        return value
    if topic in (HASHBANK_ENTRIES, POLICY):
        return CONTROL_KEY.sign_bytes(topic, key, value)
    if topic == REVIEW_VERDICTS:
        return REVIEW_KEY.sign_bytes(topic, key, value)
    return orjson.dumps(value)


def write_private(key: SigningKey, path: Path) -> Path:
    path.write_bytes(key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def write_public(keys: list[SigningKey], path: Path) -> Path:
    path.write_bytes(b"".join(k.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) for k in keys))
    return path


def write_keys(directory: Path) -> dict[str, Path]:
    """The session's keys as files: ``control.key``/``review.key`` (private) and the trusted
    ``control.pub``/``verdicts.pub`` a worker is given."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"control_key": write_private(CONTROL_KEY, directory / "control.key"),
            "review_key": write_private(REVIEW_KEY, directory / "review.key"),
            "control_trust": write_public([CONTROL_KEY], directory / "control.pub"),
            "verdict_trust": write_public([REVIEW_KEY], directory / "verdicts.pub")}
