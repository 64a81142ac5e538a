"""Coop review queues through a real broker, a real worker and the real ``streamsafe coop``
commands: escalations reach a Coop that enforces the documented report contract (once, even
re-delivered, and after Coop was down), and signed action callbacks become verdicts the
worker acts on, while unsigned, tampered, stale and replayed ones are refused and counted."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from streamsafe.brokers.base import free_port
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, ESCALATIONS, REPORTS, REVIEW_VERDICTS
from streamsafe.runner import worker_environment
from tests.coop_fake import CoopSigner, FakeCoop
from tests.integration.test_review import CASE, WEAK, escalations, weak_frames
from tests.integration.waits import processed, wait_for_metric
from tests.signing_support import REVIEW_KEY

pytestmark = pytest.mark.integration

API_KEY = "coop-test-key-" + uuid.uuid4().hex
MAPPING = {
    "version": 1,
    "reporter": {"type_id": "streamsafe-reporter", "id": "streamsafe"},
    "stream_item_type_id": "live-stream",
    "policies": {"by_evidence": {"hash_match": {"policy_id": "pol-csam", "csam": True}},
                 "default": {"policy_id": "pol-child-safety"}},
}


_STARTED: list[Service] = []


@pytest.fixture(autouse=True)
def _stop_services():
    """Every ``streamsafe coop`` process a test started is stopped after it, also when the test failed."""
    yield
    while _STARTED:
        service = _STARTED.pop()
        if service.process.poll() is None:
            service.stop()


class Service:
    """A ``streamsafe coop`` process, its log and its HTTP port."""

    def __init__(self, pipeline: Any, args: list[str], port: int, name: str, **env: str) -> None:
        self.port = port
        self.log_path: Path = pipeline.tmp / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streamsafe", "coop", *args],
                                            env=worker_environment(pipeline.settings, **env),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _STARTED.append(self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.log()}"
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"not ready in {timeout_s}s:\n{self.log()}")

    async def metric(self, name: str, outcome: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            text = await r.text()
        found = re.search(rf'^{name}{{outcome="{outcome}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    async def gauge(self, name: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            found = re.search(rf"^{name} (\S+)$", await r.text(), re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


async def until(check: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def bank_list(tmp_path: Path) -> Path:
    """A bank the weak frames of :func:`weak_frames` match at distance 26: an escalation, not a block."""
    path = tmp_path / "partner-list.txt"
    path.write_text(f"pdq:{CASE}\n")
    return path


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "coop.yaml"
    path.write_text(yaml.safe_dump(MAPPING))
    return path


@pytest.fixture
async def coop():
    fake = FakeCoop(API_KEY)
    yield fake
    await fake.stop()


def start_forwarder(pipeline, mapping_file: Path, coop_url: str, group: str = "coop-fwd",
                    api_key: str = API_KEY) -> Service:
    port = free_port()
    return Service(pipeline, ["forward", "--coop-url", coop_url, "--mapping", str(mapping_file),
                              "--group-id", f"{pipeline.settings.app_id}-{group}", "--metrics-host", "127.0.0.1",
                              "--metrics-port", str(port), "--max-backoff", "1"],
                   port, f"forwarder-{group}", STREAMSAFE_COOP_API_KEY=api_key)


async def test_escalations_reach_coop_in_the_documented_shape_once(pipeline, bank_list, mapping_file, coop):
    await coop.start()
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    forwarder = start_forwarder(pipeline, mapping_file, coop.url)
    await forwarder.wait_ready()
    await weak_frames(pipeline, "s-coop")
    first = await pipeline.read(until=lambda r: escalations(r, "s-coop"), topics=(ESCALATIONS,))
    (escalation,) = escalations(first, "s-coop")
    await until(lambda: coop.reports, what="the report in Coop")
    (report,) = coop.reports
    assert coop.refused == []  # the fake enforces the contract: nothing it refused
    assert report["reporter"] == {"kind": "user", "typeId": "streamsafe-reporter", "id": "streamsafe"}
    assert report["reportedItem"]["id"] == "s-coop" and report["reportedItem"]["typeId"] == "live-stream"
    data = report["reportedItem"]["data"]
    assert data["priority"] == escalation["priority"] and data["escalation_id"] == escalation["decision_id"]
    assert data["review_due_ms"] == escalation["review_due_ms"]
    assert report["reportedForReason"] == {"policyId": "pol-csam", "reason": report["reportedForReason"]["reason"],
                                           "csam": True}
    assert WEAK not in orjson.dumps(report).decode()
    # re-delivered: the same escalation again, and a forwarder of a new group reading from the start
    await pipeline.send(ESCALATIONS, b"s-coop", escalation)
    await until(lambda: forwarder.metric("streamsafe_coop_escalations_total", "duplicate"), what="a duplicate")
    assert forwarder.stop() == 0
    again = start_forwarder(pipeline, mapping_file, coop.url, group="coop-fwd-2")
    await again.wait_ready()
    await until(lambda: _at_least(again.metric("streamsafe_coop_escalations_total", "duplicate"), 2),
                what="both copies recognised as forwarded")
    assert len(coop.reports) == 1
    assert await again.metric("streamsafe_coop_escalations_total", "forwarded") == 0
    assert again.stop() == 0
    assert "s-coop" not in forwarder.log() + again.log()  # stream ids only at debug level


async def _at_least(value: Any, n: float) -> bool:
    return await value >= n


async def test_coop_down_delays_escalations_and_loses_none(pipeline, bank_list, mapping_file, coop):
    port = free_port()
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    forwarder = start_forwarder(pipeline, mapping_file, f"http://127.0.0.1:{port}")
    await forwarder.wait_ready()
    for stream in ("s-down-1", "s-down-2"):
        await weak_frames(pipeline, stream)
    await pipeline.read(until=lambda r: escalations(r, "s-down-1") and escalations(r, "s-down-2"),
                        topics=(ESCALATIONS,))
    await until(lambda: _at_least(forwarder.metric("streamsafe_coop_escalations_total", "failed"), 3),
                what="failed attempts while Coop is down")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{forwarder.port}/metrics") as r:
        assert re.search(r"^streamsafe_coop_escalations_pending [1-9]", await r.text(), re.M)
    await coop.start(port)  # Coop is back
    await until(lambda: len(coop.reports) == 2, what="both reports after Coop came back")
    await until(lambda: _at_least(forwarder.metric("streamsafe_coop_escalations_total", "forwarded"), 2),
                what="both recorded as forwarded")
    assert sorted(r["reportedItem"]["id"] for r in coop.reports) == ["s-down-1", "s-down-2"]
    assert await forwarder.metric("streamsafe_coop_escalations_total", "forwarded") == 2
    assert forwarder.stop() == 0


async def test_a_wrong_api_key_is_retried_not_dropped(pipeline, bank_list, mapping_file, coop):
    await coop.start()
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    forwarder = start_forwarder(pipeline, mapping_file, coop.url, api_key="wrong")
    await forwarder.wait_ready()
    await weak_frames(pipeline, "s-key")
    await until(lambda: len(coop.refused) >= 2, what="Coop refusing the key")
    assert {status for status, _ in coop.refused} == {401} and coop.reports == []
    assert forwarder.stop() == 0
    fixed = start_forwarder(pipeline, mapping_file, coop.url)  # the same group: the escalation is still there
    await fixed.wait_ready()
    await until(lambda: coop.reports, what="the report once the key is right")
    assert API_KEY not in fixed.log() + forwarder.log()  # the key is never logged
    assert fixed.stop() == 0


async def test_what_coop_refuses_and_broken_escalations_are_dead_lettered_not_lost(pipeline, bank_list, tmp_path):
    coop = await FakeCoop(API_KEY, item_types=frozenset({"streamsafe-reporter", "live-stream"})).start()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**MAPPING, "stream_item_type_id": "livestream-typo"}))
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    forwarder = start_forwarder(pipeline, wrong, coop.url)
    await forwarder.wait_ready()
    await pipeline.send(ESCALATIONS, b"s-junk", b"{not json")
    await weak_frames(pipeline, "s-typo")
    records = await pipeline.read(until=lambda r: len(r.on(DEAD_LETTER)) >= 2, topics=(DEAD_LETTER,), timeout_s=60)
    reasons = sorted((d["reason"], d["source"]["topic"]) for d in records.on(DEAD_LETTER))
    source = pipeline.topic(ESCALATIONS)
    assert reasons == [("processing_error", source), ("schema_violation", source)]
    (refused,) = [d for d in records.on(DEAD_LETTER) if d["reason"] == "processing_error"]
    assert "Coop refused the report" in refused["detail"] and "/reportedItem/typeId" in refused["detail"]
    assert coop.reports == [] and [status for status, _ in coop.refused] == [400]
    assert await forwarder.metric("streamsafe_coop_escalations_total", "rejected") == 1
    assert await forwarder.metric("streamsafe_coop_escalations_total", "invalid") == 1
    assert forwarder.stop() == 0
    await coop.stop()


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def action_body(stream: str, decided_ms: int, **custom: str) -> bytes:
    """A callback body as Coop documents it, the reviewer's fields in ``custom``."""
    return orjson.dumps({"item": {"id": stream, "typeId": "live-stream"}, "action": {"id": "act-review"},
                         "policies": [{"id": "pol-csam", "name": "CSAM", "penalty": "SEVERE"}], "rules": [],
                         "custom": {**custom, "decidedAt": iso(decided_ms)},
                         "actorEmail": "reviewer.one@example.org"})


