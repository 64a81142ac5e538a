"""Accounts across streams through a real broker and real ``streamsafe worker`` processes:
account signals cross from the worker that holds a stream to the one that holds the
account (two workers), the account table survives a restart through its changelog, and
state past the policy's retention no longer counts."""

from __future__ import annotations

import time

import orjson
import pytest
import yaml
from lxml import etree

from streamsafe.clients import default_partition
from streamsafe.events.contract import (
    ACCOUNT_SIGNALS,
    ACTIONS,
    CLASSIFIER_SIGNALS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    METADATA,
    PRESERVATION,
    REPORTS,
    REVIEW_VERDICTS,
)
from streamsafe.policy.loader import default_policy_text
from tests.integration.conftest import KNOWN_MD5
from tests.integration.test_cybertip_export import EXAMPLE_PROFILE, export
from tests.integration.waits import processed
from tests.ncmec import XSD, assert_valid

pytestmark = pytest.mark.integration

REPEAT = "repeat-broadcaster"
GROOMING = "viewer-grooming-across-streams"
YOUNG = {"age_verified": False, "account_age_days": 20, "visibility": "public"}
ADULT = {"age_verified": True, "account_age_days": 900, "visibility": "public"}


def now_ms() -> int:
    return int(time.time() * 1000)


def stream_on(partition: int, prefix: str, partitions: int = 8) -> str:
    """A stream id whose records Kafka's default partitioner (murmur2) puts on ``partition``."""
    return next(s for i in range(10_000) if default_partition((s := f"{prefix}-{i}").encode(), partitions) == partition)


def started(stream: str, broadcaster: str, ts: int | None = None, **context: object) -> dict:
    return {"schema_version": 1, "stream_id": stream, "event": "stream.started", "ts_ms": ts or now_ms(),
            "broadcaster_id": broadcaster, **context}


def known_frame(stream: str, ts: int | None = None) -> dict:
    return {"schema_version": 1, "stream_id": stream, "frames": [{"seq": 1, "ts_ms": ts or now_ms(), "md5": KNOWN_MD5}]}


def grooming(stream: str, viewer: str) -> dict:
    return {"schema_version": 2, "stream_id": stream, "classifier": "grooming_text", "model_version": "gt-1",
            "score": 0.93, "ts_ms": now_ms(), "evidence": {"chat_message_id": f"m-{stream}"},
            "actor_account_id": viewer}


def assert_no_account_in_logs(workers, accounts: set[str]) -> None:
    """Account ids are personal data: none in any worker log line above debug."""
    lines = [orjson.loads(line) for w in workers for line in w.log().splitlines() if line.startswith("{")]
    above_debug = [line["message"] for line in lines if line.get("level") != "debug"]
    assert above_debug
    leaks = {(a, m) for m in above_debug for a in accounts if a in m}
    assert not leaks, sorted(leaks)[:5]


def by_rule(records, rule: str) -> set[tuple[str, str, str | None, str | None]]:
    """Distinct (decision id, stream, action, subject) of a rule: a rebalance may re-send one."""
    return {(d["decision_id"], d["stream_id"], d["action"], (d.get("subject") or {}).get("type"))
            for topic in (ACTIONS, ESCALATIONS) for d in records.on(topic) if d.get("rule") == rule}


async def test_a_blocked_broadcasters_next_stream_on_another_workers_partition_is_restricted_at_start(
        pipeline, hash_list):
    workers = [pipeline.start_worker(hash_list, STREAMSAFE_LOG_LEVEL="info"),
               pipeline.start_worker(hash_list, STREAMSAFE_LOG_LEVEL="info")]
    for worker in workers:
        worker.wait_ready()
    # broadcaster i is blocked on partition i and starts again on partition i+1: a chain through
    # every partition, so however the two workers split them, some pair crosses from one to the other
    pairs = {f"acct-rb-{i}": (stream_on(i, f"first{i}"), stream_on(i + 1, f"second{i}")) for i in range(7)}
    # frames and metadata are read independently: for the odd broadcasters the block is decided
    # before the record naming them is read (the even ones' order is left to the race)
    late = {first for i, (first, _) in enumerate(pairs.values()) if i % 2}
    for broadcaster, (first, _) in pairs.items():
        if first not in late:
            await pipeline.send(METADATA, first.encode(), started(first, broadcaster, **ADULT))
        await pipeline.send(FRAME_HASHES, first.encode(), known_frame(first))
    await pipeline.read(until=lambda r: len({d["stream_id"] for d in r.on(ACTIONS) if d["action"] == "block"}) == 7,
                        topics=(ACTIONS,), timeout_s=90)
    for broadcaster, (first, _) in pairs.items():
        if first in late:
            await pipeline.send(METADATA, first.encode(), started(first, broadcaster, **ADULT))
    for broadcaster, (_, second) in pairs.items():
        await pipeline.send(METADATA, second.encode(), started(second, broadcaster, **ADULT))
    seconds = {second for _, second in pairs.values()}

    def done(records) -> bool:
        return {(s, a) for _, s, a, _ in by_rule(records, REPEAT)} >= {(s, a) for s in seconds
                                                                       for a in ("restrict", "escalate")}

    records = await pipeline.read(until=done, timeout_s=90, settle_s=2.0)
    decided = by_rule(records, REPEAT)
    assert sorted((s, a) for _, s, a, _ in decided) == sorted((s, a) for s in seconds for a in ("escalate", "restrict"))
    escalations = [d for d in records.on(ESCALATIONS) if d.get("rule") == REPEAT]
    assert {d["priority"] for d in escalations} == {"P0"}  # the prior block was a known-abuse match
    assert all("authority-hash-strong" in d["reasons"][0] and d["schema_version"] == 2 for d in escalations)
    assert not any(s in {first for first, _ in pairs.values()} for _, s, _, _ in decided)
    assert all(w.alive for w in workers)
    assert_no_account_in_logs(workers, set(pairs))


