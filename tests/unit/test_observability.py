"""Metrics, health endpoints and logs without a broker; alert rules with promtool."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from streamsafe.brokers.base import free_port
from streamsafe.errors import ConfigError
from streamsafe.observability.alerts import PLACEHOLDER_RUNBOOK_BASE, render_alert_rules
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
        base, anchor = rule["annotations"]["runbook_url"].split("#", 1)
        assert base == PLACEHOLDER_RUNBOOK_BASE  # absolute; rewritten by `streamsafe alerts render`
        assert f"## {rule['alert']}" in runbook and anchor == rule["alert"].lower()


def test_alert_rules_render_with_the_platforms_runbook_base(tmp_path):
    base = "https://wiki.platform.example/sre/streamsafe-runbook.md"
    rendered = yaml.safe_load(render_alert_rules(base + "/"))
    shipped = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    urls = [r["annotations"].pop("runbook_url") for g in rendered["groups"] for r in g["rules"]]
    assert urls == [f"{base}#{r['alert'].lower()}" for g in shipped["groups"] for r in g["rules"]]
    for rule in (r for g in shipped["groups"] for r in g["rules"]):
        del rule["annotations"]["runbook_url"]
    assert rendered == shipped  # nothing but the links changed
    for bad in ("docs/runbook.md", "ftp://host/runbook", "https://host/runbook#x"):
        with pytest.raises(ConfigError):
            render_alert_rules(bad)
    out = tmp_path / "alerts.yml"
    done = subprocess.run([sys.executable, "-m", "streamsafe", "alerts", "render", "--runbook-base", base,
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == render_alert_rules(base)
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


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


def test_alerted_series_start_at_zero_and_process_metrics_are_exported():
    from prometheus_client import generate_latest

    from streamsafe.agents.readiness import STALL_CAUSES
    from streamsafe.events.dead_letter import DEAD_LETTER_REASONS

    metrics = StreamSafeMetrics.create()
    metrics.start_at_zero(["livestream.metadata"], ["online_enticement"], ["benign"], STALL_CAUSES)
    text = generate_latest(metrics.registry).decode()
    for priority in ("P0", "P1", "P2", "P3"):
        assert f'streamsafe_review_sla_breaches_total{{priority="{priority}"}} 0.0' in text
    for reason in DEAD_LETTER_REASONS:
        assert (f'streamsafe_input_messages_total{{outcome="dead_lettered",reason="{reason}",'
                'topic="livestream.metadata"} 0.0') in text
    assert 'streamsafe_reports_total{incident_type="online_enticement"} 0.0' in text
    assert 'streamsafe_review_verdicts_total{outcome="benign"} 0.0' in text
    assert all(f'streamsafe_stalled{{cause="{cause}"}} 0.0' in text for cause in STALL_CAUSES)
    assert "process_resident_memory_bytes" in text and "process_start_time_seconds" in text


def test_dashboard_filters_by_worker_topic_and_partition():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "streamsafe.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "topic", "partition"} <= set(variables)
    for name in ("instance", "topic", "partition"):
        assert variables[name]["includeAll"] and variables[name]["multi"] and variables[name]["allValue"] == ".*"
    selector = re.compile(r"\b(?:streamsafe|process)_[a-z0-9_]+(\{[^}]*\})?")
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for match in selector.finditer(target["expr"]):
                labels = match.group(1) or ""
                assert 'instance=~"$instance"' in labels, (panel["title"], target["expr"])
                if match.group(0).startswith(("streamsafe_consumer_lag_messages", "streamsafe_input_messages")):
                    assert 'topic=~"$topic"' in labels, (panel["title"], target["expr"])
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Consumer lag by partition", "Worker CPU (cores)", "Worker memory (RSS)"} <= titles
