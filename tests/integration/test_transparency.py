"""`streamsafe transparency` against the real broker: a worker makes real enforcement
records, a reviewer answers, a broadcaster appeals and a reviewer reverses the appeal (the
worker's review item and ``reinstate`` decision); the command's --json equals counts made here
from the same topics read over TCP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest

from streamsafe.events.contract import (
    ACTIONS,
    CLASSIFIER_SIGNALS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
)
from streamsafe.transparency.log import APPEALS
from tests.integration.conftest import KNOWN_MD5
from tests.transparency_support import appeal, assert_report_matches, expected_figures

pytestmark = pytest.mark.integration

TOPICS = (ACTIONS, ESCALATIONS, REPORTS, PRESERVATION, REVIEW_VERDICTS, APPEALS, DEAD_LETTER)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_report_from_the_broker_equals_counts_made_from_its_topics(pipeline, hash_list):
    started = now_ms()
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    await pipeline.send(FRAME_HASHES, b"s-hash", {"schema_version": 1, "stream_id": "s-hash", "frames": [
        {"seq": 1, "ts_ms": now_ms(), "md5": KNOWN_MD5}]})
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-csam", {
        "schema_version": 1, "stream_id": "s-csam", "classifier": "csam", "model_version": "m-1", "score": 0.95,
        "ts_ms": now_ms()})
    await pipeline.send(FRAME_HASHES, b"s-bad", b'{"schema_version": 1, "stream_id": ')

    def made(r):
        return ({(d["stream_id"], d["action"]) for d in r.on(ACTIONS) + r.on(ESCALATIONS)}
                >= {("s-hash", "block"), ("s-hash", "report"), ("s-csam", "escalate"), ("s-csam", "restrict")}
                and r.on(DEAD_LETTER) and r.on(REPORTS))

    first = await pipeline.read(until=made, topics=(ACTIONS, ESCALATIONS, DEAD_LETTER, REPORTS), timeout_s=60)
    (p0,) = [e for e in first.on(ESCALATIONS) if e["stream_id"] == "s-csam"]
    (restrict,) = [a for a in first.on(ACTIONS) if a["stream_id"] == "s-csam" and a["action"] == "restrict"]
    await pipeline.send(REVIEW_VERDICTS, b"s-csam", {"schema_version": 1, "stream_id": "s-csam", "verdict": "benign",
                                                     "escalation_id": p0["decision_id"], "reviewer_id": "rev-1",
                                                     "ts_ms": now_ms()})
    # the broadcaster appeals the restriction (twice: a re-delivery) and a reviewer reverses it
    filed = appeal("apl-1", "s-csam", restrict["decision_id"], now_ms())
    await pipeline.send(APPEALS, b"s-csam", filed)
    await pipeline.send(APPEALS, b"s-csam", filed)
    opened = await pipeline.read(until=lambda r: any(e.get("appeal_id") == "apl-1" for e in r.on(ESCALATIONS)),
                                 topics=(ESCALATIONS,), timeout_s=60)
    # one review item, however often the appeal came: a second record stamped in the same millisecond is
    # taken for a re-delivery and answered with the same decision again (consumers de-duplicate on its id)
    (item,) = {e["decision_id"]: e for e in opened.on(ESCALATIONS) if e.get("appeal_id") == "apl-1"}.values()
    await pipeline.send(REVIEW_VERDICTS, b"s-csam", {"schema_version": 1, "stream_id": "s-csam", "verdict": "reversed",
                                                     "escalation_id": item["decision_id"], "reviewer_id": "rev-2",
                                                     "ts_ms": now_ms()})
    until = now_ms() + 60_000

    records = await pipeline.read(
        until=lambda r: len(r.on(APPEALS)) == 2 and len(r.on(REVIEW_VERDICTS)) == 2 and r.on(PRESERVATION)
        and any(a["action"] == "reinstate" for a in r.on(ACTIONS)), topics=TOPICS, timeout_s=60, settle_s=1.0)
    run = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "streamsafe", "transparency", "--broker", pipeline.settings.broker_url,
        "--topic-prefix", pipeline.settings.topic_prefix, "--since", str(started - 60_000), "--until", str(until),
        "--json"], capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    report = orjson.loads(run.stdout)
    raw = [(topic, value) for topic, _, value in records.items]
    as_of = report["period"]["as_of_ms"]  # when the command read the topics
    assert started < as_of <= now_ms()
    assert_report_matches(report, expected_figures(raw, started - 60_000, until, as_of))
    assert report["records"]["read"] == {t: len(records.on(t)) for t in TOPICS}
    # what the worker and the test made, spelled out
    # escalations: the P0 (classifier), the P1 confirm-the-block task and the appeal's review item (P2)
    assert report["actions"]["by_type"] == {"block": 1, "restrict": 1, "escalate": 3, "report": 1, "reinstate": 1}
    assert report["detection_sources"]["authority_hash"] == 3 and report["detection_sources"]["classifier"] == 2
    assert report["authority_reports"]["filed"] == 1 and report["authority_reports"]["preservation_requests"] == 1
    assert report["reviewer_overturn"] == {"csam-classifier": {"reviewed": 1, "benign": 1, "overturn_rate": 1.0}}
    assert report["review_sla"]["P0"]["met"] == 1 and report["review_sla"]["P1"]["open"] == 1
    assert report["appeals"] == {"received": 1, "reversals": 1, "reversal_rate": 1.0}
    assert report["dead_letters"] == {"total": 1, "by_reason": {"malformed_json": 1}}