async def test_a_viewer_grooming_three_young_broadcasters_across_workers_gets_one_account_decision(pipeline):
    workers = [pipeline.start_worker(STREAMSAFE_LOG_LEVEL="info"), pipeline.start_worker(STREAMSAFE_LOG_LEVEL="info")]
    for worker in workers:
        worker.wait_ready()
    # viewer k in streams on partitions k, k+1, k+2 (some viewer's streams are on both workers);
    # look-alikes: a viewer in two young broadcasters' streams, one in three adults' public streams
    young = {f"acct-viewer-{k}": [stream_on(k + j, f"y{k}-{j}") for j in range(3)] for k in range(6)}
    look_alikes = {"acct-viewer-two": [stream_on(j, f"two-{j}") for j in range(2)],
                   "acct-viewer-adults": [stream_on(j * 3, f"adult-{j}") for j in range(3)]}
    for viewer, streams in (*young.items(), *look_alikes.items()):
        for stream in streams:
            context = ADULT if viewer == "acct-viewer-adults" else YOUNG
            await pipeline.send(METADATA, stream.encode(), started(stream, f"acct-bc-{stream}", **context))
    await processed(pipeline, METADATA)  # the streams' context is known before the chat arrives
    for viewer, streams in (*young.items(), *look_alikes.items()):
        for stream in streams:
            await pipeline.send(CLASSIFIER_SIGNALS, stream.encode(), grooming(stream, viewer))

    def account_decisions(records) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {}
        for topic in (ACTIONS, ESCALATIONS):
            for d in records.on(topic):
                if (d.get("subject") or {}).get("type") == "account":
                    out.setdefault(d["subject"]["id"], set()).add((d["decision_id"], d["action"]))
        return out

    targets = {s for streams in young.values() for s in streams}

    def done(records) -> bool:
        escalated = {d["stream_id"] for d in records.on(ESCALATIONS) if d.get("rule") == GROOMING}
        return set(account_decisions(records)) >= set(young) and escalated >= targets

    await processed(pipeline, CLASSIFIER_SIGNALS)  # every chat handled, the look-alikes' too,
    await processed(pipeline, ACCOUNT_SIGNALS)  # and every account signal it made
    records = await pipeline.read(until=done, timeout_s=90, settle_s=3.0)
    decided = account_decisions(records)
    assert set(decided) == set(young)  # none for the look-alikes
    for viewer in young:  # one account decision per action, whatever a rebalance re-sent
        assert sorted(a for _, a in decided[viewer]) == ["escalate", "restrict"], viewer
    escalation = next(d for d in records.on(ESCALATIONS) if d.get("subject", {}).get("id") == "acct-viewer-0")
    assert sorted(escalation["streams"]) == sorted(young["acct-viewer-0"]) and escalation["priority"] == "P1"
    per_stream = {d["stream_id"] for d in records.on(ESCALATIONS)
                  if d.get("rule") == GROOMING and d["subject"]["type"] == "stream"}
    assert per_stream == targets
    await processed(pipeline, ACCOUNT_SIGNALS)
    assert all(w.alive for w in workers)
    assert_no_account_in_logs(workers, {*young, *look_alikes} | {f"acct-bc-{s}" for s in per_stream})


