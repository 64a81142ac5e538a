"""The ``streamsafe`` command group, its shared options and its one error-to-exit-code path."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from streamsafe.errors import StreamSafeError
from streamsafe.settings import Settings

__all__ = ["cli", "present", "settings_options", "uses_broker"]


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that talks to a broker; unset ones fall back
    to STREAMSAFE_* environment variables, then to defaults."""

    @click.option("--broker", help="kafka://host:port (env STREAMSAFE_BROKER)")
    @click.option("--topic-prefix", help="prefix for every topic name (env STREAMSAFE_TOPIC_PREFIX)")
    @functools.wraps(func)
    def wrapper(broker: str | None, topic_prefix: str | None, **kwargs: Any) -> Any:
        try:
            settings = Settings.from_env(broker_url=broker, topic_prefix=topic_prefix)
        except StreamSafeError as exc:
            raise click.UsageError(str(exc)) from exc
        uses_broker(settings)
        return func(settings, **kwargs)

    return wrapper


_BROKER = "streamsafe.broker"  # ctx.meta key: the bootstrap servers a broker command talks to


class _StreamSafeGroup(click.Group):
    """The one place errors become exit codes: a ``StreamSafeError`` is printed as one
    ``Error:`` line (exit 1), and so is a broker that cannot be reached while a broker
    command runs, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamSafeError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            message = _broker_failure(ctx, exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc


def _broker_failure(ctx: click.Context, exc: Exception) -> str | None:
    """One line for a connection, authentication or authorization failure of a broker command
    (with the client's own reason: a refused password, an untrusted certificate), or None for
    anything else."""
    import socket

    from aiokafka.errors import (
        AuthenticationFailedError,
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        KafkaConnectionError,
        KafkaTimeoutError,
        SaslAuthenticationFailed,
        TopicAuthorizationFailedError,
    )

    servers = ctx.meta.get(_BROKER)
    # socket failures only: a file the command cannot read is an OSError too, not the broker's
    unreachable = KafkaConnectionError | KafkaTimeoutError | ConnectionError | TimeoutError | socket.gaierror
    refused = (AuthenticationFailedError | SaslAuthenticationFailed | TopicAuthorizationFailedError
               | GroupAuthorizationFailedError | ClusterAuthorizationFailedError)
    if servers is None or not isinstance(exc, unreachable | refused):
        return None
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, refused):
        named = detail if type(exc).__name__ in detail else f"{type(exc).__name__}: {detail}"
        return f"the broker at {servers} refused {ctx.meta.get(_USER) or 'this client'}: {named}"
    reason = ctx.meta.get(_REASON)
    return f"cannot reach the broker at {servers}: {detail}" + (f" ({reason.message})" if reason and reason.message
                                                               else "")


_USER = "streamsafe.user"  # ctx.meta key: the SASL user a broker command logs in as
_REASON = "streamsafe.reason"  # ctx.meta key: its clients.ClientErrors


def uses_broker(settings: Settings) -> None:
    """Note that the running command talks to ``settings``' broker, for its error line.

    A one-shot command has no logging set up, so aiokafka's own error records (a refused
    connection, then an "Unclosed" client report at exit) would print as stray lines
    around that one line; a failure reaches the user as the exception instead, with the
    client's last error as its reason. The worker configures logging itself and keeps them."""
    ctx = click.get_current_context()
    ctx.meta[_BROKER] = settings.bootstrap_servers
    ctx.meta[_USER] = settings.security.sasl_username
    if ctx.command.name != "worker":
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        if _REASON not in ctx.meta:
            from streamsafe.clients import capture_client_errors

            ctx.meta[_REASON] = capture_client_errors()


@click.group(cls=_StreamSafeGroup)
@click.version_option(package_name="streamsafe")
def cli() -> None:
    """StreamSafe: stop child sexual abuse and grooming while a stream is live."""


def present(options: dict[str, Any]) -> dict[str, Any]:
    """The options a user gave (the rest fall back to the environment)."""
    return {k: v for k, v in options.items() if v is not None}
