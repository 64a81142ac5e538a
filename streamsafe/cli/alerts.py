"""``streamsafe alerts render``: the shipped Prometheus rules, linked to the platform's runbook."""

from __future__ import annotations

from pathlib import Path

import click

from streamsafe.cli.base import cli

__all__ = ["alerts"]


@cli.group()
def alerts() -> None:
    """Prometheus alert rules."""


@alerts.command("render")
@click.option("--runbook-base", envvar="STREAMSAFE_RUNBOOK_BASE", show_envvar=True,
              help="absolute URL where docs/runbook.md is published (default: a placeholder)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write here (default: stdout)")
def alerts_render(runbook_base: str | None, out: Path | None) -> None:
    """Print (or write) deploy/prometheus/alerts.yml with absolute runbook links under --runbook-base."""
    from streamsafe.observability.alerts import PLACEHOLDER_RUNBOOK_BASE, render_alert_rules

    text = render_alert_rules(runbook_base or PLACEHOLDER_RUNBOOK_BASE)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)
