"""Hash banks through the real broker: live updates, PDQ matching, allow banks, corrupt entries,
and the bank import/stats commands."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time

import pytest

from streamsafe.control.bank_publish import publish_entries, remove_entries
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, FRAME_HASHES, HASHBANK_ENTRIES
from streamsafe.events.models import BankEntry
from tests.integration.waits import wait_for_metric
from tests.signing_support import encoded

pytestmark = pytest.mark.integration

RNG = random.Random(42)
CASE = f"{RNG.getrandbits(256):064x}"
OVERLAY = f"{RNG.getrandbits(256):064x}"


def flip(hex_hash: str, n: int, offset: int = 0) -> str:
    value = int(hex_hash, 16)
    for b in range(offset, offset + n):
        value ^= 1 << (255 - b)
    return f"{value:064x}"


def frame_msg(stream: str, seq: int, pdq: str, quality: int = 90, **extra) -> dict:
    return {"schema_version": 1, "stream_id": stream, "frames": [
        {"seq": seq, "ts_ms": int(time.time() * 1000), "pdq": pdq, "pdq_quality": quality, **extra}]}


def for_stream(records, stream, topic):
    return [r for r in records.on(topic) if r["stream_id"] == stream]


async def bank_changed(worker, since: float) -> None:
    """Until ``worker`` has applied a bank change made at or after ``since`` (epoch seconds; the
    change's own time is in whole milliseconds)."""
    await wait_for_metric(worker, "streamsafe_bank_last_update_timestamp_seconds", lambda v: v >= since - 0.001)


async def test_bank_additions_and_removals_take_effect_without_a_restart(pipeline):
    # frames and bank entries are separate topics, read in no fixed order: each step waits for
    # what it depends on (how fast a change takes effect is bench/, not a test's business)
    worker = pipeline.start_worker()
    worker.wait_ready()
    await pipeline.send(FRAME_HASHES, b"s-before", frame_msg("s-before", 1, CASE))
    await wait_for_metric(worker, "streamsafe_input_messages_total", lambda v: v >= 1, topic=FRAME_HASHES,
                          outcome="accepted")  # screened (counted after matching) before the entry exists
    since = time.time()
    await publish_entries(pipeline.settings, [BankEntry("ncmec:case-1", "ncmec", "pdq", CASE)])
    await bank_changed(worker, since)
    await pipeline.send(FRAME_HASHES, b"s-added", frame_msg("s-added", 1, flip(CASE, 4)))
    records = await pipeline.read(until=lambda r: for_stream(r, "s-added", ACTIONS))
    added = for_stream(records, "s-added", ACTIONS)
    assert [r["action"] for r in added][:1] == ["block"], f"no block after the bank update: {records.items}"
    block = added[0]
    assert block["evidence"][0] | {"ts_ms": 0} == {"kind": "hash_match", "ts_ms": 0, "signal_type": "pdq",
                                                   "bank": "ncmec", "entry_id": "ncmec:case-1",
                                                   "distance": 4, "frame_seq": 1}
    assert for_stream(records, "s-before", ACTIONS) == []  # sent before the entry existed

    since = time.time()
    await remove_entries(pipeline.settings, ["ncmec:case-1"])
    await bank_changed(worker, since)
    await pipeline.send(FRAME_HASHES, b"s-removed", frame_msg("s-removed", 1, CASE))
    await pipeline.send(FRAME_HASHES, b"s-probe", frame_msg("s-probe", 1, CASE, md5="0" * 32))
    await wait_for_metric(worker, "streamsafe_input_messages_total", lambda v: v >= 4, topic=FRAME_HASHES,
                          outcome="accepted")
    since = time.time()
    await publish_entries(pipeline.settings, [BankEntry("probe:1", "ncmec", "md5", "1" * 32)])
    await bank_changed(worker, since)
    await pipeline.send(FRAME_HASHES, b"s-probe2", frame_msg("s-probe2", 1, OVERLAY, md5="1" * 32))
    later = await pipeline.read(until=lambda r: for_stream(r, "s-probe2", ACTIONS), settle_s=1.0)
    assert for_stream(later, "s-removed", ACTIONS) == [] and for_stream(later, "s-probe", ACTIONS) == []
    assert worker.alive


async def test_pdq_strong_weak_allow_and_quality(pipeline):
    await publish_entries(pipeline.settings, [
        BankEntry("ncmec:case-1", "ncmec", "pdq", CASE),
        BankEntry("allow:overlay", "platform-allow", "pdq", OVERLAY),
        BankEntry("ncmec:overlay-lookalike", "ncmec", "pdq", flip(OVERLAY, 20)),  # weak: the allow match clears it
    ])
    worker = pipeline.start_worker()
    # weak (distance 27) matches on three frames -> escalate P0 and restrict
    for seq in range(3):
        await pipeline.send(FRAME_HASHES, b"s-weak", frame_msg("s-weak", seq, flip(CASE, 27, offset=seq)))
    # a frame that also matches the allow bank is cleared
    await pipeline.send(FRAME_HASHES, b"s-overlay", frame_msg("s-overlay", 1, OVERLAY))
    # low-quality frames are not matched, however close
    await pipeline.send(FRAME_HASHES, b"s-lowq", frame_msg("s-lowq", 1, CASE, quality=30))
    # strong distance in an authority bank -> block + report
    await pipeline.send(FRAME_HASHES, b"s-strong", frame_msg("s-strong", 1, flip(CASE, 9)))
    worker.wait_ready()
    records = await pipeline.read(
        until=lambda r: for_stream(r, "s-weak", ESCALATIONS) and for_stream(r, "s-strong", ACTIONS),
        settle_s=2.0)
    weak = for_stream(records, "s-weak", ESCALATIONS)
    assert [(e["priority"], e["rule"]) for e in weak] == [("P0", "weak-hash-repeated")]
    assert sorted(e["frame_seq"] for e in weak[0]["evidence"]) == [0, 1, 2]
    assert {e["distance"] for e in weak[0]["evidence"]} == {27}
    restrictions = [r["restrictions"] for r in for_stream(records, "s-weak", ACTIONS)]
    assert restrictions == [["chat", "discovery", "gifting"]]
    assert [r["action"] for r in for_stream(records, "s-weak", ACTIONS)] == ["restrict"]  # weak: no block
    strong = sorted(r["action"] for r in for_stream(records, "s-strong", ACTIONS))
    assert strong == ["block", "report"]
    for quiet in ("s-overlay", "s-lowq"):
        assert for_stream(records, quiet, ACTIONS) == [] and for_stream(records, quiet, ESCALATIONS) == []


async def test_corrupt_entries_are_dead_lettered_and_the_rest_load(pipeline):
    producer = await pipeline.producer()
    topic = pipeline.topic(HASHBANK_ENTRIES)
    good = {"schema_version": 1, "bank": "ncmec", "signal_type": "pdq", "hash": CASE}
    for key, value in [(b"bad:short", {**good, "hash": CASE[:40]}), (b"bad:nonhex", {**good, "hash": "z" * 64}),
                       (b"bad:type", {**good, "signal_type": "tmk"}), (b"ncmec:good", good)]:
        await producer.send_and_wait(topic, encoded(HASHBANK_ENTRIES, key, value), key=key)  # signed, yet corrupt
    worker = pipeline.start_worker()
    await pipeline.send(FRAME_HASHES, b"s-1", frame_msg("s-1", 1, CASE))
    worker.wait_ready()
    records = await pipeline.read(until=lambda r: len(r.on(DEAD_LETTER)) >= 3 and r.on(ACTIONS))
    dead = records.on(DEAD_LETTER)
    assert sorted(d["source"]["topic"] for d in dead) == [topic] * 3
    assert {d["reason"] for d in dead} == {"schema_violation"}
    assert {d["original_key_b64"] for d in dead} == {"YmFkOnNob3J0", "YmFkOm5vbmhleA==", "YmFkOnR5cGU="}
    assert [r["action"] for r in for_stream(records, "s-1", ACTIONS) if r["action"] == "block"] == ["block"]


def test_bank_import_and_stats_commands(pipeline, tmp_path):
    listing = tmp_path / "ncmec-export.pdq"
    listing.write_text(f"{CASE},100\n{OVERLAY} 80\nnot-a-hash\n{flip(CASE, 3)}\n")
    env_broker = ["--broker", pipeline.settings.broker_url, "--topic-prefix", pipeline.settings.topic_prefix]
    signed = ["--signing-key", str(pipeline.keys["control_key"])]
    imported = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "import", str(listing),
                               "--bank", "ncmec", *env_broker, *signed], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert "published 3 entries to bank 'ncmec'; 0 already there unchanged; 1 bad lines skipped" in imported.stdout
    assert "line 3" in imported.stderr
    stats = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "stats", *env_broker],
                           capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert "ncmec" in stats.stdout and "3 entries in 1 banks" in stats.stdout


