"""`streamsafe transparency` on a demo recording, as a user runs it: its --json equals
counts made here from the recorded enforcement topics, and its HTML page, rendered by
headless Chromium, loads without script errors or fetches and shows the --json figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsafe.transparency.render import flatten
from tests.transparency_support import (
    assert_report_matches,
    chromium_or_skip,
    expected_figures,
    newest_record_ms,
    parse_figure,
)

pytestmark = pytest.mark.e2e

HOUR_MS = 3_600_000


def streamsafe(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    return subprocess.run([sys.executable, "-m", "streamsafe", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("transparency")
    recording = work / "demo.jsonl"
    started_ms = int(time.time() * 1000)
    demo = streamsafe("demo", "--json", "--record", str(recording), timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    # the period: the demo's run, from an hour before it to an hour after it
    since, until = started_ms - HOUR_MS, int(time.time() * 1000) + HOUR_MS
    page, table = work / "report.html", work / "report.csv"
    run = streamsafe("transparency", "--recording", str(recording), "--since", str(since), "--until", str(until),
                     "--json", "--out", str(page), "--csv", str(table), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    records = [(line["topic"], line["value"]) for line in map(orjson.loads, recording.read_bytes().splitlines())]
    return {"json": orjson.loads(run.stdout), "records": records, "since": since, "until": until,
            "page": page, "csv": table, "work": work, "demo": orjson.loads(demo.stdout.strip().splitlines()[-1])}


def test_json_equals_counts_made_from_the_recorded_topics(demo_report):
    report, records = demo_report["json"], demo_report["records"]
    assert {t for t, _ in records} >= {"enforcement.actions", "enforcement.escalations", "enforcement.reports",
                                       "enforcement.preservation", "review.verdicts", "streamsafe.dead-letter"}
    as_of = newest_record_ms(records)
    assert report["period"]["as_of_ms"] == as_of
    assert_report_matches(report, expected_figures(records, demo_report["since"], demo_report["until"], as_of))
    # the P1 confirm-the-block escalations on the known-hash streams are due in 30 minutes: open
    assert report["review_sla"]["P1"]["open"] >= 2 and report["review_sla"]["P1"]["missed"] == 0
    # and what the demo itself saw: the same decisions, reports and dead letters
    summary = demo_report["demo"]
    assert {a: n for a, n in report["actions"]["by_type"].items() if n} == summary["decisions"]
    assert report["authority_reports"]["filed"] == summary["reports"] == 3
    assert report["dead_letters"]["total"] == summary["dead_lettered"] == 4
    # the reviewer confirmed one escalated stream (settling its escalations) and found the other's
    # escalation (the one it names) benign
    overturn = report["reviewer_overturn"].values()
    assert sum(o["benign"] for o in overturn) == 1 and sum(o["reviewed"] for o in overturn) >= 2
    assert report["automation"]["human"] == 1  # the reviewer's block


def test_csv_holds_the_json_figures(demo_report):
    import csv

    with demo_report["csv"].open() as handle:
        rows = {(r["section"], r["figure"]): r["value"] for r in csv.DictReader(handle)}
    report = demo_report["json"]
    for section in report:
        if section == "schema_version":
            continue
        for path, value in flatten(report[section]):
            assert rows[(section, path)] == ("" if value is None else str(value)), (section, path)


def test_the_page_renders_in_headless_chromium_and_shows_the_json_figures(demo_report):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    page_path: Path = demo_report["page"]
    png = demo_report["work"] / "report.png"
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
            page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") else None)
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.on("request", lambda req: requests.append(req.url))
            response = page.goto(page_path.as_uri(), wait_until="load")
            assert response is not None and response.ok
            shown = page.eval_on_selector_all("[data-figure]", "els => els.map(e => [e.dataset.figure, e.innerText])")
            embedded = page.eval_on_selector("#transparency-data", "e => JSON.parse(e.textContent)")
            charts = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    report = demo_report["json"]
    assert embedded == report
    assert len(charts) == 6 and all(done and width > 0 for done, width in charts), charts
    numbers = {f"{s}/{p}": v for s in report if s not in ("schema_version", "period") for p, v in flatten(report[s])}
    assert {path for path, _ in shown} == set(numbers)
    for path, text in shown:
        assert parse_figure(text) == numbers[path], (path, text, numbers[path])
    from PIL import Image

    with Image.open(png) as image:
        width, height = image.size
        assert width == 1200 and height > 1500  # charts and every table laid out, not an error page
        assert len(image.getcolors(1 << 20) or ()) > 50  # drawn content, not a blank page
