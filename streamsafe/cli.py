"""The ``streamsafe`` command."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamsafe.errors import StreamSafeError
from streamsafe.settings import Settings

__all__ = ["main"]


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
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
        _uses_broker(settings)
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
    """One line for a connection failure of a broker command, or None for anything else."""
    import socket

    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    servers = ctx.meta.get(_BROKER)
    # socket failures only: a file the command cannot read is an OSError too, not the broker's
    unreachable = KafkaConnectionError | KafkaTimeoutError | ConnectionError | TimeoutError | socket.gaierror
    if servers is None or not isinstance(exc, unreachable):
        return None
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot reach the broker at {servers}: {detail}"


def _uses_broker(settings: Settings) -> None:
    """Note that the running command talks to ``settings``' broker, for its error line.

    A one-shot command has no logging set up, so aiokafka's own error records (a refused
    connection, then an "Unclosed" client report at exit) would print as stray lines
    around that one line; a failure reaches the user as the exception instead. The
    worker configures logging itself and keeps them."""
    ctx = click.get_current_context()
    ctx.meta[_BROKER] = settings.bootstrap_servers
    if ctx.command.name != "worker":
        for name in ("aiokafka", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


@click.group(cls=_StreamSafeGroup)
@click.version_option(package_name="streamsafe")
def cli() -> None:
    """StreamSafe: stop child sexual abuse and grooming while a stream is live."""


@cli.command()
@_settings_options
@click.option("--store", type=click.Choice(["memory://", "rocksdb://"]), help="table store")
@click.option("--data-dir", type=click.Path(path_type=Path), help="where rocksdb tables live")
@click.option("--hash-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="file of known MD5/SHA-256 hashes (a bank named after the file)")
@click.option("--app-id", help="consumer group and table namespace")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def worker(settings: Settings, **options: Any) -> None:
    """Run a StreamSafe worker against a broker."""
    from streamsafe.runner import run_worker

    settings = settings.replace(**_present(options))
    run_worker(settings)


@cli.group()
def topics() -> None:
    """Topics from the contract in topics/."""


@topics.command("apply")
@_settings_options
@click.option("--replication-factor", default=1, show_default=True)
def topics_apply(settings: Settings, replication_factor: int) -> None:
    """Create missing topics and check existing ones against the contract."""
    from streamsafe.brokers.topics import apply_topics
    from streamsafe.events.contract import load_contract

    statuses = asyncio.run(
        apply_topics(settings, load_contract(), replication_factor=replication_factor)
    )
    for status in statuses:
        click.echo(f"{status.status:8} {status.name} ({status.partitions} partitions)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary line at the end")
@click.option("--broker-kind", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True,
              help="embedded broker to run the demo on")
@click.option("--streams", default=40, show_default=True, help="live streams in the scenario")
def demo(as_json: bool, broker_kind: str, streams: int) -> None:
    """Run the built-in scenario end to end on an embedded broker."""
    from streamsafe.demo.run import run_demo

    ok = run_demo(as_json=as_json, broker_kind=broker_kind, streams=streams)
    sys.exit(0 if ok else 1)


@cli.command()
@_settings_options
@click.option("--streams", default=100, show_default=True, help="concurrent live streams")
@click.option("--rate", default=500.0, show_default=True, help="messages per second (0: as fast as possible)")
@click.option("--count", default=10_000, show_default=True, help="messages to send")
@click.option("--seed", default=7, show_default=True)
@click.option("--scenarios", is_flag=True, help="write a labelled scenario set to --out instead of sending")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="file for --scenarios")
def simulate(settings: Settings, streams: int, rate: float, count: int, seed: int, scenarios: bool,
             out: Path | None) -> None:
    """Produce synthetic live-stream traffic to a broker, or write labelled scenarios."""
    if scenarios:
        from collections import Counter

        from streamsafe.replay.recording import write_recording
        from streamsafe.replay.scenarios import generate_scenarios

        if out is None:
            raise click.UsageError("--scenarios needs --out FILE")
        events, labels = generate_scenarios(streams, seed)
        lines = write_recording(out, events, labels)
        kinds = Counter(label.kind for label in labels)
        click.echo(f"wrote {lines} events and {len(labels)} labelled streams to {out}: "
                   + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        return
    from streamsafe.demo.simulate import run_simulation

    sent, seconds = asyncio.run(run_simulation(settings, streams, rate, count, seed))
    click.echo(f"sent {sent} messages in {seconds:.1f}s ({sent / max(seconds, 1e-9):.0f}/s)")


def _replay_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--broker",
                        help="run on this broker (kafka://host:port) instead of an embedded one")(func)
    func = click.option("--broker-kind", type=click.Choice(["tansu", "kafka"]), default="tansu",
                        show_default=True, help="embedded broker to start when --broker is not given")(func)
    func = click.option("--policy", "policies", multiple=True,
                        type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="policy file; repeat to compare (the first is live, the rest shadow); "
                             "default: the packaged policy")(func)
    return click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))(func)


@cli.command()
@_replay_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="decisions JSONL (default stdout)")
def replay(path: Path, policies: tuple[Path, ...], broker: str | None, broker_kind: str,
           out: Path | None) -> None:
    """Play a recorded JSONL file through the real pipeline; write every decision as JSONL."""
    import orjson

    from streamsafe.replay.pipeline import replay as run_replay
    from streamsafe.replay.recording import read_recording

    result = run_replay(read_recording(path), policies, broker, broker_kind)
    lines = b"".join(orjson.dumps(d) + b"\n" for d in result.decisions)
    if out is None:
        sys.stdout.buffer.write(lines)
    else:
        out.write_bytes(lines)
    click.echo(f"replayed {result.events_sent} events with {', '.join(result.policy_versions)}: "
               f"{len(result.decisions)} decisions in {result.seconds:.1f}s", err=True)


@cli.command()
@_replay_options
@click.option("--json", "as_json", is_flag=True, help="one JSON line per policy")
def evaluate(path: Path, policies: tuple[Path, ...], broker: str | None, broker_kind: str,
             as_json: bool) -> None:
    """Score policies on a labelled scenario set (recall, false blocks/escalations, time to action)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streamsafe.replay.evaluate import per_kind, score_policies
    from streamsafe.replay.pipeline import replay as run_replay
    from streamsafe.replay.recording import read_recording

    recording = read_recording(path)
    if not recording.labels:
        raise click.ClickException(f"{path} has no label lines to evaluate against")
    result = run_replay(recording, policies, broker, broker_kind)
    scores = score_policies(recording, result.decisions, result.policy_versions)
    if as_json:
        for score in scores:
            click.echo(orjson.dumps(score.as_record()).decode())
        return
    table = Table("policy", "recall (harmful)", "false blocks", "false escalations", "expected action",
                  "time to action p50", "p95", "decisions", title=f"{path.name}: "
                  f"{scores[0].harmful_streams} harmful, {scores[0].benign_streams} benign streams")
    for s in scores:
        table.add_row(s.policy_version + (" (shadow)" if s.shadow else ""), f"{s.recall_harmful:.1%}",
                      f"{s.false_block_rate:.1%}", f"{s.false_escalation_rate:.1%}",
                      f"{s.expected_action_accuracy:.1%}", _ms(s.tta_p50_ms), _ms(s.tta_p95_ms),
                      str(s.decisions))
    console = Console()
    console.print(table)
    kinds = Table("scenario kind", *(s.policy_version for s in scores), title="strongest action per stream")
    tables = [per_kind(recording, result.decisions, s.policy_version) for s in scores]
    for kind in sorted(tables[0]):
        cells = (", ".join(f"{a} {n}" for a, n in sorted(t.get(kind, {}).items())) for t in tables)
        kinds.add_row(kind, *cells)
    console.print(kinds)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f} s"