async def wait_for_freshness(worker, expected: float) -> float:
    """Until the worker's bank age gauge reads ``expected`` (epoch seconds, to the millisecond)."""
    return await wait_for_metric(worker, "streamsafe_bank_last_update_timestamp_seconds",
                                 lambda v: abs(v - expected) < 0.001)


async def test_bank_age_is_the_entries_own_time_through_a_re_import_and_a_restart(pipeline, tmp_path):
    listing = tmp_path / "ncmec-export.pdq"
    listing.write_text(f"{CASE},100\n{OVERLAY} 80\n")
    env_broker = ["--broker", pipeline.settings.broker_url, "--topic-prefix", pipeline.settings.topic_prefix]
    signed = ["--signing-key", str(pipeline.keys["control_key"])]

    def bank_import() -> str:
        done = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "import", str(listing),
                               "--bank", "ncmec", *env_broker, *signed], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = time.time()
    assert "published 2 entries to bank 'ncmec'; 0 already there unchanged" in bank_import()
    records = await pipeline.read(until=lambda r: len(r.on(HASHBANK_ENTRIES)) >= 2, topics=(HASHBANK_ENTRIES,))
    added = max(d["added_ms"] for d in records.on(HASHBANK_ENTRIES)) / 1000
    assert added >= before - 1
    worker = pipeline.start_worker()
    worker.wait_ready()
    await wait_for_freshness(worker, added)
    await asyncio.sleep(1.1)  # a re-import's own time would differ from the first one's
    assert "published 0 entries to bank 'ncmec'; 2 already there unchanged" in bank_import()
    worker.stop()
    restarted = pipeline.start_worker()
    restarted.wait_ready()
    assert await wait_for_freshness(restarted, added) == pytest.approx(added)  # not the restart's time
    listing.write_text(f"{CASE},100\n{OVERLAY} 80\n{flip(CASE, 40)} 90\n")  # one new entry: the bank changed
    assert "published 1 entries to bank 'ncmec'; 2 already there unchanged" in bank_import()
    records = await pipeline.read(until=lambda r: len(r.on(HASHBANK_ENTRIES)) >= 3, topics=(HASHBANK_ENTRIES,))
    newest = max(d["added_ms"] for d in records.on(HASHBANK_ENTRIES)) / 1000
    assert newest > added
    await wait_for_freshness(restarted, newest)


