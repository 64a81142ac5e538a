"""The shipped Prometheus alert rules, with absolute runbook links on a base the platform chooses.

``deploy/prometheus/alerts.yml`` links every alert to its section of ``docs/runbook.md``
under a placeholder base (:data:`PLACEHOLDER_RUNBOOK_BASE`); :func:`render_alert_rules`
rewrites the base to where the platform publishes the runbook, leaving every rule as it is.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from streamsafe.errors import ConfigError

__all__ = ["PLACEHOLDER_RUNBOOK_BASE", "alert_rules_path", "render_alert_rules"]

PLACEHOLDER_RUNBOOK_BASE = "https://runbooks.streamsafe.example/runbook.md"


def alert_rules_path() -> Path:
    """``deploy/prometheus/alerts.yml`` of a checkout, or the wheel's copy."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "deploy" / "prometheus" / "alerts.yml",
                      package / "_deploy" / "prometheus" / "alerts.yml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no deploy/prometheus/alerts.yml found next to {package}")


def render_alert_rules(runbook_base: str = PLACEHOLDER_RUNBOOK_BASE) -> str:
    """The alert rules with every ``runbook_url`` under ``runbook_base`` (an absolute http(s) URL
    of the runbook document; each alert's anchor is appended as ``#<alert name in lower case>``)."""
    parts = urlsplit(runbook_base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise ConfigError(f"runbook base must be an absolute http(s) URL without a #fragment, got {runbook_base!r}")
    text = alert_rules_path().read_text()
    return text.replace(f"runbook_url: {PLACEHOLDER_RUNBOOK_BASE}#", f"runbook_url: {runbook_base.rstrip('/')}#")
