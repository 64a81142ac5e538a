"""``streamsafe coop``: escalations to a platform's Coop review queues, reviewers' verdicts back.

Secrets never travel on the command line (it shows in ``ps`` and shell history): Coop's API
key comes from ``--api-key-file`` or ``STREAMSAFE_COOP_API_KEY``, the reviewer pseudonym key
from ``--reviewer-key-file`` or ``STREAMSAFE_COOP_REVIEWER_KEY``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
from pathlib import Path

import click

from streamsafe.cli.base import cli, settings_options
from streamsafe.cli.signing import signing_key_option
from streamsafe.settings import Settings

__all__ = ["read_secret"]

log = logging.getLogger(__name__)

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def read_secret(path: Path | None, env: str, what: str, *, required: bool) -> str | None:
    """A secret from ``path`` (surrounding whitespace dropped), else from the environment variable ``env``."""
    value = path.read_text().strip() if path is not None else os.environ.get(env, "").strip()
    if not value and required:
        raise click.UsageError(f"{what}: give a file (see --help) or set {env}")
    return value or None


def _logging(level: str) -> None:
    from streamsafe.observability.logs import json_logging_config

    logging.config.dictConfig(json_logging_config(level.upper()))


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@cli.group()
def coop() -> None:
    """Coop (ROOST) review queues: forward escalations, receive verdicts."""


@coop.command("forward")
@settings_options
@click.option("--coop-url", envvar="STREAMSAFE_COOP_URL", required=True,
              help="Coop's base URL, e.g. https://coop.example.org (env STREAMSAFE_COOP_URL)")
@click.option("--mapping", envvar="STREAMSAFE_COOP_MAPPING", type=_FILE, required=True,
              help="the Coop mapping file, YAML (env STREAMSAFE_COOP_MAPPING)")
@click.option("--api-key-file", type=_FILE, help="file holding Coop's API key (else env STREAMSAFE_COOP_API_KEY)")
@click.option("--group-id", help="consumer group (default: <app id>-reviewer-tool-coop, inside the group prefix "
                                  "the reviewer-tool Kafka role may use)")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option("--metrics-port", default=8468, show_default=True, type=click.IntRange(0, 65535),
              help="serves /metrics and /healthz")
@click.option("--max-backoff", default=30.0, show_default=True, help="longest wait between attempts, seconds")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def coop_forward(settings: Settings, coop_url: str, mapping: Path, api_key_file: Path | None, group_id: str | None,
                 metrics_host: str, metrics_port: int, max_backoff: float, log_level: str) -> None:
    """Forward escalations to Coop's report API (runs until stopped)."""
    from streamsafe.integrations.coop.forwarder import CoopClient, Forwarder, ForwarderConfig
    from streamsafe.integrations.coop.mapping import load_mapping
    from streamsafe.integrations.coop.metrics import CoopMetrics, serve_metrics

    loaded = load_mapping(mapping)
    api_key = read_secret(api_key_file, "STREAMSAFE_COOP_API_KEY", "Coop's API key", required=True)
    assert api_key is not None
    _logging(log_level)

    async def run() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        metrics = CoopMetrics.create()
        runner = await serve_metrics(metrics, metrics_host, metrics_port)
        try:
            async with CoopClient(coop_url, api_key) as client:
                forwarder = Forwarder(settings, loaded, client, metrics,
                                      ForwarderConfig(group_id=group_id or f"{settings.app_id}-reviewer-tool-coop",
                                                      max_backoff_s=max_backoff))
                log.info("forwarding escalations to %s", coop_url)
                await forwarder.run(stop)
        finally:
            await runner.cleanup()

    asyncio.run(run())


@coop.command("serve")
@settings_options
@signing_key_option
@click.option("--mapping", envvar="STREAMSAFE_COOP_MAPPING", type=_FILE, required=True,
              help="the Coop mapping file, YAML (env STREAMSAFE_COOP_MAPPING)")
@click.option("--public-key", envvar="STREAMSAFE_COOP_PUBLIC_KEY", type=_FILE, required=True,
              help="Coop's webhook signature verification key, PEM (env STREAMSAFE_COOP_PUBLIC_KEY)")
@click.option("--reviewer-key-file", type=_FILE,
              help="file holding the key of reviewer pseudonyms (else env STREAMSAFE_COOP_REVIEWER_KEY)")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8467, show_default=True, type=click.IntRange(0, 65535))
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def coop_serve(settings: Settings, mapping: Path, public_key: Path, reviewer_key_file: Path | None,
               host: str, port: int, log_level: str) -> None:
    """Receive Coop's signed action callbacks and publish them as review verdicts, signed with the review
    tool's key (--signing-key or STREAMSAFE_SIGNING_KEY_FILE; runs until stopped)."""
    from streamsafe.integrations.coop.callbacks import load_public_key
    from streamsafe.integrations.coop.mapping import load_mapping
    from streamsafe.integrations.coop.metrics import CoopMetrics
    from streamsafe.integrations.coop.server import CallbackService

    loaded = load_mapping(mapping)
    key = load_public_key(public_key)
    reviewer_key = read_secret(reviewer_key_file, "STREAMSAFE_COOP_REVIEWER_KEY", "reviewer key", required=False)
    _logging(log_level)
    if reviewer_key is None and not loaded.reviewers:
        log.warning("no reviewer key: reviewer pseudonyms are unkeyed hashes of emails, which anyone holding "
                    "a list of emails can reverse; set STREAMSAFE_COOP_REVIEWER_KEY or --reviewer-key-file")

    async def run() -> None:
        stop = asyncio.Event()
        await _until_signalled(stop)
        service = CallbackService(settings, loaded, key, CoopMetrics.create(),
                                  reviewer_key.encode() if reviewer_key else None)
        await service.start(host, port)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await service.stop()

    asyncio.run(run())
