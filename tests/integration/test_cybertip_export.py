"""Report packets a real worker made on the broker, exported by ``streamsafe reports
export --format cybertip-xml`` as a user runs it, and validated against NCMEC's schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lxml import etree

from streamsafe import clients
from streamsafe.control.broadcast import stop_consumer
from streamsafe.events.contract import ACTIONS, ESCALATIONS, FRAME_HASHES, METADATA, REPORTS, REVIEW_VERDICTS
from tests.integration.conftest import KNOWN_MD5
from tests.integration.waits import processed
from tests.ncmec import XSD, assert_valid

pytestmark = pytest.mark.integration

CASE = "ab" * 32
WEAK = f"{int(CASE, 16) ^ ((1 << 26) - 1):064x}"  # 26 bits away from CASE: a weak PDQ match
EXAMPLE_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "reports" / "platform-profile.example.yaml"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def authority_bank(tmp_path: Path) -> Path:
    path = tmp_path / "ncmec.txt"
    path.write_text(f"md5:{KNOWN_MD5}\npdq:{CASE}\n")
    return path


@pytest.fixture
def mou_profile(tmp_path: Path) -> Path:
    """The example profile, for a company that has signed NCMEC's hash-sharing MOU."""
    doc = yaml.safe_load(EXAMPLE_PROFILE.read_text())
    doc["industry_classification"] = True
    path = tmp_path / "profile.json"
    path.write_text(yaml.safe_dump(doc))
    return path


async def started(pipeline, stream: str, account: str, ts_ms: int | None = None) -> None:
    await pipeline.send(METADATA, stream.encode(), {
        "schema_version": 1, "event": "stream.started", "stream_id": stream, "ts_ms": ts_ms or now_ms(),
        "broadcaster_id": account, "visibility": "public"})


async def frame(pipeline, stream: str, seq: int, **hashes: object) -> None:
    await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream,
                                                       "frames": [{"seq": seq, "ts_ms": now_ms(), **hashes}]})


async def worker_knows_it_ended(pipeline, stream: str, timeout_s: float = 30.0) -> None:
    """Wait until the worker's stream state (its changelog) holds the stream's end, so the
    late frame is decided on an ended stream (metadata and frames travel different topics)."""
    consumer = clients.consumer(pipeline.settings, f"{pipeline.settings.app_id}-stream-state-changelog")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            if any(stream.encode() in (m.key or b"") and b'"en"' in (m.value or b"")
                   for messages in batch.values() for m in messages):
                return
        raise AssertionError(f"the worker did not record the end of {stream} within {timeout_s} s")
    finally:
        await stop_consumer(consumer)


