"""Prometheus Operator objects: the ServiceMonitor that scrapes every worker, and the
PrometheusRule carrying ``deploy/prometheus/alerts.yml`` unchanged (the same rules promtool tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamsafe.deploy.options import HTTP_PORT_NAME, RenderOptions
from streamsafe.errors import ConfigError

__all__ = ["alert_rules", "alerts_path", "prometheus_rule", "service_monitor"]

#: the alerts' ``job`` label: ``up{job="streamsafe"}``, whatever the app id
JOB = "streamsafe"


def alerts_path() -> Path:
    """The checkout's ``deploy/prometheus/alerts.yml``, or the copy an installed wheel carries."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "deploy" / "prometheus" / "alerts.yml",
                      package / "_deploy" / "prometheus" / "alerts.yml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no deploy/prometheus/alerts.yml found next to {package}")


def alert_rules(path: Path | None = None) -> dict[str, Any]:
    """The alert rule file as data (``{"groups": [...]}``)."""
    rules = yaml.safe_load((path or alerts_path()).read_text())
    if not isinstance(rules, dict) or not rules.get("groups"):
        raise ConfigError(f"{path or alerts_path()} has no rule groups")
    return rules


def service_monitor(options: RenderOptions) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {
            # job="streamsafe" from the Service's app.kubernetes.io/name label, as the alerts expect
            "jobLabel": "app.kubernetes.io/name",
            "selector": {"matchLabels": options.selector()},
            "namespaceSelector": {"matchNames": [options.namespace]},
            "endpoints": [{"port": HTTP_PORT_NAME, "path": "/metrics", "interval": "15s",
                           "scrapeTimeout": "10s"}],
        },
    }


def prometheus_rule(options: RenderOptions, rules: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {"groups": (rules or alert_rules())["groups"]},
    }
