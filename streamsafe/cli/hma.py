"""``streamsafe bank sync hma`` and ``streamsafe hma writeback``: HMA banks both ways."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import logging.config
from pathlib import Path

import click

from streamsafe.cli.banks import bank
from streamsafe.cli.base import cli, settings_options
from streamsafe.cli.signing import signing_key_option
from streamsafe.settings import Settings

__all__: list[str] = []


log = logging.getLogger(__name__)


def _serve_metrics(port: int | None, registry: object) -> None:
    if port is not None:
        from prometheus_client import start_http_server

        start_http_server(port, registry=registry)  # type: ignore[arg-type]


def _logging() -> None:
    """JSON log lines, as the worker and the Coop bridge write them."""
    from streamsafe.observability.logs import json_logging_config

    logging.config.dictConfig(json_logging_config("INFO"))


@bank.group("sync")
def bank_sync() -> None:
    """Mirror another bank store into hashbank.entries."""


@bank_sync.command("hma")
@settings_options
@signing_key_option
@click.option("--dsn", envvar="STREAMSAFE_HMA_DSN", required=True,
              help="HMA's PostgreSQL, e.g. postgresql://user:pw@host:5432/media_match; the "
                   "postgresql+psycopg2:// form of HMA's own config works too (env STREAMSAFE_HMA_DSN)")
@click.option("--banks", "banks_csv", help="HMA banks to mirror, comma-separated (default: every bank of --mapping)")
@click.option("--mapping", "mapping_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML mapping of HMA banks to StreamSafe banks and trust (see the README); without it "
                   "each of --banks goes to the bank of its lower-cased name")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the policy the mapping's trust levels must agree with (default: env "
                   "STREAMSAFE_POLICY_FILE, else the packaged one)")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="the sync's checkpoint file (default: under the data dir, one per HMA database and mapping)")
@click.option("--follow", is_flag=True, help="keep polling HMA until stopped")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="seconds between polls with --follow")
@click.option("--metrics-port", type=int, help="serve Prometheus metrics on this port (with --follow)")
def bank_sync_hma(settings: Settings, dsn: str, banks_csv: str | None, mapping_path: Path | None,
                  policy_path: Path | None, checkpoint: Path | None, follow: bool, interval: float,
                  metrics_port: int | None) -> None:
    """Mirror HMA banks (PDQ and MD5 signals) into hashbank.entries: additions, deletions and
    disabled content (removed while disabled, back when re-enabled), incrementally."""
    from streamsafe.errors import ConfigError
    from streamsafe.integrations.hma.mapping import default_mapping, load_mapping, policy_disagreements
    from streamsafe.integrations.hma.source import plain_dsn
    from streamsafe.integrations.hma.sync import HmaSync
    from streamsafe.policy.loader import load_policy

    banks = [b.strip() for b in banks_csv.split(",") if b.strip()] if banks_csv else []
    if mapping_path is not None:
        mapping = load_mapping(mapping_path)
        if banks:
            mapping = mapping.only(banks)
        problems = policy_disagreements(mapping, load_policy(policy_path or settings.policy_file))
        if problems:
            raise ConfigError("the mapping and the policy disagree:\n  " + "\n  ".join(problems))
    elif banks:
        mapping = default_mapping(banks)
    else:
        raise click.UsageError("name the HMA banks to mirror: --mapping FILE and/or --banks A,B")
    if checkpoint is None:
        from urllib.parse import urlsplit

        where = urlsplit(plain_dsn(dsn))  # host, port and database: never the password
        ident = f"{where.hostname}:{where.port}{where.path}|{sorted(mapping.as_dict().items())}"
        checkpoint = settings.data_dir / "hma-sync" / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
    _logging()
    sync = HmaSync(settings, dsn, mapping, checkpoint)

    async def run() -> None:
        try:
            if follow:
                _serve_metrics(metrics_port, sync.metrics.registry)
                click.echo(f"following HMA banks {', '.join(mapping.hma_banks)} every {interval:g} s "
                           f"(checkpoint {checkpoint})", err=True)
                await sync.follow(interval, on_poll=lambda r: (r.published or r.removed) and click.echo(
                    f"published {r.published}, removed {r.removed} entries", err=True))
            else:
                report = await sync.poll()
                click.echo(f"HMA banks {', '.join(mapping.hma_banks)}: {report.new_rows} new signals, "
                           f"{report.dropped_rows} deleted, {report.disabled} disabled, {report.enabled} re-enabled;"
                           f" published {report.published} entries, removed {report.removed}; "
                           f"{len(sync.state.entries)} live")
        finally:
            await sync.close()

    import psycopg

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    except psycopg.Error as exc:  # one line, like a broker that cannot be reached
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise click.ClickException(f"cannot read HMA's database: {detail}") from exc


@cli.group()
def hma() -> None:
    """Meta's Hasher-Matcher-Actioner (HMA): write reviewer-confirmed hashes back."""


@hma.command("writeback")
@settings_options
@click.option("--url", envvar="STREAMSAFE_HMA_URL", required=True, help="HMA's base URL (env STREAMSAFE_HMA_URL)")
@click.option("--bank", "hma_bank", required=True, help="the HMA bank confirmed hashes go to (UPPER_WITH_UNDERSCORE)")
@click.option("--from-bank", default="internal-confirmed", show_default=True,
              help="the StreamSafe bank whose reviewer-sourced entries are written back")
@click.option("--group-id", help="consumer group, whose committed offsets are the write-back's progress "
                                 "(default: <app id>-bank-admin-hma-writeback, inside the bank-admin role's "
                                 "group prefix)")
@click.option("--metrics-port", type=int, help="serve Prometheus metrics on this port")
def hma_writeback(settings: Settings, url: str, hma_bank: str, from_bank: str, group_id: str | None,
                  metrics_port: int | None) -> None:
    """Write the PDQs reviewers confirmed (the review loop's internal-confirmed proposals on
    hashbank.entries) to an HMA bank, until stopped; HMA down delays, never loses, a write-back."""
    from streamsafe.integrations.hma.client import HmaClient
    from streamsafe.integrations.hma.writeback import HmaWriteback

    _logging()
    writeback = HmaWriteback(settings, HmaClient(url), hma_bank,
                             group_id=group_id or f"{settings.app_id}-bank-admin-hma-writeback", from_bank=from_bank)
    _serve_metrics(metrics_port, writeback.metrics.registry)
    log.info("writing reviewer-confirmed hashes of %s to HMA bank %s at %s", from_bank, hma_bank, url)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(writeback.run())
