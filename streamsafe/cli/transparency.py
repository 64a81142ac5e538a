"""``streamsafe transparency``: the transparency report of a period, as HTML, JSON or CSV,
from the enforcement topics on the broker or from a recording."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from streamsafe.cli.base import cli, settings_options
from streamsafe.settings import Settings

__all__ = ["parse_time"]

_DAY_MS = 86_400_000


def parse_time(text: str) -> int:
    """Epoch ms of an ISO 8601 date or date-time (UTC when it names no offset), or of epoch ms digits."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is neither an ISO 8601 date/time nor epoch milliseconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@cli.command()
@settings_options
@click.option("--since", help="start of the period, included: ISO 8601 (UTC unless an offset is given) "
                              "or epoch ms; default: 30 days before --until")
@click.option("--until", help="end of the period, excluded; default: now")
@click.option("--recording", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="read a recording (JSONL) instead of the broker's topics")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="policy whose bank trust levels name hash matches authority/internal (default: the packaged one)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the HTML page here")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="write the figures as CSV")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def transparency(settings: Settings, since: str | None, until: str | None, recording: Path | None,
                 policy: Path | None, out: Path | None, csv_out: Path | None, as_json: bool) -> None:
    """Transparency report: actions, detection sources, times to action, reports, review SLAs,
    overturn and appeal rates, dead letters, for the period [--since, --until)."""
    from streamsafe.policy.loader import load_policy
    from streamsafe.transparency import compute_report
    from streamsafe.transparency.render import to_csv, to_html, to_json
    from streamsafe.transparency.source import log_from_broker, log_from_recording

    if out is None and csv_out is None and not as_json:
        raise click.UsageError("say what to write: --out FILE.html, --csv FILE, --json")
    until_ms = parse_time(until) if until else int(time.time() * 1000)
    since_ms = parse_time(since) if since else until_ms - 30 * _DAY_MS
    if since_ms >= until_ms:
        raise click.UsageError("--since must be before --until")
    if recording:
        log = log_from_recording(recording)
        as_of_ms = log.newest_ms  # a recording reaches as far as its newest record
    else:
        as_of_ms = int(time.time() * 1000)
        log = log_from_broker(settings)
    report = compute_report(log, since_ms, until_ms, load_policy(policy).bank_trust, as_of_ms)
    if out is not None:
        out.write_text(to_html(report))
        click.echo(f"wrote {out}", err=True)
    if csv_out is not None:
        csv_out.write_text(to_csv(report))
        click.echo(f"wrote {csv_out}", err=True)
    if as_json:
        click.echo(to_json(report))
