"""Prometheus Operator objects: the ServiceMonitor that scrapes every worker, and the
PrometheusRule carrying ``deploy/prometheus/alerts.yml`` unchanged (the same rules promtool tests)
but for its runbook links, which point under the platform's runbook base as ``streamsafe alerts
render`` writes them."""

from __future__ import annotations

from typing import Any

import yaml

from streamsafe.deploy.options import HTTP_PORT_NAME, RenderOptions
from streamsafe.errors import ConfigError
from streamsafe.observability.alerts import PLACEHOLDER_RUNBOOK_BASE, render_alert_rules

__all__ = ["alert_rules", "prometheus_rule", "service_monitor"]

#: the alerts' ``job`` label: ``up{job="streamsafe"}``, whatever the app id
JOB = "streamsafe"


def alert_rules(runbook_base: str = PLACEHOLDER_RUNBOOK_BASE) -> dict[str, Any]:
    """The shipped alert rules as data (``{"groups": [...]}``), runbook links under ``runbook_base``."""
    rules = yaml.safe_load(render_alert_rules(runbook_base))
    if not isinstance(rules, dict) or not rules.get("groups"):
        raise ConfigError("the shipped alert rules have no rule groups")
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
        "spec": {"groups": (rules or alert_rules(options.runbook_base))["groups"]},
    }
