"""Commands of the ``streamsafe`` command: worker, topics, demo, simulate, replay, evaluate,
policy and local brokers (hash lists and banks are in :mod:`.banks`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamsafe.cli.base import cli, present, settings_options, uses_broker
from streamsafe.cli.signing import signing_key_option
from streamsafe.errors import StreamSafeError
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.command()
@settings_options
@click.option("--store", type=click.Choice(["memory://", "rocksdb://"]), help="table store")
@click.option("--data-dir", type=click.Path(path_type=Path), help="where rocksdb tables live")
@click.option("--hash-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="file of known MD5/SHA-256 hashes (a bank named after the file)")
@click.option("--app-id", help="consumer group and table namespace")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def worker(settings: Settings, **options: Any) -> None:
    """Run a StreamSafe worker against a broker."""
    from streamsafe.runner import run_worker

    settings = settings.replace(**present(options))
    run_worker(settings)


@cli.group()
def topics() -> None:
    """Topics from the contract in topics/."""


@topics.command("apply")
@settings_options
@click.option("--replication-factor", type=click.IntRange(min=1), default=None,
              help="override every topic's (default: STREAMSAFE_REPLICATION_FACTOR, else the contract's, 3)")
@click.option("--min-insync-replicas", type=click.IntRange(min=1), default=None,
              help="override every topic's (default: STREAMSAFE_MIN_INSYNC_REPLICAS, else the contract's, 2)")
def topics_apply(settings: Settings, replication_factor: int | None, min_insync_replicas: int | None) -> None:
    """Create missing topics and check existing ones against the contract."""
    from streamsafe.brokers.topics import apply_topics
    from streamsafe.events.contract import load_contract

    settings = settings.replace(**present({"replication_factor": replication_factor,
                                           "min_insync_replicas": min_insync_replicas}))
    statuses = asyncio.run(apply_topics(settings, load_contract()))
    for status in statuses:
        short = "  (fewer than asked for)" if status.replicas < status.replication_factor else ""
        click.echo(f"{status.status:8} {status.name} ({status.partitions} partitions, "
                   f"{status.replicas} replicas){short}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary line at the end")
@click.option("--broker-kind", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True,
              help="embedded broker to run the demo on")
@click.option("--streams", default=40, show_default=True, help="live streams in the scenario")
@click.option("--reports-out", type=click.Path(dir_okay=False, path_type=Path),
              help="write the report packets made (JSON lines, as on enforcement.reports) to this file")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path),
              help="write the run's enforcement, verdict and dead-letter records to this recording (JSONL)")
@click.option("--statements-out", type=click.Path(dir_okay=False, path_type=Path),
              help="write the DSA statements of reasons the demo produced (JSONL) to this file")
def demo(as_json: bool, broker_kind: str, streams: int, reports_out: Path | None, record: Path | None,
         statements_out: Path | None) -> None:
    """Run the built-in scenario end to end on an embedded broker."""
    from streamsafe.demo.run import run_demo

    ok = run_demo(as_json=as_json, broker_kind=broker_kind, streams=streams, reports_out=reports_out,
                  record=record, statements_out=statements_out)
    sys.exit(0 if ok else 1)


@cli.command()
@settings_options
@click.option("--streams", default=100, show_default=True, help="concurrent live streams")
@click.option("--rate", default=500.0, show_default=True, help="messages per second (0: as fast as possible)")
@click.option("--count", default=10_000, show_default=True, help="messages to send")
@click.option("--seed", default=7, show_default=True)
@click.option("--scenarios", is_flag=True, help="write a labelled scenario set to --out instead of sending")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="file for --scenarios")
@click.option("--accounts", default=0, show_default=True,
              help="with --scenarios: also this many of each account scenario (repeat offender, network-drop "
                   "restart, a viewer grooming young broadcasters, popular streamers' chatters), with account labels")
def simulate(settings: Settings, streams: int, rate: float, count: int, seed: int, scenarios: bool,
             out: Path | None, accounts: int) -> None:
    """Produce synthetic live-stream traffic to a broker, or write labelled scenarios."""
    if scenarios:
        from collections import Counter

        from streamsafe.replay.recording import AccountLabel, Label, write_recording
        from streamsafe.replay.scenarios import generate_scenarios

        if out is None:
            raise click.UsageError("--scenarios needs --out FILE")
        events, labels = generate_scenarios(streams, seed, accounts=accounts)
        lines = write_recording(out, events, labels)
        kinds = Counter(label.kind for label in labels if isinstance(label, Label))
        account_kinds = Counter(label.kind for label in labels if isinstance(label, AccountLabel))
        click.echo(f"wrote {lines} events and {sum(kinds.values())} labelled streams to {out}: "
                   + ", ".join(f"{k} {n}" for k, n in kinds.items())
                   + (f"; {sum(account_kinds.values())} labelled accounts: "
                      + ", ".join(f"{k} {n}" for k, n in account_kinds.items()) if account_kinds else ""))
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


def _note_broker(broker: str | None) -> None:
    """A broker given on the command line is one this command talks to (its error line)."""
    if broker is not None:
        try:
            uses_broker(Settings.from_env(broker_url=broker))
        except StreamSafeError as exc:
            raise click.UsageError(str(exc)) from exc


@cli.command()
@_replay_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="decisions JSONL (default stdout)")
@click.option("--statements-out", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the live policy's DSA statements of reasons (enforcement.statements records), JSONL")
def replay(path: Path, policies: tuple[Path, ...], broker: str | None, broker_kind: str,
           out: Path | None, statements_out: Path | None) -> None:
    """Play a recorded JSONL file through the real pipeline; write every decision as JSONL."""
    import orjson

    from streamsafe.replay.pipeline import replay as run_replay
    from streamsafe.replay.recording import read_recording

    _note_broker(broker)
    result = run_replay(read_recording(path), policies, broker, broker_kind)
    lines = b"".join(orjson.dumps(d) + b"\n" for d in result.decisions)
    if out is None:
        sys.stdout.buffer.write(lines)
    else:
        out.write_bytes(lines)
    if statements_out is not None:
        statements_out.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in result.statements))
    click.echo(f"replayed {result.events_sent} events with {', '.join(result.policy_versions)}: "
               f"{len(result.decisions)} decisions, {len(result.statements)} statements of reasons "
               f"in {result.seconds:.1f}s", err=True)


@cli.command()
@_replay_options
@click.option("--json", "as_json", is_flag=True, help="one JSON line per policy")
def evaluate(path: Path, policies: tuple[Path, ...], broker: str | None, broker_kind: str,
             as_json: bool) -> None:
    """Score policies on a labelled scenario set (recall, false blocks/escalations, time to action)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from streamsafe.replay.evaluate import per_kind, score_accounts, score_policies
    from streamsafe.replay.pipeline import replay as run_replay
    from streamsafe.replay.recording import read_recording

    recording = read_recording(path)
    if not recording.labels:
        raise click.ClickException(f"{path} has no label lines to evaluate against")
    _note_broker(broker)
    result = run_replay(recording, policies, broker, broker_kind)
    scores = score_policies(recording, result.decisions, result.policy_versions)
    accounts = score_accounts(recording, result.decisions, result.policy_versions) if recording.account_labels else []
    if as_json:
        for i, score in enumerate(scores):
            record = score.as_record() | (accounts[i].as_record() if accounts else {})
            click.echo(orjson.dumps(record).decode())
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
    if accounts:
        table = Table("policy", "recall (harmful accounts)", "false actions (benign accounts)", "account decisions",
                      title=f"accounts: {accounts[0].harmful_accounts} harmful, {accounts[0].benign_accounts} benign")
        for a in accounts:
            table.add_row(a.policy_version, f"{a.recall_accounts:.1%}", f"{a.false_action_rate_accounts:.1%}",
                          str(a.account_decisions))
        console.print(table)


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
@settings_options
@signing_key_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shadow", metavar="NAME", help="publish as shadow policy NAME instead of live")
def policy_publish(settings: Settings, path: Path, shadow: str | None) -> None:
    """Publish a policy, signed; every worker switches to it without a restart."""
    from streamsafe.control.publish import publish_policy

    published = asyncio.run(publish_policy(settings, path, shadow))
    role = f"shadow {shadow!r}" if shadow else "live"
    click.echo(f"published policy {published.version if published else '?'} as {role}")


