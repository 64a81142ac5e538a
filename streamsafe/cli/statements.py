"""``streamsafe statements export``: DSA statements of reasons as JSON lines, ready for the
DSA Transparency Database's API (which takes them in batches of up to 100)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from streamsafe.cli.base import cli, settings_options
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.group()
def statements() -> None:
    """DSA statements of reasons (enforcement.statements)."""


def _file_records(path: Path) -> Iterator[dict[str, Any]]:
    import orjson

    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise click.ClickException(f"{path}:{number}: not JSON: {exc}") from None


@statements.command("export")
@settings_options
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines of enforcement.statements records (default: read the topic)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="file to write (default: stdout)")
@click.option("--envelope", is_flag=True,
              help="write whole topic records (statement_id, decision_id, stream_id, ...) instead of bare submissions")
def statements_export(settings: Settings, from_file: Path | None, out: Path | None, envelope: bool) -> None:
    """Write one statement of reasons a line (JSON), de-duplicated, each checked against the contract."""
    from streamsafe.enforcement.statements_topic import export_lines, read_statements

    records: Iterable[dict[str, Any]] = (_file_records(from_file) if from_file
                                         else asyncio.run(read_statements(settings)))
    count = 0
    sink: TextIO
    with (out.open("w") if out else open(sys.stdout.fileno(), "w", closefd=False)) as sink:
        for line in export_lines(records, envelope):
            sink.write(line + "\n")
            count += 1
    click.echo(f"{count} statements of reasons written to {out or 'stdout'}", err=True)
