"""The demo's report packets as NCMEC CyberTipline XML, both commands run as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ncmec import XSD, assert_valid, needs_xsd

pytestmark = pytest.mark.e2e

EXAMPLE_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "reports" / "platform-profile.example.yaml"


def streamsafe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamsafe", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@needs_xsd
def test_demo_reports_export_to_valid_cybertipline_xml(tmp_path):
    packets = tmp_path / "reports.jsonl"
    demo = streamsafe("demo", "--json", "--reports-out", str(packets), timeout=180)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    lines = packets.read_text().splitlines()
    assert len(lines) == summary["reports"] == 3
    report_ids = {json.loads(line)["report_id"] for line in lines}

    out = tmp_path / "cybertip"
    export = streamsafe("reports", "export", "--format", "cybertip-xml", "--profile", str(EXAMPLE_PROFILE),
                        "--from", str(packets), "--out", str(out), "--xsd", str(XSD))
    assert export.returncode == 0, export.stderr
    assert "wrote 3 CyberTipline reports" in export.stderr and "(validated)" in export.stderr
    reports = [p for p in out.glob("rep-*.xml") if ".frame-" not in p.name]
    assert {p.stem for p in reports} == report_ids
    texts = [p.read_text() for p in reports]
    assert all("<escalateToHighPriority>" in text for text in texts)  # every demo stream was live when decided
    assert sum("Human review: confirmed, category A2" in text for text in texts) == 1
    assert list(out.glob("*.frame-*.xml"))  # the known-hash frames, with their hashes
    for path in out.iterdir():
        assert_valid(path)  # again, independently of the command's own --xsd check
