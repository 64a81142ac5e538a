"""Metrics, health endpoints and logs without a broker; alert rules with promtool."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
import yaml
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from streamsafe.brokers.base import free_port
from streamsafe.observability.health import HealthServer
from streamsafe.observability.logs import JsonFormatter
from streamsafe.observability.metrics import StreamSafeMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("STREAMSAFE_REQUIRE_PROMETHEUS"),
    reason="promtool not installed (apt-get install prometheus; CI installs it and requires it)",
)


def referenced_metrics() -> dict[str, set[str]]:
    pattern = re.compile(r"\bstreamsafe_[a-z_]+")
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alert_exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "streamsafe.json").read_text())
    dash_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    return {"alerts": set(pattern.findall(alert_exprs)), "dashboard": set(pattern.findall(dash_exprs))}


def test_every_metric_the_dashboard_and_alerts_use_is_exported():
    exported = StreamSafeMetrics.create().names()
    for source, names in referenced_metrics().items():
        assert names, source
        assert names <= exported, f"{source} uses metrics the worker does not export: {names - exported}"


def test_dashboard_covers_what_an_sre_needs():
    used = referenced_metrics()["dashboard"]
    for needed in ("streamsafe_input_messages_total", "streamsafe_decisions_total",
                   "streamsafe_record_to_decision_seconds_bucket", "streamsafe_consumer_lag_messages",
                   "streamsafe_bank_entries", "streamsafe_review_sla_breaches_total"):
        assert needed in used


def test_every_alert_has_a_summary_and_a_runbook_section():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert rule["annotations"]["summary"]
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"## {rule['alert']}" in runbook and anchor == rule["alert"].lower()


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=PROMETHEUS,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_no_identifier_labels():
    forbidden = {"stream_id", "reporter_id", "broadcaster_id", "hash", "entry_id", "decision_id", "user_id"}
    metrics = StreamSafeMetrics.create()
    for name in vars(metrics):
        metric = getattr(metrics, name)
        if name != "registry":
            assert not forbidden & set(getattr(metric, "_labelnames", ())), name


async def test_health_endpoints_follow_the_conditions():
    metrics = StreamSafeMetrics.create(CollectorRegistry())
    conditions = {"partitions_assigned": False, "tables_recovered": False, "policies_and_banks_loaded": False}
    port = free_port()
    server = HealthServer(metrics, lambda: conditions, "127.0.0.1", port)
    await server.start()
    try:
        async with ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503 and (await r.json())["partitions_assigned"] is False
            conditions.update(partitions_assigned=True, tables_recovered=True)
            async with http.get(f"{base}/readyz") as r:
                body = await r.json()
                assert r.status == 503 and body == {"ready": False, **conditions}
            conditions["policies_and_banks_loaded"] = True
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
            metrics.decisions.labels("block", "").inc()
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
                assert 'streamsafe_decisions_total{action="block",priority=""} 1.0' in text
                assert "streamsafe_worker_up 1.0" in text and "streamsafe_ready 1.0" in text
    finally:
        await server.stop()


def test_json_log_lines():
    record = logging.LogRecord("streamsafe.x", logging.WARNING, __file__, 1, "bank entry at %s rejected: %s",
                               ("hashbank.entries[0]@7", "schema_violation"), None)
    line = orjson.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "streamsafe.x"
    assert line["message"] == "bank entry at hashbank.entries[0]@7 rejected: schema_violation"
    assert line["ts"].endswith("Z")


def test_lag_of_a_partition_never_committed_counts_from_zero():
    from streamsafe.observability.metrics import lag

    assert lag(40, None) == 40  # Faust's committed-offset map holds None there
    assert lag(40, 35) == 5 and lag(40, 41) == 0
