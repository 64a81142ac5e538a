"""The pin: the copied drain loop is only valid for the Faust release it was copied from."""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata

from faust.transport import consumer as _stock_consumer
from faust.transport.drivers import aiokafka as _aiokafka_driver

__all__ = ["EXPECTED_DRAIN_SHA256", "EXPECTED_FAUST_VERSION", "FaustPinError", "check_faust_pin",
           "drain_messages_sha256"]

#: The only faust-streaming release whose drain loop the fast consumer copies.
EXPECTED_FAUST_VERSION = "0.15.3"
#: sha256 of ``inspect.getsource(faust.transport.consumer.Consumer._drain_messages)``
#: in faust-streaming 0.15.3 (the same on PyPI and in the project's venv).
EXPECTED_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


class FaustPinError(RuntimeError):
    """The installed Faust is not the one StreamSafe's drain loop was copied from."""


def drain_messages_sha256() -> str:
    """sha256 of the installed ``faust.transport.consumer.Consumer._drain_messages`` source."""
    source = inspect.getsource(_stock_consumer.Consumer._drain_messages)
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def check_faust_pin() -> None:
    """Raise :class:`FaustPinError` unless Faust is exactly the release the fast path copies.

    :meth:`Consumer._drain_messages` is a copy of Faust's, with one line
    changed; running it over a different Faust would silently drop whatever
    upstream changed there. Checked: the installed distribution version, the
    hash of the upstream method's source, and that the aiokafka driver still
    inherits that method (an override there would be shadowed by ours).
    """
    problems: list[str] = []
    try:
        version = metadata.version("faust-streaming")
    except metadata.PackageNotFoundError:
        version = "not installed"
    if version != EXPECTED_FAUST_VERSION:
        problems.append(f"faust-streaming is {version}, expected {EXPECTED_FAUST_VERSION}")
    try:
        digest = drain_messages_sha256()
    except (OSError, TypeError) as exc:  # e.g. a deployment that ships .pyc only
        digest = f"unavailable ({exc})"
    if digest != EXPECTED_DRAIN_SHA256:
        problems.append(
            f"faust.transport.consumer.Consumer._drain_messages source sha256 is {digest}, "
            f"expected {EXPECTED_DRAIN_SHA256}"
        )
    driver_drain = _aiokafka_driver.Consumer._drain_messages
    if driver_drain is not _stock_consumer.Consumer._drain_messages:
        problems.append("faust.transport.drivers.aiokafka.Consumer now overrides _drain_messages")
    if problems:
        raise FaustPinError(
            "StreamSafe's Faust transport copies Faust's message drain loop and is pinned to "
            f"faust-streaming {EXPECTED_FAUST_VERSION}: "
            + "; ".join(problems)
            + ". Re-read the new Consumer._drain_messages, port the change into "
            "streamsafe.transport.Consumer._drain_messages, then update the pin."
        )