async def post(port: int, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Coop-Signature": signature} if signature else {})}
    async with aiohttp.ClientSession() as http, \
            http.post(f"http://127.0.0.1:{port}/coop/callback", data=body, headers=headers) as r:
        return r.status, await r.json()


async def test_signed_callbacks_become_verdicts_the_worker_acts_on_and_bad_ones_are_refused(
    pipeline, bank_list, mapping_file, coop, tmp_path,
):
    signer = CoopSigner()
    key_file = tmp_path / "coop-webhook-key.pem"
    key_file.write_bytes(signer.public_pem())
    await coop.start()
    worker = pipeline.start_worker(bank_list)
    worker.wait_ready()
    forwarder = start_forwarder(pipeline, mapping_file, coop.url)
    serve = Service(pipeline, ["serve", "--mapping", str(mapping_file), "--public-key", str(key_file),
                               "--host", "127.0.0.1", "--port", str(port := free_port())],
                    port, "serve", STREAMSAFE_COOP_REVIEWER_KEY="pseudonym-key",
                    STREAMSAFE_SIGNING_KEY_FILE=str(pipeline.keys["review_key"]))
    await forwarder.wait_ready()
    await serve.wait_ready()
    for stream in ("s-bad", "s-fine"):
        await weak_frames(pipeline, stream)
    first = await pipeline.read(until=lambda r: escalations(r, "s-bad") and escalations(r, "s-fine"),
                                topics=(ESCALATIONS,))
    (bad_escalation,) = escalations(first, "s-bad")
    (fine_escalation,) = escalations(first, "s-fine")
    await until(lambda: len(coop.reports) == 2, what="both escalations in Coop")
    await until(lambda: _at_least(serve.gauge("streamsafe_coop_ledger_escalations"), 2),
                what="coop serve knowing both were forwarded")  # a reviewer takes longer than that
    now = int(time.time() * 1000)
    confirmed = action_body("s-bad", now, verdict="confirmed", category="A2")
    assert await post(port, confirmed, None) == (401, {"error": "unsigned", "detail": "no Coop-Signature header"})
    tampered = confirmed.replace(b"A2", b"B2")
    assert (await post(port, tampered, signer.sign(confirmed)))[0] == 401
    assert (await post(port, confirmed, CoopSigner().sign(confirmed)))[0] == 401  # another organisation's key
    stale = action_body("s-bad", now - 2 * 3600 * 1000, verdict="confirmed", category="A2")
    assert (await post(port, stale, signer.sign(stale)))[0] == 403
    assert await post(port, confirmed, signer.sign(confirmed)) == (200, {"status": "accepted"})
    assert (await post(port, confirmed, signer.sign(confirmed)))[0] == 409  # Coop's retry, or a replay
    benign = action_body("s-fine", now, verdict="benign")
    assert (await post(port, benign, signer.sign(benign)))[0] == 200

    records = await pipeline.read(
        until=lambda r: len(r.on(REVIEW_VERDICTS)) >= 2 and [a for a in r.on(ACTIONS) if a["stream_id"] == "s-bad"
                                                              and a["action"] == "block"],
        topics=(REVIEW_VERDICTS, ACTIONS), settle_s=1.5)
    verdicts = {v["stream_id"]: v for v in records.on(REVIEW_VERDICTS)}
    assert len(records.on(REVIEW_VERDICTS)) == 2  # nothing from the refused callbacks
    # signed with the review tool's key, which the workers trust for verdicts
    assert {v.pop("signature")["key_id"] for v in verdicts.values()} == {REVIEW_KEY.key_id}
    assert verdicts["s-bad"] == {"schema_version": 1, "stream_id": "s-bad", "verdict": "confirmed", "category": "A2",
                                 "escalation_id": bad_escalation["decision_id"], "ts_ms": now,
                                 "reviewer_id": verdicts["s-bad"]["reviewer_id"]}
    assert re.fullmatch(r"coop-[0-9a-f]{24}", verdicts["s-bad"]["reviewer_id"])
    assert verdicts["s-fine"]["escalation_id"] == fine_escalation["decision_id"]
    (block,) = [a for a in records.on(ACTIONS) if a["stream_id"] == "s-bad" and a["action"] == "block"]
    assert block["rule"] == "reviewer-confirmed"
    assert not [a for a in records.on(ACTIONS) if a["stream_id"] == "s-fine" and a["action"] == "block"]
    # the block shows the confirmed verdict was handled; the benign one may still be on its way
    for outcome in ("benign", "confirmed"):
        assert await wait_for_metric(worker, "streamsafe_review_verdicts_total", lambda v: v >= 1,
                                     outcome=outcome) == 1
    counted = {o: await serve.metric("streamsafe_coop_callbacks_total", o)
               for o in ("accepted", "unsigned", "bad_signature", "stale", "replayed")}
    assert counted == {"accepted": 2, "unsigned": 1, "bad_signature": 2, "stale": 1, "replayed": 1}
    assert serve.stop() == 0
    assert "reviewer.one" not in serve.log()  # emails are never logged

    # a restarted service has forgotten what it accepted: Coop's retry gets through, and it is harmless
    again = Service(pipeline, ["serve", "--mapping", str(mapping_file), "--public-key", str(key_file),
                               "--host", "127.0.0.1", "--port", str(port := free_port())],
                    port, "serve-2", STREAMSAFE_COOP_REVIEWER_KEY="pseudonym-key",
                    STREAMSAFE_SIGNING_KEY_FILE=str(pipeline.keys["review_key"]))
    await again.wait_ready()
    assert await post(port, confirmed, signer.sign(confirmed)) == (200, {"status": "accepted"})
    # the replayed verdict handled (found already closed) before looking for a second block
    await wait_for_metric(worker, "streamsafe_review_verdicts_total", lambda v: v >= 3)
    await processed(pipeline, REVIEW_VERDICTS)
    after = await pipeline.read(until=lambda r: len(r.on(REVIEW_VERDICTS)) >= 3,
                                topics=(REVIEW_VERDICTS, ACTIONS, REPORTS), settle_s=1.0)
    bad = [v for v in after.on(REVIEW_VERDICTS) if v["stream_id"] == "s-bad"]
    assert len(bad) == 2 and bad[0] == bad[1]  # the same record byte for byte
    assert len([a for a in after.on(ACTIONS) if a["stream_id"] == "s-bad" and a["action"] == "block"]) == 1
    assert len([r for r in after.on(REPORTS) if r["stream_id"] == "s-bad"]) == 1
    assert again.stop() == 0 and forwarder.stop() == 0
