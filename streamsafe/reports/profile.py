"""The platform profile: who files a report and where a stream lives, read from a
YAML or JSON file and checked against ``platform_profile.schema.json`` (shipped here).

Reporter and company fields never come from code: an export without a valid profile
stops with one line saying what is wrong.
"""

from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import yaml

from streamsafe.errors import ConfigError

__all__ = ["PlatformProfile", "ProfileError", "load_profile", "profile_from_mapping"]

_SCHEMA = Path(__file__).with_name("platform_profile.schema.json")


class ProfileError(ConfigError):
    """A platform profile file is missing, unreadable or invalid."""


@cache
def _validator() -> Any:
    return fastjsonschema.compile(json.loads(_SCHEMA.read_text()))


@dataclass(frozen=True, slots=True)
class PlatformProfile:
    """A checked profile; ``doc`` is the file's mapping as validated."""

    doc: dict[str, Any]
    zone: zoneinfo.ZoneInfo

    @property
    def platform(self) -> str:
        return str(self.doc["platform"])

    def stream_url(self, stream_id: str) -> str:
        return str(self.doc["stream_url"]).replace("{stream_id}", stream_id)

    def account_url(self, broadcaster_id: str) -> str | None:
        template = self.doc.get("account_url")
        return None if template is None else str(template).replace("{broadcaster_id}", broadcaster_id)

    @property
    def escalate_live(self) -> bool:
        return bool(self.doc.get("escalate_live", True))

    @property
    def industry_classification(self) -> bool:
        return bool(self.doc.get("industry_classification", False))


def profile_from_mapping(doc: Any, source: str = "profile") -> PlatformProfile:
    """Check ``doc`` against the profile schema; :class:`ProfileError` names the first problem."""
    try:
        _validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ProfileError(f"{source}: invalid platform profile: {exc.message}") from None
    try:
        zone = zoneinfo.ZoneInfo(doc.get("time_zone", "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ProfileError(f"{source}: invalid platform profile: unknown time_zone {doc['time_zone']!r}") from None
    return PlatformProfile(doc=doc, zone=zone)


def load_profile(path: Path) -> PlatformProfile:
    """Read a YAML or JSON profile (JSON is YAML) and check it."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read platform profile: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ProfileError(f"{path}: platform profile is not YAML or JSON{line}") from None
    return profile_from_mapping(doc, str(path))