def export(pipeline, profile: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMSAFE_BROKER": pipeline.settings.broker_url,
           "STREAMSAFE_TOPIC_PREFIX": pipeline.settings.topic_prefix}
    return subprocess.run([sys.executable, "-m", "streamsafe", "reports", "export", "--format", "cybertip-xml",
                           "--profile", str(profile), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_worker_reports_export_to_valid_cybertipline_xml(pipeline, authority_bank, mou_profile, tmp_path):
    worker = pipeline.start_worker(authority_bank)
    worker.wait_ready()
    # live: a known picture while the stream is on air (the policy blocks and reports at once),
    # read before the record naming its broadcaster (frames and metadata travel different topics):
    # the report goes again, naming them, and the export writes that revision
    await frame(pipeline, "s-live", 1, md5=KNOWN_MD5)
    await pipeline.read(until=lambda r: any(p["stream_id"] == "s-live" for p in r.on(REPORTS)), topics=(REPORTS,))
    await started(pipeline, "s-live", "acct-live", now_ms() - 5_000)
    # ended: the same picture arrives late, after the broadcast ended (no high-priority escalation)
    await started(pipeline, "s-ended", "acct-ended")
    await pipeline.send(METADATA, b"s-ended", {"schema_version": 1, "event": "stream.ended", "stream_id": "s-ended",
                                              "ts_ms": now_ms(), "broadcaster_id": "acct-ended"})
    await worker_knows_it_ended(pipeline, "s-ended")
    await frame(pipeline, "s-ended", 1, md5=KNOWN_MD5)
    # reviewed: weak PDQ matches escalate; a reviewer confirms, category A2
    await started(pipeline, "s-review", "acct-review")
    for seq in range(3):
        await frame(pipeline, "s-review", seq, pdq=WEAK, pdq_quality=95)
    topics = (ACTIONS, ESCALATIONS, REPORTS)
    seen = await pipeline.read(until=lambda r: any(e["stream_id"] == "s-review" for e in r.on(ESCALATIONS)),
                               topics=topics)
    escalation = next(e for e in seen.on(ESCALATIONS) if e["stream_id"] == "s-review")
    await processed(pipeline, METADATA)  # the report is made at the verdict: with its broadcaster known
    await pipeline.send(REVIEW_VERDICTS, b"s-review", {
        "schema_version": 1, "stream_id": "s-review", "verdict": "confirmed", "category": "A2",
        "escalation_id": escalation["decision_id"], "reviewer_id": "rev-1", "ts_ms": now_ms()})
    records = await pipeline.read(until=lambda r: len({p["stream_id"] for p in r.on(REPORTS)}) == 3 and any(
        p["stream_id"] == "s-live" and p.get("revision") == 2 for p in r.on(REPORTS)), topics=(REPORTS,), timeout_s=60)
    packets = {p["stream_id"]: p for p in records.on(REPORTS)}
    live_packets = sorted((p.get("revision", 1), p["report_id"], p["reported_account"]["broadcaster_id"])
                          for p in records.on(REPORTS) if p["stream_id"] == "s-live")
    assert live_packets == [(1, packets["s-live"]["report_id"], None), (2, packets["s-live"]["report_id"], "acct-live")]
    # a record on the topic that is no packet: named, not fatal
    await pipeline.send(REPORTS, b"s-junk", b"{not a packet")

    out = tmp_path / "cybertip"
    result = export(pipeline, mou_profile, out)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (problem,) = [line for line in result.stderr.splitlines() if line.startswith("cannot export")]
    assert f"{pipeline.topic(REPORTS)}[" in problem and "not JSON" in problem
    assert "wrote 3 CyberTipline reports" in result.stderr
    assert KNOWN_MD5 not in result.stderr + result.stdout  # the command never prints report contents

    documents = {stream: etree.parse(str(out / f"{p['report_id']}.xml")).getroot() for stream, p in packets.items()}
    live, ended, reviewed = documents["s-live"], documents["s-ended"], documents["s-review"]
    assert "still broadcasting" in live.findtext("incidentSummary/escalateToHighPriority")
    assert ended.find("incidentSummary/escalateToHighPriority") is None
    assert live.findtext("internetDetails/webPageIncident/url") == "https://live.example/s-live"
    assert live.findtext("personOrUserReported/espIdentifier") == "acct-live"  # the completed revision
    assert reviewed.findtext("personOrUserReported/espIdentifier") == "acct-review"
    assert "Human review: confirmed, category A2 by reviewer rev-1" in reviewed.findtext("additionalInfo")

    (live_frame,) = out.glob(f"{packets['s-live']['report_id']}.frame-*.xml")
    live_details = etree.parse(str(live_frame)).getroot()
    assert [(h.get("hashType"), h.text) for h in live_details.findall("originalFileHash")] == [("MD5", KNOWN_MD5)]
    assert live_details.findtext("fileAnnotations/liveStreaming") == "true"
    assert live_details.findtext("fileViewedByEsp") == "false"  # blocked by the hash alone; nobody looked
    review_frames = sorted(out.glob(f"{packets['s-review']['report_id']}.frame-*.xml"))
    assert review_frames
    for path in review_frames:
        details = etree.parse(str(path)).getroot()
        assert details.findtext("industryClassification") == "A2"
        assert details.find("originalFileHash").get("hashType") == "PDQ"
        assert details.findtext("fileViewedByEsp") == "true"

    written = sorted(out.iterdir())
    assert len(written) == 3 + 2 + len(review_frames)
    if XSD is None:
        pytest.skip("exported and checked, but NCMEC's schema (../shared/data/ncmec/cyber_tipline.xsd) is absent: "
                    "not validated")
    for path in written:
        assert_valid(path)
