"""Signed control records and the audit trail: ``keys generate``, ``audit``, ``policy rollback``
(the ``--signing-key`` option of the publishing commands is in :mod:`.signing`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import orjson

from streamsafe.cli.base import cli, settings_options
from streamsafe.cli.commands import policy
from streamsafe.cli.signing import signing_key_option
from streamsafe.settings import Settings

__all__: list[str] = []


@cli.group()
def keys() -> None:
    """Ed25519 keys that sign policies, bank entries and review verdicts."""


@keys.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory to write NAME.key (private, mode 0600) and NAME.pub into")
@click.option("--name", default="streamsafe", show_default=True, help="file name of the key pair")
def keys_generate(out_dir: Path, name: str) -> None:
    """Make a key pair; prints the key id. Give the .pub file to the workers' trusted keys
    (STREAMSAFE_TRUSTED_CONTROL_KEYS or STREAMSAFE_TRUSTED_VERDICT_KEYS) and keep the .key file secret."""
    from streamsafe.control.signing import generate_key

    private, public, key_id = generate_key(out_dir, name)
    click.echo(f"key id {key_id}: private key {private}, public key {public}")


@cli.command("audit")
@settings_options
@click.option("--since", "since", help="only changes at or after this time: epoch ms, or ISO 8601 UTC")
@click.option("--json", "as_json", is_flag=True, help="one JSON audit record per line")
def audit(settings: Settings, since: str | None, as_json: bool) -> None:
    """Every control change (policies, bank entries, review verdicts), applied or refused, in the
    order they were published, with the key that signed each."""
    from streamsafe.control.audit import format_audit, read_audit

    records = asyncio.run(read_audit(settings, _epoch_ms(since) if since else 0))
    for line in ([orjson.dumps(r).decode() for r in records] if as_json else format_audit(records)):
        click.echo(line)
    if not as_json:
        click.echo(f"{len(records)} control changes", err=True)


@policy.command("rollback")
@settings_options
@signing_key_option
@click.option("--to", "version", help="the policy version to go back to (default: the one before the live one)")
@click.option("--shadow", metavar="NAME", help="roll back shadow policy NAME instead of live")
def policy_rollback(settings: Settings, version: str | None, shadow: str | None) -> None:
    """Publish again an earlier policy found on the policy topic, signed with your key."""
    from streamsafe.control.rollback import rollback

    previous, restored = asyncio.run(rollback(settings, version, shadow))
    click.echo(f"rolled back {'shadow ' + repr(shadow) if shadow else 'live'} policy {previous} -> {restored}")


def _epoch_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither epoch ms nor ISO 8601", param_hint="--since") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