async def test_an_allow_entry_does_not_silence_known_abuse_unless_the_policy_says_so(pipeline):
    from streamsafe.control.publish import publish_policy
    from streamsafe.policy.loader import default_policy_text, load_policy

    known = "9e107d9d372bb6826bd81d3542a419d6"
    await publish_entries(pipeline.settings, [
        BankEntry("ncmec:known", "ncmec", "md5", known),
        BankEntry("allow:known", "platform-allow", "md5", known),  # the same picture, also in an allow bank
    ])
    worker = pipeline.start_worker()
    worker.wait_ready()
    await pipeline.send(FRAME_HASHES, b"s-known", {"schema_version": 1, "stream_id": "s-known", "frames": [
        {"seq": 1, "ts_ms": int(time.time() * 1000), "md5": known}]})
    records = await pipeline.read(until=lambda r: for_stream(r, "s-known", ACTIONS), settle_s=1.0)
    assert sorted(d["action"] for d in for_stream(records, "s-known", ACTIONS)) == ["block", "report"]
    overruled = await wait_for_metric(worker, "streamsafe_allow_bank_effects_total", lambda v: v >= 1,
                                      effect="overruled")
    assert overruled == 1
    assert "the authority match stands" in worker.log()

    trusting = default_policy_text().replace("allow_clears_authority: []", "allow_clears_authority: [platform-allow]")
    trusting = trusting.replace('version: "', 'version: "allow-trusted-', 1)
    await publish_policy(pipeline.settings, trusting)
    await wait_for_metric(worker, "streamsafe_policy_info", lambda v: v == 1, role="live",
                          version=f"allow-trusted-{load_policy().version}")
    await pipeline.send(FRAME_HASHES, b"s-trusted", {"schema_version": 1, "stream_id": "s-trusted", "frames": [
        {"seq": 1, "ts_ms": int(time.time() * 1000), "md5": known}]})
    cleared = await wait_for_metric(worker, "streamsafe_allow_bank_effects_total", lambda v: v >= 1,
                                    effect="cleared")
    assert cleared == 1
    later = await pipeline.read(until=lambda r: False, timeout_s=3)
    assert for_stream(later, "s-trusted", ACTIONS) == [] and for_stream(later, "s-trusted", ESCALATIONS) == []
