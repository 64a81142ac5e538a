"""``streamsafe hash`` and ``streamsafe bank``: hashing images and frames, hash lists to banks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from streamsafe.cli.base import cli, settings_options, uses_broker
from streamsafe.cli.signing import signing_key_option
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.command("hash")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fps", default=1.0, show_default=True, help="frames sampled per second of video")
@click.option("--dihedral", is_flag=True,
              help="also send the PDQ of each frame's seven other dihedral variants (rotated, flipped), "
                   "computed in the same pass, so mirrored or turned copies of known pictures match "
                   "(schema version 2 messages)")
@click.option("--emit", is_flag=True, help="send the hashes to livestream.frame-hashes")
@click.option("--stream-id", help="stream the frames belong to (needed with --emit; default: one stream "
                                  "per file, named after it)")
@click.option("--start-ms", type=click.IntRange(946_684_800_000, 4_102_444_800_000),
              help="epoch ms of each file's first frame (default: now)")
@click.option("--broker", help="kafka://host:port (with --emit; env STREAMSAFE_BROKER)")
def hash_command(paths: tuple[Path, ...], fps: float, dihedral: bool, emit: bool, stream_id: str | None,
                 start_ms: int | None, broker: str | None) -> None:
    """PDQ (+ quality), MD5 and SHA-256 of images and sampled video frames, one
    livestream.frame-hashes message (one frame) a line, ready for a producer."""
    import time
    from collections import Counter

    import orjson

    from streamsafe.hashing.frames import frame_hashes_messages, hash_path, stream_id_for

    if emit and not stream_id:
        raise click.UsageError("--emit needs --stream-id")
    start_ms = int(time.time() * 1000) if start_ms is None else start_ms
    failed = 0
    frames = []
    next_seq: Counter[str] = Counter()  # seq runs on across the files of one stream
    for path in paths:
        stream = stream_id or stream_id_for(path)
        try:
            for hashes in hash_path(path, fps, dihedral):
                frame = hashes.as_frame(next_seq[stream], start_ms + (hashes.frame_ts_ms or 0))
                next_seq[stream] += 1
                click.echo(orjson.dumps(frame_hashes_messages(stream, [frame])[0]).decode())
                frames.append(frame)
        except Exception as exc:  # one unreadable file must not stop the others
            failed += 1
            click.echo(f"{path}: cannot hash: {exc}", err=True)
    if emit and stream_id and frames:
        from streamsafe.demo.player import open_producer
        from streamsafe.events.contract import FRAME_HASHES

        settings = Settings.from_env(broker_url=broker)
        uses_broker(settings)
        messages = frame_hashes_messages(stream_id, frames)

        async def send() -> None:
            producer = await open_producer(settings)
            try:
                for message in messages:
                    await producer.send_and_wait(settings.topic_name(FRAME_HASHES), orjson.dumps(message),
                                                 key=stream_id.encode())
            finally:
                await producer.stop()

        asyncio.run(send())
        click.echo(f"sent {len(frames)} frames for stream {stream_id}", err=True)
    if failed:
        sys.exit(1)


@cli.group()
def bank() -> None:
    """Hash banks: import hash files, show sizes."""


@bank.command("import")
@settings_options
@signing_key_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bank", "bank_name", required=True, help="bank name, e.g. ncmec, internal-confirmed")
@click.option("--format", "fmt", type=click.Choice(["auto", "lines", "csv", "pdq"]), default="auto",
              show_default=True)
@click.option("--signal-type", type=click.Choice(["pdq", "md5", "sha256"]),
              help="type of bare 64-hex hashes (PDQ and SHA-256 look alike)")
@click.option("--source", help="where the list came from (stored with each entry)")
def bank_import(settings: Settings, path: Path, bank_name: str, fmt: str, signal_type: str | None,
                source: str | None) -> None:
    """Publish a hash file's entries to hashbank.entries; bad lines are reported and skipped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from streamsafe.control.bank_publish import entry_content, live_entries, publish_entries
    from streamsafe.control.signing import signer_for
    from streamsafe.events.bank_entries import check_bank_name
    from streamsafe.matching.importers import ImportProblem, detect_format, read_entries

    check_bank_name(bank_name)  # before reading the file or reaching the broker
    signer = signer_for(settings.signing_key_file, "bank entries")
    fmt = detect_format(path) if fmt == "auto" else fmt
    console = Console(stderr=True, highlight=False)
    problems: list[ImportProblem] = []
    total_lines = sum(1 for _ in path.open("rb"))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, disable=total_lines < 10_000) as progress:
        task = progress.add_task(f"importing {path.name} ({fmt}) into {bank_name}", total=total_lines)

        live = asyncio.run(live_entries(settings, bank_name))
        unchanged = 0

        def entries():  # type: ignore[no-untyped-def]
            nonlocal unchanged
            for item in read_entries(path, bank_name, fmt, signal_type, source or path.name):
                if isinstance(item, ImportProblem):
                    problems.append(item)
                elif live.get(item.entry_id.encode()) == (*entry_content(item), signer.key_id):
                    unchanged += 1  # in the bank as it is, signed by this key: not resent, the bank's age stands
                else:
                    yield item

        sent = asyncio.run(publish_entries(settings, entries(), source or path.name,
                                           on_sent=lambda n: progress.update(task, completed=n), signer=signer))
    for problem in problems[:50]:
        console.print(f"[yellow]line {problem.line}[/]: {problem.reason} (skipped)")
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more bad lines")
    click.echo(f"published {sent} entries to bank {bank_name!r}; {unchanged} already there unchanged; "
               f"{len(problems)} bad lines skipped")
    if sent + unchanged == 0:
        sys.exit(1)


@bank.command("stats")
@settings_options
def bank_stats(settings: Settings) -> None:
    """Live entries per bank and signal type, read from hashbank.entries."""
    from rich.console import Console
    from rich.table import Table

    from streamsafe.control.bank_publish import bank_sizes

    sizes = asyncio.run(bank_sizes(settings))
    table = Table("bank", "signal type", "entries")
    for (bank_name, signal_type), count in sorted(sizes.items()):
        table.add_row(bank_name, signal_type, f"{count:,}")
    Console().print(table)
    click.echo(f"{sum(sizes.values())} entries in {len({b for b, _ in sizes})} banks")
