"""Policies through the real broker: every default rule, hot reload, refusal, shadow."""

from __future__ import annotations

import time

import jsonschema
import pytest

from streamsafe.control.publish import publish_policy, retire_shadow
from streamsafe.events.contract import (
    ACTIONS,
    CLASSIFIER_SIGNALS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
    SHADOW_DECISIONS,
    USER_REPORTS,
)
from streamsafe.policy.loader import default_policy_text, load_policy
from tests.integration.conftest import KNOWN_MD5
from tests.integration.waits import wait_for_metric

pytestmark = pytest.mark.integration

DEFAULT_VERSION = load_policy().version
ALL = (ACTIONS, ESCALATIONS, SHADOW_DECISIONS, DEAD_LETTER)


def now_ms() -> int:
    return int(time.time() * 1000)


def signal(stream, classifier, score, **evidence):
    value = {"schema_version": 1, "stream_id": stream, "classifier": classifier, "model_version": "m-1",
             "score": score, "ts_ms": now_ms()}
    return value | ({"evidence": evidence} if evidence else {})


def started(stream, **context):
    return {"schema_version": 1, "event": "stream.started", "stream_id": stream, "ts_ms": now_ms(),
            "broadcaster_id": "acct-7", **context}


def decisions(records, stream, topic=None):
    topics = (topic,) if topic else (ACTIONS, ESCALATIONS)
    return [r for t in topics for r in records.on(t) if r["stream_id"] == stream]


def kinds(items):
    return sorted((d["action"], d.get("priority", "")) for d in items)


async def test_default_rules_through_the_broker(pipeline, hash_list):
    worker = pipeline.start_worker(hash_list)
    # authority bank at strong distance -> block + report
    await pipeline.send(FRAME_HASHES, b"s-hash", {"schema_version": 1, "stream_id": "s-hash", "frames": [
        {"seq": 4, "ts_ms": now_ms(), "md5": KNOWN_MD5}]})
    # minor presence and nudity -> block + escalate P0
    for classifier, score in (("minor_presence", 0.86), ("nudity", 0.91)):
        await pipeline.send(CLASSIFIER_SIGNALS, b"s-minor", signal("s-minor", classifier, score, frame_seq=9))
    # grooming on a private stream of a young account -> escalate P1
    await pipeline.send(METADATA, b"s-groom", started("s-groom", visibility="private", account_age_days=2))
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-groom",
                        signal("s-groom", "grooming_text", 0.84, chat_message_id="msg-55"))
    # three distinct reporters within ten minutes -> escalate P2
    for reporter in ("r-1", "r-2", "r-1", "r-3"):
        await pipeline.send(USER_REPORTS, b"s-reports", {
            "schema_version": 1, "stream_id": "s-reports", "category": "child_endangerment",
            "ts_ms": now_ms(), "reporter_id": reporter})
    # adult nudity without a minor: nothing
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-adult", signal("s-adult", "nudity", 0.95))
    worker.wait_ready()

    def complete(r):
        return (decisions(r, "s-hash", ACTIONS) and decisions(r, "s-minor", ESCALATIONS)
                and decisions(r, "s-groom", ESCALATIONS) and decisions(r, "s-reports", ESCALATIONS))

    records = await pipeline.read(until=complete, settle_s=2.0)
    assert ("block", "") in kinds(decisions(records, "s-hash")) and ("report", "") in kinds(
        decisions(records, "s-hash"))
    minor = decisions(records, "s-minor")
    assert ("block", "") in kinds(minor) and ("escalate", "P0") in kinds(minor)
    groom = decisions(records, "s-groom", ESCALATIONS)
    assert [(g["priority"], g["rule"]) for g in groom] == [("P1", "grooming-private-young-account")]
    assert {"kind": "classifier", "classifier": "grooming_text", "score": 0.84,
            "chat_message_id": "msg-55"}.items() <= groom[0]["evidence"][0].items()
    reports = decisions(records, "s-reports", ESCALATIONS)
    assert [(r["priority"], r["rule"]) for r in reports] == [("P2", "user-reports-burst")]
    assert decisions(records, "s-adult") == []
    for topic in (ACTIONS, ESCALATIONS):
        for record in records.on(topic):
            assert record["policy_version"] == DEFAULT_VERSION
            assert record["explanation"]["top_contributions"]
            jsonschema.validate(record, pipeline.contract[topic].schema)


