"""Publish a policy to the control topic (``streamsafe policy publish``)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import yaml

from streamsafe import clients
from streamsafe.control.records import LIVE_KEY, SHADOW_PREFIX
from streamsafe.control.signing import SigningKey, signer_for
from streamsafe.events.contract import POLICY
from streamsafe.policy.loader import load_policy
from streamsafe.policy.model import Policy
from streamsafe.settings import Settings

__all__ = ["publish_policy", "publish_policy_document", "retire_shadow"]


async def publish_policy(settings: Settings, source: Path | str, shadow: str | None = None,
                         *, check: bool = True, signer: SigningKey | None = None) -> Policy | None:
    """Validate the policy here first (a worker would refuse it anyway, but the person
    publishing should hear why at once), then publish it, signed, as live or as a named shadow.
    ``check=False`` publishes without local validation (to exercise the workers' refusal)."""
    signer = signer or signer_for(settings.signing_key_file, "policies")
    text = source.read_text() if isinstance(source, Path) else source
    policy = load_policy(text) if check else None
    await publish_policy_document(settings, yaml.safe_load(text), shadow, signer=signer)
    return policy


async def publish_policy_document(settings: Settings, document: object, shadow: str | None = None,
                                  *, signer: SigningKey | None = None) -> None:
    """Publish a policy document (as found in a YAML file or on the topic), signed."""
    signer = signer or signer_for(settings.signing_key_file, "policies")
    key = LIVE_KEY if shadow is None else SHADOW_PREFIX + shadow
    record = {"schema_version": 1, "policy": document, "published_by": getpass.getuser(),
              "published_at_ms": int(time.time() * 1000)}
    await _send(settings, key, signer.sign_bytes(POLICY, key.encode(), record))


async def retire_shadow(settings: Settings, shadow: str, *, signer: SigningKey | None = None) -> None:
    """Retire a shadow with a signed record (a tombstone cannot be signed, and workers refuse one)."""
    signer = signer or signer_for(settings.signing_key_file, "policies")
    key = SHADOW_PREFIX + shadow
    record = {"schema_version": 1, "retired": True, "published_by": getpass.getuser(),
              "published_at_ms": int(time.time() * 1000)}
    await _send(settings, key, signer.sign_bytes(POLICY, key.encode(), record))


async def _send(settings: Settings, key: str, value: bytes | None) -> None:
    producer = clients.producer(settings)
    await clients.start(producer)
    try:
        await producer.send_and_wait(settings.topic_name(POLICY), value, key=key.encode())
    finally:
        await producer.stop()
