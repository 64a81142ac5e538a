"""Appeals through the real broker and worker: appeal -> review item -> verdict -> reinstate
with its statement of reasons; an authority-hash block needs a reviewer; re-delivery is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from streamsafe.events.contract import (
    ACTIONS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
    REVIEW_APPEALS,
    REVIEW_VERDICTS,
    STATEMENTS,
)
from tests.integration import test_review
from tests.integration.conftest import KNOWN_MD5
from tests.integration.test_review import WEAK, now_ms

pytestmark = pytest.mark.integration

OUT = (ACTIONS, ESCALATIONS, STATEMENTS, DEAD_LETTER)
bank_list = test_review.bank_list  # the review tests' partner bank holding CASE (a fixture)


def on(records, topic, stream, **fields):
    return [r for r in records.on(topic) if r["stream_id"] == stream and all(r.get(k) == v for k, v in fields.items())]


def appeal(stream, decision_id, appeal_id):
    return {"schema_version": 1, "appeal_id": appeal_id, "stream_id": stream, "decision_id": decision_id,
            "appellant_id": "acct-3", "submitted_at_ms": now_ms(), "statement": "nothing wrong was shown"}


def verdict(stream, kind, escalation_id=None):
    value = {"schema_version": 1, "stream_id": stream, "verdict": kind, "reviewer_id": "rev-4", "ts_ms": now_ms()}
    if escalation_id:
        value["escalation_id"] = escalation_id
    return value


def valid(pipeline, topic, record):
    errors = [e.message for e in jsonschema.Draft7Validator(pipeline.contract[topic].schema).iter_errors(record)]
    assert not errors, errors
    return record


async def test_appeal_review_reversal_reinstates_with_a_statement_of_reasons(pipeline, bank_list, broker):
    pipeline.start_worker(bank_list).wait_ready()
    stream = "s-restricted"
    await pipeline.send(METADATA, stream.encode(), {"schema_version": 1, "event": "stream.started",
                                                   "stream_id": stream, "ts_ms": now_ms(), "broadcaster_id": "acct-3"})
    for seq in range(3):
        await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
            {"seq": seq, "ts_ms": now_ms(), "pdq": WEAK, "pdq_quality": 95}]})
    first = await pipeline.read(until=lambda r: on(r, ACTIONS, stream, action="restrict"), topics=OUT)
    (restrict,) = on(first, ACTIONS, stream, action="restrict")
    await pipeline.send(REVIEW_APPEALS, stream.encode(), appeal(stream, restrict["decision_id"], "apl-r1"))
    opened = await pipeline.read(until=lambda r: on(r, ESCALATIONS, stream, rule="appeal"), topics=OUT)
    (item,) = on(opened, ESCALATIONS, stream, rule="appeal")
    valid(pipeline, ESCALATIONS, item)
    assert item["appeal_id"] == "apl-r1" and item["appealed_decision_id"] == restrict["decision_id"]
    assert item["priority"] == "P2" and item["review_due_ms"] - item["decided_at_ms"] == 2 * 3_600_000
    await pipeline.send(REVIEW_VERDICTS, stream.encode(), verdict(stream, "reversed", item["decision_id"]))
    done = await pipeline.read(until=lambda r: on(r, STATEMENTS, stream, action="reinstate"), topics=OUT)
    (reinstate,) = on(done, ACTIONS, stream, action="reinstate")
    valid(pipeline, ACTIONS, reinstate)
    assert reinstate["reverses"] == restrict["decision_id"] and reinstate["appeal_id"] == "apl-r1"
    assert reinstate["restrictions"] == restrict["restrictions"]
    statements = {r["decision_id"]: valid(pipeline, STATEMENTS, r) for r in on(done, STATEMENTS, stream)}
    assert set(statements) == {restrict["decision_id"], reinstate["decision_id"]}
    assert statements[reinstate["decision_id"]]["reverses"] == restrict["decision_id"]
    # exported from the topic as a user runs it: bare submissions, one per statement
    exported = subprocess.run([sys.executable, "-m", "streamsafe", "statements", "export", "--broker", broker.url,
                               "--topic-prefix", pipeline.settings.topic_prefix], capture_output=True, text=True,
                              timeout=120)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {s["puid"] for s in lines} == {r["statement"]["puid"] for r in statements.values()}


async def test_an_authority_hash_block_is_reinstated_only_by_a_reviewer(pipeline, hash_list):
    pipeline.start_worker(hash_list).wait_ready()
    stream = "s-authority"
    await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
        {"seq": 1, "ts_ms": now_ms(), "md5": KNOWN_MD5}]})
    first = await pipeline.read(until=lambda r: on(r, ACTIONS, stream, action="block"), topics=OUT)
    (block,) = on(first, ACTIONS, stream, action="block")
    await pipeline.send(REVIEW_APPEALS, stream.encode(), appeal(stream, block["decision_id"], "apl-a1"))
    opened = await pipeline.read(until=lambda r: on(r, ESCALATIONS, stream, rule="appeal"), topics=OUT)
    (item,) = on(opened, ESCALATIONS, stream, rule="appeal")
    assert any("authority bank(s) ncmec" in r and "never reinstated automatically" in r for r in item["reasons"])
    assert item["evidence"][0]["authority_banks"] == ["ncmec"]
    # verdicts on the stream as a whole do not answer the appeal; nothing is reinstated
    await pipeline.send(REVIEW_VERDICTS, stream.encode(), verdict(stream, "benign"))
    await pipeline.send(REVIEW_VERDICTS, stream.encode(), {**verdict(stream, "confirmed"), "category": "A1"})
    waiting = await pipeline.read(until=lambda r: True, topics=OUT, settle_s=3.0)
    assert not on(waiting, ACTIONS, stream, action="reinstate")
    await pipeline.send(REVIEW_VERDICTS, stream.encode(), verdict(stream, "reversed", item["decision_id"]))
    done = await pipeline.read(until=lambda r: on(r, STATEMENTS, stream, action="reinstate"), topics=OUT)
    (reinstate,) = on(done, ACTIONS, stream, action="reinstate")
    assert reinstate["reverses"] == block["decision_id"]
    (stated,) = on(done, STATEMENTS, stream, action="reinstate")
    assert stated["statement"]["category_specification"] == ["KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL"]
    assert stated["statement"]["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"


async def test_a_redelivered_appeal_creates_nothing_new(pipeline, hash_list):
    pipeline.start_worker(hash_list).wait_ready()
    stream = "s-again"
    await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
        {"seq": 1, "ts_ms": now_ms(), "md5": KNOWN_MD5}]})
    first = await pipeline.read(until=lambda r: on(r, ACTIONS, stream, action="block"), topics=OUT)
    (block,) = on(first, ACTIONS, stream, action="block")
    value = appeal(stream, block["decision_id"], "apl-d1")
    await pipeline.send(REVIEW_APPEALS, stream.encode(), value)
    await pipeline.read(until=lambda r: on(r, ESCALATIONS, stream, rule="appeal"), topics=OUT)
    before = await pipeline.read(until=lambda r: True, topics=OUT, settle_s=2.0)
    await pipeline.send(REVIEW_APPEALS, stream.encode(), value)  # the same appeal again
    await pipeline.send(REVIEW_APPEALS, stream.encode(), appeal(stream, block["decision_id"], "apl-d2"))  # joins it
    await pipeline.send(REVIEW_APPEALS, stream.encode(), b"{not json")  # and a broken one: dead-lettered
    after = await pipeline.read(until=lambda r: len(r.on(DEAD_LETTER)) > len(before.on(DEAD_LETTER)), topics=OUT,
                                settle_s=3.0)
    for topic in (ACTIONS, ESCALATIONS, STATEMENTS):  # topic by topic: a read interleaves topics as it likes
        assert after.on(topic) == before.on(topic), topic
    assert len(on(after, ESCALATIONS, stream, rule="appeal")) == 1
    (dead,) = [d for d in after.on(DEAD_LETTER) if d["source"]["topic"].endswith(REVIEW_APPEALS)]
    assert dead["reason"] == "malformed_json"