@policy.command("retire-shadow")
@settings_options
@signing_key_option
@click.argument("name")
def policy_retire_shadow(settings: Settings, name: str) -> None:
    """Stop evaluating shadow policy NAME."""
    from streamsafe.control.publish import retire_shadow

    asyncio.run(retire_shadow(settings, name))
    click.echo(f"retired shadow policy {name!r}")


@cli.group()
def broker() -> None:
    """Local brokers for development."""


@broker.command("start")
@click.option("--kind", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True)
@click.option("--secure", is_flag=True, help="Apache Kafka with SASL_SSL (SCRAM-SHA-512, a CA made now) and "
              "deny-by-default ACLs: a user per role with the ACLs of `streamsafe acls`")
@click.option("--json", "as_json", is_flag=True, help="print the broker's address (and with --secure, the CA "
              "file and each role's user and password file) as one JSON line")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="--secure: where the broker keeps its storage, certificates and password files (default: a "
                   "new temporary directory)")
def broker_start(kind: str, secure: bool, as_json: bool, data_dir: Path | None) -> None:
    """Start a local broker, create the contract's topics, and run until interrupted."""
    from streamsafe.brokers.local import start_broker
    from streamsafe.brokers.topics import apply_topics
    from streamsafe.events.contract import load_contract

    if secure and kind != "kafka":
        raise click.UsageError("--secure needs --kind kafka")
    # SIGTERM (a service manager, `kill`) stops the broker too, as Ctrl-C does: the default
    # action would end this process at once and leave the broker's JVM running
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if secure:
        _start_secure(as_json, data_dir)
        return
    with start_broker(kind) as running, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(apply_topics(Settings(broker_url=running.url, replication_factor=1), load_contract()))
        if as_json:
            click.echo(json.dumps({"broker": running.url, "kind": running.kind}))
        else:
            click.echo(f"{running.kind} ready: --broker {running.url}  (one broker: run workers with "
                       "STREAMSAFE_REPLICATION_FACTOR=1; Ctrl-C to stop)")
        running.process.wait()


def _start_secure(as_json: bool, data_dir: Path | None) -> None:
    """The secured development broker; passwords stay in their files (0600), never on stdout."""
    from streamsafe.brokers.secure import start_streamsafe_secure

    settings = Settings.from_env()
    with start_streamsafe_secure(settings, data_dir) as running, contextlib.suppress(KeyboardInterrupt):
        described = running.describe()
        if as_json:
            click.echo(json.dumps(described))
        else:
            click.echo(f"{running.broker.kind} ready: --broker {described['broker']}  (SASL_SSL, SCRAM-SHA-512; "
                       f"CA {described['ca_file']}; Ctrl-C to stop)")
            for role, user in [*described["roles"].items(), ("(cluster admin)", described["admin"])]:
                click.echo(f"  {role:15} user {user['user']:28} password file {user['password_file']}")
            worker = running.roles["worker"]
            click.echo("a worker, for example:\n  " + " ".join(
                f"{k}={v}" for k, v in running.environment(worker).items()) + " STREAMSAFE_REPLICATION_FACTOR=1"
                " STREAMSAFE_CREATE_TOPICS=false streamsafe worker")
        running.broker.process.wait()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