STRICT = """
version: strict-test-2
rules:
  - name: any-nudity
    when: {score.nudity: {gte: 0.5}}
    then: [{escalate: P3}]
"""


async def test_policy_hot_reload_and_refusal(pipeline):
    worker = pipeline.start_worker()
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-1", signal("s-1", "nudity", 0.6))
    worker.wait_ready()
    await pipeline.read(until=lambda r: False, timeout_s=3)  # the default policy: nothing for this
    # an invalid policy is refused with a clear reason; the default stays in force
    await publish_policy(pipeline.settings, "version: broken\nrules: [{name: x, when: {risk: {gte: 7}}, "
                         "then: [explode]}]\n", check=False)
    dead = await pipeline.read(until=lambda r: r.on(DEAD_LETTER))
    (refusal,) = dead.on(DEAD_LETTER)
    assert refusal["reason"] == "invalid_policy" and "explode" in refusal["detail"]
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-2", signal("s-2", "nudity", 0.6))
    # signals and policies are separate topics, read in no fixed order: s-2 is handled first
    await wait_for_metric(worker, "streamsafe_input_messages_total", lambda v: v >= 2, topic=CLASSIFIER_SIGNALS,
                          outcome="accepted")
    # a valid policy takes effect without a restart
    await publish_policy(pipeline.settings, STRICT)
    await wait_for_metric(worker, "streamsafe_policy_info", lambda v: v == 1, role="live", version="strict-test-2")
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-3", signal("s-3", "nudity", 0.6))
    records = await pipeline.read(until=lambda r: decisions(r, "s-3"), settle_s=1.0)
    (escalation,) = decisions(records, "s-3")
    assert escalation["policy_version"] == "strict-test-2" and escalation["rule"] == "any-nudity"
    assert decisions(records, "s-1") == [] and decisions(records, "s-2") == []
    assert worker.alive


SHADOW = default_policy_text().replace(f'version: "{DEFAULT_VERSION}"', 'version: "candidate-7"').replace(
    "      score.grooming_text: {gte: 0.8}", "      score.grooming_text: {gte: 0.5}")


async def test_shadow_decisions_appear_only_on_the_shadow_topic(pipeline):
    worker = pipeline.start_worker()
    await publish_policy(pipeline.settings, SHADOW, shadow="candidate")
    worker.wait_ready()
    await wait_for_metric(worker, "streamsafe_policy_info", lambda v: v == 1, role="shadow", version="candidate-7")
    await pipeline.send(METADATA, b"s-g", started("s-g", visibility="private", account_age_days=1))
    # 0.6: only the shadow policy's lowered grooming threshold holds
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-g", signal("s-g", "grooming_text", 0.6))
    records = await pipeline.read(until=lambda r: r.on(SHADOW_DECISIONS), topics=ALL, settle_s=2.0)
    shadow = records.on(SHADOW_DECISIONS)
    assert {d["policy_version"] for d in shadow} == {"candidate-7"} and all(d["shadow"] for d in shadow)
    assert ("escalate", "P1") in kinds(shadow)
    for record in shadow:
        jsonschema.validate(record, pipeline.contract[SHADOW_DECISIONS].schema)
    assert records.on(ACTIONS) == [] and records.on(ESCALATIONS) == []
    await retire_shadow(pipeline.settings, "candidate")
    await wait_for_metric(worker, "streamsafe_policy_info", lambda v: v == 0, role="shadow")
    await pipeline.send(METADATA, b"s-h", started("s-h", visibility="private", account_age_days=1))
    await pipeline.send(CLASSIFIER_SIGNALS, b"s-h", signal("s-h", "grooming_text", 0.6))
    await wait_for_metric(worker, "streamsafe_input_messages_total", lambda v: v >= 2, topic=CLASSIFIER_SIGNALS,
                          outcome="accepted")  # s-h's signal handled: a shadow decision would be on its way
    later = await pipeline.read(until=lambda r: False, topics=ALL, timeout_s=3)
    assert [d for d in later.on(SHADOW_DECISIONS) if d["stream_id"] == "s-h"] == []


