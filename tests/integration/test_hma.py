"""HMA both ways, through a real HMA 2.0 (its PostgreSQL, its API), a real broker and a real
worker: the sync's additions, deletions, disabled and re-enabled content are matchable (or
not) within 5 s; reviewer-confirmed hashes land in HMA, which then matches them; both go on
across HMA restarts; and StreamSafe's matching agrees with HMA's on a few thousand hashes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from streamsafe import clients
from streamsafe.brokers.base import free_port
from streamsafe.control.broadcast import assign_whole_topic, stop_consumer
from streamsafe.events.bank_entries import bank_entry_document, decode_bank_entry, entry_id_for
from streamsafe.events.contract import ACTIONS, ESCALATIONS, FRAME_HASHES, HASHBANK_ENTRIES, METADATA, REVIEW_VERDICTS
from streamsafe.events.models import BankEntry, Frame
from streamsafe.matching.banks import HashBanks
from tests.hma_support import Hma, hma_or_skip

pytestmark = pytest.mark.integration

RNG = random.Random(17)


def pdq() -> str:
    return f"{RNG.getrandbits(256):064x}"


def flip(hex_hash: str, n: int) -> str:
    value = int(hex_hash, 16)
    for bit in RNG.sample(range(256), n):
        value ^= 1 << bit
    return f"{value:064x}"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="session")
def hma():
    run = hma_or_skip()
    started = time.monotonic()
    out = subprocess.run(["bash", str(run), "start"], check=True, capture_output=True, text=True, timeout=900)
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    print(f"HMA started in {time.monotonic() - started:.1f} s at {env['HMA_URL']}")
    yield Hma(run, env)
    subprocess.run(["bash", str(run), "stop", env["HMA_WORKDIR"]], check=True, timeout=120)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


def broker_args(pipeline) -> list[str]:
    return ["--broker", pipeline.settings.broker_url, "--topic-prefix", pipeline.settings.topic_prefix]


def mapping_file(tmp: Path, banks: dict[str, tuple[str, str]]) -> Path:
    path = tmp / "hma-banks.yaml"
    path.write_text(yaml.safe_dump({"banks": {h: {"bank": b, "trust": t} for h, (b, t) in banks.items()}}))
    return path


def signing_env(pipeline) -> dict[str, str]:
    """The sync signs what it publishes; the write-back takes only what a trusted key signed."""
    return {**os.environ, "STREAMSAFE_SIGNING_KEY_FILE": str(pipeline.keys["control_key"]),
            "STREAMSAFE_TRUSTED_CONTROL_KEYS": str(pipeline.keys["control_trust"])}


def start(tmp: Path, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 -- the process's own log, closed with it
    return subprocess.Popen([sys.executable, "-m", "streamsafe", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def until(check, timeout_s: float, what: str, step_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(step_s)


# -- sync in ----------------------------------------------------------------------------------


async def probe(pipeline, label: str, t_change: float, keep: str, *, pdq_: str | None = None,
                md5: str | None = None, until_s: float = 6.5) -> list[tuple[float, bool]]:
    """Fresh streams, one every 0.4 s until ``until_s`` after the HMA change, each sending one
    frame; which of them the worker blocked, by seconds after the change."""
    sent: list[tuple[str, float]] = []
    while (offset := time.time() - t_change) <= until_s:
        stream = f"{label}-{len(sent)}"
        frame = {"seq": 1, "ts_ms": now_ms(), "pdq": pdq_ or pdq(), "pdq_quality": 90}
        if md5:
            frame["md5"] = md5
        await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream,
                                                             "frames": [frame]})
        sent.append((stream, offset))
        await asyncio.sleep(0.4)
    sentinel = f"{label}-sentinel"  # a hash that stays in the bank: the worker got this far
    await pipeline.send(FRAME_HASHES, sentinel.encode(), {"schema_version": 1, "stream_id": sentinel, "frames": [
        {"seq": 1, "ts_ms": now_ms(), "pdq": keep, "pdq_quality": 90}]})
    records = await pipeline.read(until=lambda r: any(a["stream_id"] == sentinel for a in r.on(ACTIONS)),
                                  topics=(ACTIONS,), timeout_s=60, settle_s=1.5)
    blocked = {a["stream_id"] for a in records.on(ACTIONS) if a["action"] == "block"}
    assert sentinel in blocked
    results = [(offset, stream in blocked) for stream, offset in sent]
    print(f"{label}: " + " ".join(f"{offset:.1f}{'B' if b else '-'}" for offset, b in results))
    return results


async def first_block(pipeline, pdq_: str) -> bool:
    stream = f"first-{uuid.uuid4().hex[:6]}"
    await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
        {"seq": 1, "ts_ms": now_ms(), "pdq": pdq_, "pdq_quality": 90}]})
    records = await pipeline.read(until=lambda r: any(a["stream_id"] == stream for a in r.on(ACTIONS)),
                                  topics=(ACTIONS,), timeout_s=3)
    return any(a["stream_id"] == stream and a["action"] == "block" for a in records.on(ACTIONS))


def matchable_within_5s(results: list[tuple[float, bool]]) -> bool:
    return any(b for off, b in results if off <= 5.0) and all(b for off, b in results if off > 5.0)


def gone_within_5s(results: list[tuple[float, bool]]) -> bool:
    late = [b for off, b in results if off > 5.0]
    return bool(late) and not any(late)


@pytest.mark.timeout(600)
async def test_sync_in_add_delete_disable_reenable_md5_across_hma_restarts(pipeline, hma, tmp_path):
    bank = unique("SYNC")
    await hma.create_bank(bank)
    keep = pdq()
    await hma.add(bank, pdq=keep)  # also keeps two PDQs in HMA (its one-hash index matches nothing)
    await hma.add(bank, pdq=pdq())
    mapping = mapping_file(tmp_path, {bank: ("ncmec", "authority")})
    worker = pipeline.start_worker()
    worker.wait_ready()
    sync = start(tmp_path, "sync", "bank", "sync", "hma", "--dsn", hma.dsn, "--mapping", str(mapping),
                 "--follow", "--interval", "0.5", "--checkpoint", str(tmp_path / "hma.checkpoint"),
                 *broker_args(pipeline), env=signing_env(pipeline))
    try:
        await until(lambda: first_block(pipeline, keep), 120, "the bank's first content on the worker", step_s=1.0)

        added = pdq()
        t = time.time()
        added_id = await hma.add(bank, pdq=added)
        assert matchable_within_5s(results := await probe(pipeline, "added", t, keep, pdq_=added)), results

        entries = await read_entries(pipeline)
        entry = entries[entry_id_for("ncmec", "pdq", added).encode()]
        assert entry["source"] == f"hma:{bank}" and abs(entry["added_ms"] - t * 1000) < 5000  # HMA's time

        t = time.time()
        await hma.ok("DELETE", f"/c/bank/{bank}/content/{added_id}")
        assert gone_within_5s(results := await probe(pipeline, "deleted", t, keep, pdq_=added)), results

        toggled = pdq()
        toggled_id = await hma.add(bank, pdq=toggled)
        await probe(pipeline, "toggled", time.time(), keep, pdq_=toggled, until_s=5.5)
        t = time.time()
        await hma.ok("PUT", f"/c/bank/{bank}/content/{toggled_id}", json={"disable_until_ts": 0})
        assert gone_within_5s(results := await probe(pipeline, "disabled", t, keep, pdq_=toggled)), results
        t = time.time()
        await hma.ok("PUT", f"/c/bank/{bank}/content/{toggled_id}", json={"disable_until_ts": 1})
        assert matchable_within_5s(results := await probe(pipeline, "enabled", t, keep, pdq_=toggled)), results

        md5 = f"{RNG.getrandbits(128):032x}"
        t = time.time()
        await hma.add(bank, video_md5=md5)
        assert matchable_within_5s(results := await probe(pipeline, "md5", t, keep, md5=md5)), results

        # HMA restarts: its app server and its PostgreSQL (the sync reads the latter)
        hma.stop_app()
        hma.restart_database()
        hma.start_app()
        after = pdq()
        t = time.time()
        await hma.add(bank, pdq=after)
        assert matchable_within_5s(results := await probe(pipeline, "after-restart", t, keep, pdq_=after)), results
        assert sync.poll() is None and worker.alive
    finally:
        stop(sync)
        print((tmp_path / "sync.log").read_text()[-3000:])


async def read_entries(pipeline) -> dict[bytes, dict]:
    consumer = clients.consumer(pipeline.settings)
    await clients.start(consumer)
    try:
        partitions = await assign_whole_topic(consumer, pipeline.topic(HASHBANK_ENTRIES))
        end = await consumer.end_offsets(partitions)
        latest: dict[bytes, dict] = {}
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    value = orjson.loads(record.value) if record.value is not None else None
                    if value is None or value.get("removed"):  # a removal is a signed record
                        latest.pop(record.key, None)
                    else:
                        latest[record.key] = value
        return latest
    finally:
        await stop_consumer(consumer)


# -- write back --------------------------------------------------------------------------------


async def confirmed_in_hma(hma: Hma, bank: str, hash_: str) -> list[dict]:
    found = []
    for content_id, distance in (await hma.raw_lookup(hash_)).items():
        content = await hma.content(bank, content_id)
        if distance == 0 and content["bank"]["name"] == bank and content["signals"]["pdq"] == hash_:
            found.append(content)
    return found


@pytest.mark.timeout(600)
async def test_reviewer_confirmed_hashes_are_written_to_hma_once_and_survive_hma_down(pipeline, hma, tmp_path):
    bank = unique("CONFIRMED")
    await hma.create_bank(bank)
    other = unique("OTHER")
    await hma.create_bank(other)
    for _ in range(2):  # HMA's PDQ index matches nothing while it holds a single hash
        await hma.add(other, pdq=pdq())
    case = pdq()
    weak = flip(case, 26)  # a partner-bank weak match: escalated for review
    listing = tmp_path / "partner-list.txt"
    listing.write_text(f"pdq:{case}\n")
    worker = pipeline.start_worker(listing)
    worker.wait_ready()
    port = free_port()
    writeback = start(tmp_path, "writeback", "hma", "writeback", "--url", hma.url, "--bank", bank,
                      "--group-id", f"hma-wb-{uuid.uuid4().hex[:6]}", "--metrics-port", str(port),
                      *broker_args(pipeline), env=signing_env(pipeline))
    try:
        stream = "s-confirm"
        await pipeline.send(METADATA, stream.encode(), {"schema_version": 1, "event": "stream.started",
                                                       "stream_id": stream, "ts_ms": now_ms(),
                                                       "broadcaster_id": "acct-1"})
        for seq in range(3):
            await pipeline.send(FRAME_HASHES, stream.encode(), {"schema_version": 1, "stream_id": stream, "frames": [
                {"seq": seq, "ts_ms": now_ms(), "pdq": weak, "pdq_quality": 95}]})
        records = await pipeline.read(until=lambda r: [e for e in r.on(ESCALATIONS) if e["stream_id"] == stream],
                                      topics=(ESCALATIONS,), timeout_s=60)
        escalation = records.on(ESCALATIONS)[0]
        await pipeline.send(REVIEW_VERDICTS, stream.encode(), {
            "schema_version": 1, "stream_id": stream, "verdict": "confirmed", "category": "A1",
            "escalation_id": escalation["decision_id"], "reviewer_id": "rev-1", "ts_ms": now_ms()})
        (content,) = await until(lambda: confirmed_in_hma(hma, bank, weak), 90, "the confirmed hash in HMA")
        assert content["note"].startswith("StreamSafe reviewer-confirmed: confirmed A1")
        lookup = await hma.ok("GET", "/m/lookup", params={"signal_type": "pdq", "signal": flip(weak, 5),
                                                           "banks": bank})
        assert [m["bank_content_id"] for m in lookup[bank]] == [content["id"]]  # HMA matches it, near copies too

        # a re-delivered entry adds nothing
        entry = BankEntry(entry_id_for("internal-confirmed", "pdq", weak), "internal-confirmed", "pdq", weak,
                          "confirmed A1 again")
        await pipeline.send(HASHBANK_ENTRIES, entry.entry_id.encode(), bank_entry_document(entry, "reviewer", now_ms()))
        await until(lambda: _async(metric(port, "streamsafe_hma_writeback_already_present_total") >= 1), 60,
                    "the re-delivery seen")
        assert len(await confirmed_in_hma(hma, bank, weak)) == 1

        # HMA down: the write-back waits (counted, pending), then lands once HMA is back
        hma.stop_app()
        later = pdq()
        entry = BankEntry(entry_id_for("internal-confirmed", "pdq", later), "internal-confirmed", "pdq", later,
                          "confirmed A2 R-2")
        await pipeline.send(HASHBANK_ENTRIES, entry.entry_id.encode(), bank_entry_document(entry, "reviewer", now_ms()))
        await until(lambda: _async(metric(port, 'streamsafe_hma_writeback_failures_total{reason="unavailable"}') >= 1
                                   and metric(port, "streamsafe_hma_writeback_pending") >= 1), 60,
                    "a failed, pending write-back while HMA is down")
        hma.start_app()
        await until(lambda: confirmed_in_hma(hma, bank, later), 90, "the write-back after HMA came back")
        await until(lambda: _async(metric(port, "streamsafe_hma_writeback_pending") == 0), 60, "nothing pending")
        assert writeback.poll() is None
    finally:
        stop(writeback)
        print((tmp_path / "writeback.log").read_text()[-2000:])


async def _async(value):
    return value


# -- parity with HMA ---------------------------------------------------------------------------


@pytest.mark.timeout(900)
async def test_parity_with_hma_on_thousands_of_hashes(pipeline, hma, tmp_path):
    bank = unique("PARITY")
    await hma.create_bank(bank)
    hashes = [pdq() for _ in range(3000)]
    started = time.monotonic()
    ids: dict[int, str] = {}
    gate = asyncio.Semaphore(8)

    async def add(hash_: str) -> None:
        async with gate:
            ids[await hma.add(bank, pdq=hash_)] = hash_

    await asyncio.gather(*(add(h) for h in hashes))
    print(f"loaded {len(hashes)} PDQs into HMA in {time.monotonic() - started:.1f} s")
    mapping = mapping_file(tmp_path, {bank: ("parity", "partner")})
    synced = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "sync", "hma", "--dsn", hma.dsn,
                             "--mapping", str(mapping), "--checkpoint", str(tmp_path / "cp.json"),
                             *broker_args(pipeline)], capture_output=True, text=True, timeout=300,
                            env=signing_env(pipeline))
    assert synced.returncode == 0, synced.stderr
    assert "published 3000 entries" in synced.stdout, synced.stdout

    banks = HashBanks()  # StreamSafe's matching, loaded from the topic as a worker loads it
    entries = await read_entries(pipeline)
    banks.add_many(decode_bank_entry(k, orjson.dumps(v)) for k, v in entries.items() if v["bank"] == "parity")
    assert banks.sizes()["parity"]["pdq"] == 3000

    async def indexed() -> bool:
        status = await hma.ok("GET", "/m/index/status")
        return status["pdq"]["size"] >= 3000 and await hma.raw_lookup(hashes[-1]) != {}

    await until(indexed, 120, "HMA's index holding the parity bank")
    queries = []
    for i in range(1000):
        distance = i % 41  # 0..40
        queries.append((distance, flip(RNG.choice(hashes), distance)))

    started = time.monotonic()
    theirs = [await hma.raw_lookup(q) for _, q in queries]
    hma_s = time.monotonic() - started
    frames = [Frame(i, 0, pdq=q, pdq_quality=100) for i, (_, q) in enumerate(queries)]
    banks.match_frames(frames[:10])  # the PDQ index's kernels compile on first use
    started = time.monotonic()
    ours = [banks.match_frame(frame) for frame in frames]
    ours_s = time.monotonic() - started
    started = time.monotonic()
    batched = banks.match_frames(frames)  # as a worker matches a consumer batch
    batch_s = time.monotonic() - started
    assert sorted((m.entry_id, m.distance, m.frame_seq) for m in batched) == sorted(
        (m.entry_id, m.distance, m.frame_seq) for found in ours for m in found)

    by_entry = {entry_id_for("parity", "pdq", h): h for h in hashes}
    mismatches = []
    with_matches = 0
    for (distance, _query), hma_matches, our_matches in zip(queries, theirs, ours, strict=True):
        hma_set = {(ids[c], d) for c, d in hma_matches.items() if c in ids and d <= 31}
        our_set = {(by_entry[m.entry_id], m.distance) for m in our_matches}
        with_matches += bool(hma_set)
        if hma_set != our_set:
            mismatches.append((distance, len(hma_set), len(our_set)))
    print(f"parity: {len(queries)} queries at distances 0-40 over {len(hashes)} hashes, "
          f"{with_matches} with matches, {len(mismatches)} differing; "
          f"HMA /m/raw_lookup {len(queries) / hma_s:.0f} lookups/s (HTTP, one at a time), "
          f"StreamSafe HashBanks {len(queries) / ours_s:.0f} lookups/s (in process, one frame at a time), "
          f"{len(queries) / batch_s:.0f} lookups/s (one batch of {len(queries)})")
    assert mismatches == []
    assert with_matches >= 700  # distances 0..31 match their source: 32 of every 41 queries

    # the checkpoint lost while HMA deleted an item: a fresh sync re-publishes and removes it
    gone = next(iter(ids))
    await hma.ok("DELETE", f"/c/bank/{bank}/content/{gone}")
    (tmp_path / "cp.json").unlink()
    again = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "sync", "hma", "--dsn", hma.dsn,
                            "--mapping", str(mapping), "--checkpoint", str(tmp_path / "cp.json"),
                            *broker_args(pipeline)], capture_output=True, text=True, timeout=300,
                            env=signing_env(pipeline))
    assert again.returncode == 0, again.stderr
    assert "published 2999 entries, removed 1;" in again.stdout, again.stdout
    assert entry_id_for("parity", "pdq", ids[gone]).encode() not in await read_entries(pipeline)


# -- on a secured cluster ----------------------------------------------------------------------


@pytest.mark.timeout(600)
async def test_sync_and_writeback_log_in_as_the_bank_admin_on_the_secured_listener(secured, hma, tmp_path):
    """``bank sync hma`` and ``hma writeback`` over SASL_SSL with the bank-admin role's ACLs only."""
    import os

    from tests.integration.test_security import read_topic, send

    bank, confirmed = unique("SECSYNC"), unique("SECCONFIRMED")
    for name in (bank, confirmed):
        await hma.create_bank(name)
        for _ in range(2):  # HMA's PDQ index matches nothing while it holds a single hash
            await hma.add(name, pdq=pdq())
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    environment.update(secured.environment("bank-admin"))
    sync = subprocess.run([sys.executable, "-m", "streamsafe", "bank", "sync", "hma", "--dsn", hma.dsn,
                           "--mapping", str(mapping_file(tmp_path, {bank: ("ncmec", "authority")})),
                           "--checkpoint", str(tmp_path / "hma.checkpoint")], env=environment,
                          capture_output=True, text=True, timeout=180, check=False)
    assert sync.returncode == 0 and "published 2 entries" in sync.stdout + sync.stderr, sync.stdout + sync.stderr
    admin = secured.role("bank-admin")
    def from_hma(records):
        return [r for r in records if r.get("source") == f"hma:{bank}"]

    synced = await read_topic(admin, HASHBANK_ENTRIES, lambda rs: len(from_hma(rs)) >= 2)
    assert {r["bank"] for r in from_hma(synced)} == {"ncmec"}

    log_path = tmp_path / "writeback.log"
    with log_path.open("wb") as log:
        writeback = subprocess.Popen([sys.executable, "-m", "streamsafe", "hma", "writeback", "--url", hma.url,
                                      "--bank", confirmed], env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        hash_ = pdq()
        entry = BankEntry(entry_id_for("internal-confirmed", "pdq", hash_), "internal-confirmed", "pdq", hash_,
                          "confirmed A1 R-sec")
        await send(admin, HASHBANK_ENTRIES, entry.entry_id,
                   bank_entry_document(entry, "reviewer", now_ms()))
        await until(lambda: confirmed_in_hma(hma, confirmed, hash_), 120, "the confirmed hash in HMA")
        assert writeback.poll() is None, log_path.read_text()
    finally:
        stop(writeback)
    assert "AuthorizationFailed" not in log_path.read_text()
