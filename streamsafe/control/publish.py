"""Publish a policy to the control topic (``streamsafe policy publish``)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path

import yaml

from streamsafe import clients
from streamsafe.control.policies import LIVE_KEY, SHADOW_PREFIX
from streamsafe.events.contract import POLICY
from streamsafe.events.encode import encode_policy_message
from streamsafe.policy.loader import load_policy
from streamsafe.policy.model import Policy
from streamsafe.settings import Settings

__all__ = ["publish_policy", "retire_shadow"]


async def publish_policy(settings: Settings, source: Path | str, shadow: str | None = None,
                         *, check: bool = True) -> Policy | None:
    """Validate the policy here first (a worker would refuse it anyway, but the person
    publishing should hear why at once), then publish it as live or as a named shadow.
    ``check=False`` publishes without local validation (to exercise the workers' refusal)."""
    text = source.read_text() if isinstance(source, Path) else source
    policy = load_policy(text) if check else None
    document = yaml.safe_load(text)
    key = LIVE_KEY if shadow is None else SHADOW_PREFIX + shadow
    await _send(settings, key, encode_policy_message(document, getpass.getuser(), int(time.time() * 1000)))
    return policy


async def retire_shadow(settings: Settings, shadow: str) -> None:
    await _send(settings, SHADOW_PREFIX + shadow, None)


async def _send(settings: Settings, key: str, value: bytes | None) -> None:
    producer = clients.producer(settings)
    await clients.start(producer)
    try:
        await producer.send_and_wait(settings.topic_name(POLICY), value, key=key.encode())
    finally:
        await producer.stop()
