"""Health endpoints of a real worker, and a real Prometheus server scraping it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from streamsafe.brokers.base import free_port
from streamsafe.events.contract import ACTIONS, FRAME_HASHES

pytestmark = pytest.mark.integration

KNOWN_MD5 = "5d41402abc4b2a76b9719d911017c592"


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
        return r.status, await r.text()


async def test_readyz_is_false_until_the_worker_is_assigned_and_loaded(pipeline, tmp_path):
    hash_list = tmp_path / "ncmec.txt"
    hash_list.write_text(f"md5:{KNOWN_MD5}\n")
    worker = pipeline.start_worker(hash_list)
    port = worker.http_port
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, _ = await get(f"http://127.0.0.1:{port}/readyz")
            seen.append(status)
            if status == 200:
                break
        except aiohttp.ClientError:
            pass  # not listening yet
        await asyncio.sleep(0.05)
    assert 503 in seen and seen[-1] == 200, seen
    assert (await get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
    status, body = await get(f"http://127.0.0.1:{port}/readyz")
    assert status == 200 and '"policies_and_banks_loaded":true' in body
    _, metrics = await get(f"http://127.0.0.1:{port}/metrics")
    # a fresh worker already exports, at 0, the series its "first breach" alerts take increase() of
    for series in ('streamsafe_review_sla_breaches_total{priority="P0"} 0.0',
                   'streamsafe_input_messages_total{outcome="dead_lettered",reason="wrong_partition",'
                   'topic="livestream.classifier-signals"} 0.0',
                   'streamsafe_reports_total{incident_type="child_sexual_abuse_material"} 0.0',
                   'streamsafe_stalled{cause="delivery"} 0.0'):
        assert series in metrics, series
    assert "process_resident_memory_bytes " in metrics and "process_cpu_seconds_total " in metrics


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("STREAMSAFE_REQUIRE_PROMETHEUS"),
    reason="prometheus not installed (apt-get install prometheus; CI installs and requires it)")
async def test_real_prometheus_sees_decisions_and_latency_move(pipeline, tmp_path):
    hash_list = tmp_path / "ncmec.txt"
    hash_list.write_text(f"md5:{KNOWN_MD5}\n")
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    metrics_port = worker.http_port
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: streamsafe
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    data = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp_path))
    prometheus = subprocess.Popen(
        [shutil.which("prometheus") or "prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    api = f"http://127.0.0.1:{prom_port}/api/v1/query?query="
    try:
        async def query(expr: str) -> float | None:
            try:
                async with aiohttp.ClientSession() as http, http.get(api + expr) as r:
                    result = (await r.json())["data"]["result"]
                    return float(result[0]["value"][1]) if result else None
            except (aiohttp.ClientError, KeyError):
                return None

        async def wait_for(expr: str, predicate, timeout_s: float = 30.0) -> float:
            deadline = time.monotonic() + timeout_s
            value = None
            while time.monotonic() < deadline:
                value = await query(expr)
                if value is not None and predicate(value):
                    return value
                await asyncio.sleep(0.5)
            raise AssertionError(f"{expr} = {value} after {timeout_s}s")

        await wait_for('up{job="streamsafe"}', lambda v: v == 1)
        before = await wait_for("sum(streamsafe_input_messages_total) or vector(0)", lambda v: v >= 0)
        for i in range(5):
            stream = f"s-prom-{i}".encode()
            await pipeline.send(FRAME_HASHES, stream, {"schema_version": 1, "stream_id": stream.decode(),
                                                       "frames": [{"seq": 1, "ts_ms": int(time.time() * 1000),
                                                                   "md5": KNOWN_MD5}]})
        await pipeline.read(until=lambda r: len([d for d in r.on(ACTIONS) if d["action"] == "block"]) >= 5)
        blocks = await wait_for('sum(streamsafe_decisions_total{action="block"})', lambda v: v >= 5)
        latency = await wait_for('sum(streamsafe_record_to_decision_seconds_count{action="block"})',
                                 lambda v: v >= 5)
        p99_expr = ('histogram_quantile(0.99, sum by (le) '
                    '(streamsafe_record_to_decision_seconds_bucket{action="block"}))')
        p99 = await wait_for(p99_expr, lambda v: v > 0)
        accepted = await wait_for("sum(streamsafe_input_messages_total)", lambda v: v >= before + 5)
        assert blocks == 5 and latency == 5 and p99 > 0 and accepted >= before + 5
        assert await wait_for("streamsafe_ready", lambda v: v == 1) == 1
        # every dashboard query, with its variables at "All", is valid PromQL on a real server, and
        # the per-worker and per-partition panels have data from this worker
        dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamsafe.json")
                               .read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = re.sub(r"\$(instance|topic|partition)\b", ".*", target["expr"])
                async with aiohttp.ClientSession() as http, http.get(api + quote(expr)) as r:
                    answer = await r.json()
                assert answer["status"] == "success", (panel["title"], expr, answer)
        scoped = f'instance=~"127.0.0.1:{metrics_port}"'
        assert await wait_for(quote(f'sum(rate(process_cpu_seconds_total{{{scoped}}}[1m])) or vector(-1)'),
                              lambda v: v >= 0) >= 0
        assert await wait_for(quote(f"count(streamsafe_consumer_lag_messages{{{scoped}, partition=~\".*\"}})"),
                              lambda v: v >= 1) >= 1
    finally:
        prometheus.terminate()
        prometheus.wait(20)