@cli.group()
def policy() -> None:
    """Policies: check a file, publish it to every worker as live or shadow."""


@policy.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def policy_check(path: Path) -> None:
    """Validate a policy file and summarise it."""
    from streamsafe.policy.loader import load_policy

    loaded = load_policy(path)
    click.echo(f"policy {loaded.version}: {len(loaded.rules)} rules")
    for rule in loaded.rules:
        conditions = " and ".join(p.describe() for p in rule.predicates)
        click.echo(f"  {rule.name}: {conditions} -> {', '.join(a.describe() for a in rule.actions)}")


@policy.command("publish")
@_settings_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shadow", metavar="NAME", help="publish as shadow policy NAME instead of live")
def policy_publish(settings: Settings, path: Path, shadow: str | None) -> None:
    """Publish a policy; every worker switches to it without a restart."""
    from streamsafe.control.publish import publish_policy

    published = asyncio.run(publish_policy(settings, path, shadow))
    role = f"shadow {shadow!r}" if shadow else "live"
    click.echo(f"published policy {published.version if published else '?'} as {role}")


@policy.command("retire-shadow")
@_settings_options
@click.argument("name")
def policy_retire_shadow(settings: Settings, name: str) -> None:
    """Stop evaluating shadow policy NAME."""
    from streamsafe.control.publish import retire_shadow

    asyncio.run(retire_shadow(settings, name))
    click.echo(f"retired shadow policy {name!r}")


