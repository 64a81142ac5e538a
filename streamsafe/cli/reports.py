"""``streamsafe reports export``: report packets as the formats authorities take."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from streamsafe.cli.base import cli, uses_broker
from streamsafe.errors import StreamSafeError
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.group()
def reports() -> None:
    """Authority reports built from enforcement.reports packets."""


@reports.command("export")
@click.option("--format", "fmt", type=click.Choice(["cybertip-xml"]), required=True,
              help="cybertip-xml: NCMEC CyberTipline <report> and <fileDetails> documents")
@click.option("--profile", "profile_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="platform profile (YAML or JSON): reporter, company and stream URL template")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory for the documents (one <report_id>.xml per report)")
@click.option("--from", "from_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines of report packets instead of the enforcement.reports topic")
@click.option("--xsd", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NCMEC's cyber_tipline.xsd: validate every document before writing it")
@click.option("--broker", help="kafka://host:port (env STREAMSAFE_BROKER; without --from)")
@click.option("--topic-prefix", help="prefix for every topic name (env STREAMSAFE_TOPIC_PREFIX)")
def reports_export(fmt: str, profile_path: Path, out: Path, from_path: Path | None, xsd: Path | None,
                   broker: str | None, topic_prefix: str | None) -> None:
    """Write one document per report (of a report sent again, completed, its revision), read
    from enforcement.reports up to its end when the command starts (or from --from FILE). A
    packet that cannot be mapped is named with its reason on stderr and the exit code is 1;
    the others are written."""
    from streamsafe.reports.export import export_cybertip, load_xsd, read_packet_lines
    from streamsafe.reports.profile import load_profile

    profile = load_profile(profile_path)  # a bad profile stops here, before any broker
    schema = load_xsd(xsd) if xsd is not None else None
    if from_path is not None:
        packets = list(read_packet_lines(from_path))
    else:
        from streamsafe.reports.source import read_report_topic

        try:
            settings = Settings.from_env(broker_url=broker, topic_prefix=topic_prefix)
        except StreamSafeError as exc:
            raise click.UsageError(str(exc)) from exc
        uses_broker(settings)
        packets = asyncio.run(read_report_topic(settings))
    result = export_cybertip(packets, profile, out, schema)
    for problem in result.problems:
        click.echo(f"cannot export {problem}", err=True)
    click.echo(f"wrote {len(result.reports)} CyberTipline reports and {len(result.file_details)} frame "
               f"fileDetails to {out}" + (" (validated)" if schema is not None else "")
               + (f"; {len(result.problems)} packets not exported" if result.problems else ""), err=True)
    if result.problems:
        sys.exit(1)
