"""Signed control records through Apache Kafka and real workers: what kcat writes unsigned is
refused and changes nothing; a key rotated in applies, a removed key does not; forged,
unsigned and unopened verdicts block, report and bank nothing; ``streamsafe audit`` lists every
change in order with its key id, and ``streamsafe policy rollback`` is one command."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import aiohttp
import orjson
import pytest
import yaml

from streamsafe.control.bank_publish import publish_entries
from streamsafe.control.publish import publish_policy
from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.contract import (
    ACTIONS,
    DEAD_LETTER,
    ESCALATIONS,
    FRAME_HASHES,
    HASHBANK_ENTRIES,
    POLICY,
    REPORTS,
    REVIEW_VERDICTS,
)
from streamsafe.events.models import BankEntry
from streamsafe.policy.loader import default_policy_text
from tests.integration.conftest import KNOWN_MD5
from tests.integration.test_review import bank_list, weak_frames  # noqa: F401  (bank_list is a fixture)
from tests.signing_support import CONTROL_KEY, REVIEW_KEY, new_key, write_public

pytestmark = pytest.mark.integration

UNSIGNED_MD5, ROTATED_MD5, REMOVED_MD5 = "1" * 32, "2" * 32, "3" * 32
#: the worker's ncmec MD5 bank: the hash list's KNOWN_MD5 and the rotated key's entry
NCMEC_MD5_TWO = 'streamsafe_bank_entries{bank="ncmec",signal_type="md5"} 2.0'
DEFAULT_VERSION = yaml.safe_load(default_policy_text())["version"]


def now_ms() -> int:
    return int(time.time() * 1000)


def kcat(pipeline, topic: str, key: bytes, value: bytes) -> None:
    """Produce one record as the README's produce() helper does (murmur2, acks=all): unsigned."""
    if shutil.which("kcat") is None:
        if os.environ.get("CI"):
            raise AssertionError("CI requires kcat")
        pytest.skip("kcat not installed (apt-get install kcat; CI installs it and requires it)")
    done = subprocess.run(["kcat", "-P", "-b", pipeline.settings.bootstrap_servers, "-t", pipeline.topic(topic),
                           "-K", "|", "-X", "partitioner=murmur2_random", "-X", "acks=all"],
                          input=key + b"|" + value + b"\n", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def frame(stream: str, md5: str) -> dict:
    return {"schema_version": 1, "stream_id": stream, "frames": [{"seq": 1, "ts_ms": now_ms(), "md5": md5}]}


def blocked(records, stream: str) -> bool:
    return any(r["stream_id"] == stream and r["action"] == "block" for r in records.on(ACTIONS))


def refused(records, topic: str, reason: str = "bad_signature") -> list[dict]:
    return [d for d in records.on(DEAD_LETTER) if d["reason"] == reason and d["source"]["topic"].endswith(topic)]


async def metrics(worker) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{worker.http_port}/metrics") as r:
        return await r.text()


async def shows(worker, *lines: str, timeout_s: float = 30.0) -> None:
    """Wait until the worker's /metrics holds every line (gauges are refreshed on a timer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = await metrics(worker)
        missing = [line for line in lines if line not in text]
        if not missing:
            return
        assert time.monotonic() < deadline, f"not in /metrics: {missing}"
        await asyncio.sleep(0.5)


def cli(pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamsafe", *args, "--broker", pipeline.settings.broker_url,
                           "--topic-prefix", pipeline.settings.topic_prefix], capture_output=True, text=True,
                          timeout=120)


async def audit_until(pipeline, done, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = await asyncio.to_thread(cli, pipeline, "audit", "--json")
        assert run.returncode == 0, run.stderr
        records = [json.loads(line) for line in run.stdout.splitlines()]
        if done(records) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1.0)


async def test_unsigned_records_are_refused_a_rotated_in_key_applies_a_removed_key_does_not(pipeline, hash_list,
                                                                                           tmp_path):
    rotated = new_key()
    pipeline.settings = pipeline.settings.replace(
        trusted_control_keys=write_public([CONTROL_KEY, rotated], tmp_path / "control-and-rotated.pem"))
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    # kcat, as anyone with write access could: an entry and a live policy that never blocks, unsigned
    entry_id = entry_id_for("ncmec", "md5", UNSIGNED_MD5)
    kcat(pipeline, HASHBANK_ENTRIES, entry_id.encode(), orjson.dumps(
        {"schema_version": 1, "bank": "ncmec", "signal_type": "md5", "hash": UNSIGNED_MD5}))
    never_blocks = yaml.safe_load(default_policy_text()) | {"version": "kcat-never-blocks", "rules": [
        {"name": "nothing", "when": {"risk": {"gte": 0.99}}, "then": ["monitor"]}]}
    kcat(pipeline, POLICY, b"live", orjson.dumps({"schema_version": 1, "published_at_ms": now_ms(),
                                                  "policy": never_blocks}))
    # the rotated-in key applies
    await publish_entries(pipeline.settings, [BankEntry(entry_id_for("ncmec", "md5", ROTATED_MD5), "ncmec", "md5",
                                                        ROTATED_MD5)], signer=rotated)
    first = await pipeline.read(until=lambda r: refused(r, HASHBANK_ENTRIES) and refused(r, POLICY))
    await shows(worker, NCMEC_MD5_TWO)  # the hash list's entry and the rotated key's: applied
    for stream, md5 in (("s-unsigned", UNSIGNED_MD5), ("s-rotated", ROTATED_MD5), ("s-known", KNOWN_MD5)):
        await pipeline.send(FRAME_HASHES, stream.encode(), frame(stream, md5))
    seen = await pipeline.read(until=lambda r: blocked(r, "s-rotated") and blocked(r, "s-known"), settle_s=2.0)
    assert not blocked(seen, "s-unsigned")  # nothing the unsigned entry said was applied
    assert blocked(seen, "s-known")  # and the policy in force still blocks
    (entry_refused,) = refused(first, HASHBANK_ENTRIES)
    assert entry_refused["detail"] == "unsigned"
    await shows(worker, f'streamsafe_policy_info{{role="live",version="{DEFAULT_VERSION}"}} 1.0',
                'streamsafe_control_refused_total{reason="bad_signature",topic="hashbank.entries"} 1.0',
                'streamsafe_control_refused_total{reason="bad_signature",topic="streamsafe.policy"} 1.0')
    worker.stop()

    # the original key is removed: what it signs from now on is refused
    pipeline.settings = pipeline.settings.replace(trusted_control_keys=write_public([rotated], tmp_path / "r.pem"))
    worker = pipeline.start_worker(hash_list)
    worker.wait_ready()
    await publish_entries(pipeline.settings, [BankEntry(entry_id_for("ncmec", "md5", REMOVED_MD5), "ncmec", "md5",
                                                        REMOVED_MD5)], signer=CONTROL_KEY)
    await pipeline.read(until=lambda r: any("is not trusted" in d["detail"] for d in refused(r, HASHBANK_ENTRIES)))
    await shows(worker, NCMEC_MD5_TWO)  # the rotated key's entry re-read; not the removed key's
    for stream, md5 in (("s-removed", REMOVED_MD5), ("s-rotated-2", ROTATED_MD5)):
        await pipeline.send(FRAME_HASHES, stream.encode(), frame(stream, md5))
    later = await pipeline.read(until=lambda r: blocked(r, "s-rotated-2"), settle_s=2.0)
    assert not blocked(later, "s-removed") and not blocked(later, "s-unsigned")

    # the audit trail: every change, in order, with the key that signed it (or claimed to)
    def complete(trail: list[dict]) -> bool:
        return len([a for a in trail if a["topic"] in (HASHBANK_ENTRIES, POLICY)]) >= 4
    trail = [(a["topic"], a["outcome"], a.get("reason"), a["key_id"])
             for a in await audit_until(pipeline, complete) if a["topic"] in (HASHBANK_ENTRIES, POLICY)]
    assert trail == [(HASHBANK_ENTRIES, "refused", "bad_signature", None),
                     (POLICY, "refused", "bad_signature", None),
                     (HASHBANK_ENTRIES, "applied", None, rotated.key_id),
                     (HASHBANK_ENTRIES, "refused", "bad_signature", CONTROL_KEY.key_id)]
    people = cli(pipeline, "audit")
    assert people.returncode == 0 and "unsigned" in people.stdout and rotated.key_id in people.stdout
    assert UNSIGNED_MD5 not in people.stdout + json.dumps(trail)  # the trail names entries, never hashes


async def test_a_policy_rollback_is_one_command_and_the_audit_shows_each_version(pipeline):
    worker = pipeline.start_worker()
    worker.wait_ready()
    for version in ("ops-v1", "ops-v2"):
        await publish_policy(pipeline.settings, default_policy_text().replace(DEFAULT_VERSION, version))

    async def live_is(version: str) -> None:
        await shows(worker, f'streamsafe_policy_info{{role="live",version="{version}"}} 1.0', timeout_s=60)

    await live_is("ops-v2")
    await audit_until(pipeline, lambda t: len([a for a in t if a["change"] == "policy_published"]) >= 2)
    rolled = await asyncio.to_thread(cli, pipeline, "policy", "rollback", "--signing-key",
                                     str(pipeline.keys["control_key"]))
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back live policy ops-v2 -> ops-v1" in rolled.stdout
    await live_is("ops-v1")
    trail = await audit_until(pipeline, lambda t: len([a for a in t if a["change"] == "policy_published"]) >= 3)
    assert [(a.get("previous_version"), a["new_version"], a["key_id"])
            for a in trail if a["change"] == "policy_published"] == [
        (None, "ops-v1", CONTROL_KEY.key_id), ("ops-v1", "ops-v2", CONTROL_KEY.key_id),
        ("ops-v2", "ops-v1", CONTROL_KEY.key_id)]


async def test_unsigned_forged_or_unopened_verdicts_block_report_and_bank_nothing(pipeline, bank_list):  # noqa: F811
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    await weak_frames(pipeline, "s-open")
    first = await pipeline.read(until=lambda r: [e for e in r.on(ESCALATIONS) if e["stream_id"] == "s-open"],
                                topics=(ESCALATIONS,))
    (escalation,) = [e for e in first.on(ESCALATIONS) if e["stream_id"] == "s-open"]

    def verdict(stream: str, escalation_id: str | None = escalation["decision_id"]) -> dict:
        value = {"schema_version": 1, "stream_id": stream, "verdict": "confirmed", "category": "A1",
                 "reviewer_id": "nobody", "ts_ms": now_ms()}
        return value | ({"escalation_id": escalation_id} if escalation_id else {})

    def signed(key, stream: str, value: dict) -> bytes:
        return key.sign_bytes(REVIEW_VERDICTS, stream.encode(), value)

    tampered = orjson.loads(signed(REVIEW_KEY, "s-open", verdict("s-open")))
    tampered["reviewer_id"] = "somebody-else"
    attempts = [
        ("s-open", orjson.dumps(verdict("s-open")), "bad_signature"),  # unsigned
        ("s-open", signed(new_key(), "s-open", verdict("s-open")), "bad_signature"),  # a key nobody trusts
        ("s-open", signed(CONTROL_KEY, "s-open", verdict("s-open")), "bad_signature"),  # a bank admin's
        ("s-open", orjson.dumps(tampered), "bad_signature"),  # signed, then changed
        ("s-open", signed(REVIEW_KEY, "s-open", verdict("s-open", None)), "no_open_escalation"),  # the stream at large
        ("s-other", signed(REVIEW_KEY, "s-other", verdict("s-other")), "no_open_escalation"),  # another stream's
    ]
    for stream, value, _ in attempts:
        await pipeline.send(REVIEW_VERDICTS, stream.encode(), value)
    topics = (ACTIONS, REPORTS, HASHBANK_ENTRIES, DEAD_LETTER)
    records = await pipeline.read(until=lambda r: len(refused(r, REVIEW_VERDICTS, "bad_signature")) >= 4
                                  and len(refused(r, REVIEW_VERDICTS, "no_open_escalation")) >= 2,
                                  topics=topics, settle_s=3.0)
    assert sorted(d["reason"] for d in records.on(DEAD_LETTER)) == sorted(reason for *_, reason in attempts)
    assert not blocked(records, "s-open") and not blocked(records, "s-other")
    assert records.on(REPORTS) == [] and records.on(HASHBANK_ENTRIES) == []  # no report, nothing banked
    await shows(worker, 'streamsafe_control_refused_total{reason="bad_signature",topic="review.verdicts"} 4.0',
                'streamsafe_control_refused_total{reason="no_open_escalation",topic="review.verdicts"} 2.0')

    # the review tool's signed verdict on the open escalation acts: block, report, a signed bank proposal
    await pipeline.send(REVIEW_VERDICTS, b"s-open", verdict("s-open"))
    acted = await pipeline.read(until=lambda r: blocked(r, "s-open") and r.on(REPORTS) and r.on(HASHBANK_ENTRIES),
                                topics=topics)
    (proposal,) = acted.on(HASHBANK_ENTRIES)
    assert proposal["bank"] == "internal-confirmed" and proposal["signature"]["key_id"] == CONTROL_KEY.key_id
    trail = await audit_until(pipeline, lambda t: len([a for a in t if a["topic"] == REVIEW_VERDICTS]) >= 7)
    verdicts = [(a["outcome"], a.get("reason"), a["key_id"]) for a in trail if a["topic"] == REVIEW_VERDICTS]
    assert verdicts[-1] == ("applied", None, REVIEW_KEY.key_id)
    assert sorted(r for _, r, _ in verdicts[:-1]) == sorted(reason for *_, reason in attempts)
