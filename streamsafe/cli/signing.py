"""``--signing-key FILE``: the option of every command that publishes a control record."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streamsafe.settings import Settings

__all__ = ["signing_key_option"]


def signing_key_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--signing-key FILE`` (else STREAMSAFE_SIGNING_KEY_FILE): the Ed25519 private key the
    command signs what it publishes with. Goes after ``settings_options`` (it takes the settings)."""

    @click.option("--signing-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Ed25519 private key (PEM) to sign with (env STREAMSAFE_SIGNING_KEY_FILE)")
    @functools.wraps(func)
    def wrapper(settings: Settings, signing_key: Path | None, **kwargs: Any) -> Any:
        if signing_key is not None:
            settings = settings.replace(signing_key_file=signing_key)
        return func(settings, **kwargs)

    return wrapper