async def test_a_confirmed_verdict_on_a_viewers_account_escalation_reports_the_viewer_with_the_streams(
        pipeline, tmp_path):
    workers = [pipeline.start_worker(STREAMSAFE_LOG_LEVEL="info"), pipeline.start_worker(STREAMSAFE_LOG_LEVEL="info")]
    for worker in workers:
        worker.wait_ready()
    viewer = "acct-viewer-reported"
    streams = [stream_on(p, f"target-{p}") for p in (0, 3, 6)]  # on both workers, however they split
    for stream in streams:
        await pipeline.send(METADATA, stream.encode(), started(stream, f"acct-bc-{stream}", **YOUNG))
    await processed(pipeline, METADATA)
    for stream in streams:
        await pipeline.send(CLASSIFIER_SIGNALS, stream.encode(), grooming(stream, viewer))

    def account_escalation(records) -> dict | None:
        return next((d for d in records.on(ESCALATIONS) if d.get("subject") == {"type": "account", "id": viewer}),
                    None)

    def joined(records) -> bool:  # the account's escalation, and its stream's worker has taken the finding
        account = account_escalation(records)
        return account is not None and any(
            d["stream_id"] == account["stream_id"] and d.get("subject", {}).get("type") == "stream"
            and d.get("rule") == GROOMING for d in records.on(ESCALATIONS))

    escalation = account_escalation(await pipeline.read(until=joined, timeout_s=90))
    assert escalation is not None and sorted(escalation["streams"]) == sorted(streams)
    await pipeline.send(REVIEW_VERDICTS, escalation["stream_id"].encode(), {
        "schema_version": 1, "stream_id": escalation["stream_id"], "escalation_id": escalation["decision_id"],
        "verdict": "confirmed", "category": "grooming", "reviewer_id": "rev-1", "ts_ms": now_ms()})

    def reported(records) -> bool:
        return (any(p["reported_account"].get("account_id") == viewer for p in records.on(REPORTS))
                and any(r.get("account_id") == viewer for r in records.on(PRESERVATION)))

    records = await pipeline.read(until=reported, topics=(REPORTS, PRESERVATION, ACTIONS, DEAD_LETTER), timeout_s=60,
                                  settle_s=2.0)
    (packet,) = {p["report_id"]: p for p in records.on(REPORTS)}.values()  # one report: the viewer's
    assert packet["reported_account"] == {"broadcaster_id": None, "account_id": viewer, "role": "viewer"}
    assert sorted(s["stream_id"] for s in packet["streams_involved"]) == sorted(streams)
    assert escalation["decision_id"] in {d["decision_id"] for d in packet["decisions"]}
    (preservation,) = {r["preservation_id"]: r for r in records.on(PRESERVATION)}.values()
    assert preservation["report_id"] == packet["report_id"] and sorted(preservation["streams"]) == sorted(streams)
    assert not [d for d in records.on(ACTIONS) if d["action"] == "block"]  # the targets are the likely victims
    assert not [d for d in records.on(DEAD_LETTER) if d.get("reason") == "no_open_escalation"]

    out = tmp_path / "cybertip"
    result = export(pipeline, EXAMPLE_PROFILE, out)
    assert result.returncode == 0, result.stderr
    document = out / f"{packet['report_id']}.xml"
    user = etree.parse(str(document)).getroot().find("personOrUserReported")
    assert user.findtext("espIdentifier") == viewer
    assert all(s in user.findtext("additionalInfo") for s in streams)
    assert all(w.alive for w in workers)
    assert_no_account_in_logs(workers, {viewer} | {f"acct-bc-{s}" for s in streams})
    if XSD is None:
        pytest.skip("exported and checked, but NCMEC's schema (../shared/data/ncmec/cyber_tipline.xsd) is absent: "
                    "not validated")
    assert_valid(document)


def policy_file(tmp_path, retention: str):
    document = yaml.safe_load(default_policy_text())
    document["accounts"].update(retention=retention, repeat_broadcaster={"window": retention},
                                viewer_grooming={"window": retention})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_account_state_survives_a_restart_and_expires_after_the_policys_retention(
        pipeline, hash_list, requires_table_recovery, tmp_path):
    env = {"STREAMSAFE_POLICY_FILE": str(policy_file(tmp_path, "10m"))}
    worker = pipeline.start_worker(hash_list, **env)
    worker.wait_ready()
    recent, old = "st-recent-1", "st-old-1"
    await pipeline.send(METADATA, recent.encode(), started(recent, "b-recent", **ADULT))
    await pipeline.send(FRAME_HASHES, recent.encode(), known_frame(recent))
    # blocked 30 minutes ago by event time: past the 10-minute retention when its broadcaster returns
    await pipeline.send(METADATA, old.encode(), started(old, "b-old", now_ms() - 1_900_000, **ADULT))
    await pipeline.send(FRAME_HASHES, old.encode(), known_frame(old, now_ms() - 1_800_000))
    await pipeline.read(until=lambda r: len([d for d in r.on(ACTIONS) if d["action"] == "block"]) == 2,
                        topics=(ACTIONS,), timeout_s=60)
    await processed(pipeline, ACCOUNT_SIGNALS)
    assert worker.stop() == 0
    # a fresh worker on the memory store knows the account only through the table's changelog
    restarted = pipeline.start_worker(hash_list, **env)
    restarted.wait_ready()
    for stream, broadcaster in (("st-recent-2", "b-recent"), ("st-old-2", "b-old")):
        await pipeline.send(METADATA, stream.encode(), started(stream, broadcaster, **ADULT))
    await processed(pipeline, METADATA)  # both returns handled (the old one's too) before looking
    await processed(pipeline, ACCOUNT_SIGNALS)
    records = await pipeline.read(until=lambda r: len(by_rule(r, REPEAT)) >= 2, timeout_s=90, settle_s=3.0)
    assert sorted((s, a) for _, s, a, _ in by_rule(records, REPEAT)) == [("st-recent-2", "escalate"),
                                                                         ("st-recent-2", "restrict")]
    assert restarted.alive
