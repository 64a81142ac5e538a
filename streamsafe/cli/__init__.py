"""The ``streamsafe`` command: ``base`` holds the group and its error path, the other modules
(``commands``, ``banks``, ``deploy``, …) the commands (importing them registers them on the group)."""

from __future__ import annotations

from streamsafe.cli import (  # noqa: F401  (registers the commands)
    alerts,
    banks,
    capacity,
    commands,
    control,
    coop,
    deploy,
    hma,
    reports,
    statements,
    transparency,
)
from streamsafe.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="streamsafe")