@cli.command("hash")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fps", default=1.0, show_default=True, help="frames sampled per second of video")
@click.option("--emit", is_flag=True, help="send the hashes to livestream.frame-hashes")
@click.option("--stream-id", help="stream the frames belong to (needed with --emit; default: one stream "
                                  "per file, named after it)")
@click.option("--start-ms", type=click.IntRange(946_684_800_000, 4_102_444_800_000),
              help="epoch ms of each file's first frame (default: now)")
@click.option("--broker", help="kafka://host:port (with --emit; env STREAMSAFE_BROKER)")
def hash_command(paths: tuple[Path, ...], fps: float, emit: bool, stream_id: str | None, start_ms: int | None,
                 broker: str | None) -> None:
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
            for hashes in hash_path(path, fps):
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
        _uses_broker(settings)
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
@_settings_options
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

    from streamsafe.control.bank_publish import publish_entries
    from streamsafe.matching.importers import ImportProblem, detect_format, read_entries

    fmt = detect_format(path) if fmt == "auto" else fmt
    console = Console(stderr=True, highlight=False)
    problems: list[ImportProblem] = []
    total_lines = sum(1 for _ in path.open("rb"))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, disable=total_lines < 10_000) as progress:
        task = progress.add_task(f"importing {path.name} ({fmt}) into {bank_name}", total=total_lines)

        def entries():  # type: ignore[no-untyped-def]
            for item in read_entries(path, bank_name, fmt, signal_type, source or path.name):
                if isinstance(item, ImportProblem):
                    problems.append(item)
                else:
                    yield item

        sent = asyncio.run(publish_entries(settings, entries(), source or path.name,
                                           on_sent=lambda n: progress.update(task, completed=n)))
    for problem in problems[:50]:
        console.print(f"[yellow]line {problem.line}[/]: {problem.reason} (skipped)")
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more bad lines")
    click.echo(f"published {sent} entries to bank {bank_name!r}; {len(problems)} bad lines skipped")
    if sent == 0:
        sys.exit(1)


@bank.command("stats")
@_settings_options
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


@cli.group()
def broker() -> None:
    """Local brokers for development."""


@broker.command("start")
@click.option("--kind", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True)
def broker_start(kind: str) -> None:
    """Start a local broker, create the contract's topics, and run until interrupted."""
    from streamsafe.brokers.local import start_broker
    from streamsafe.brokers.topics import apply_topics
    from streamsafe.events.contract import load_contract

    with start_broker(kind) as running:
        asyncio.run(apply_topics(Settings(broker_url=running.url), load_contract()))
        click.echo(f"{running.kind} ready: --broker {running.url}  (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            running.process.wait()


def _present(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def main() -> None:
    cli(prog_name="streamsafe")
