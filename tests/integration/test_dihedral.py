"""Mirrored and turned frames through the real broker: the producer sends a frame's dihedral
variants (``streamsafe hash --dihedral --emit``), the worker blocks the stream on an
authority-bank picture shown mirrored or turned, and the decision names the transform."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from streamsafe.control.bank_publish import publish_entries
from streamsafe.events.contract import ACTIONS, ESCALATIONS, FRAME_HASHES
from streamsafe.events.models import BankEntry
from streamsafe.hashing.frames import hash_image_file
from tests.unit.test_hashing import REFERENCE, needs_reference

pytestmark = [pytest.mark.integration, needs_reference]

BRIDGE = REFERENCE / "images" / "dih"


def for_stream(records, stream, topic):
    return [r for r in records.on(topic) if r["stream_id"] == stream]


async def emit_with_variants(pipeline, picture: str, stream: str) -> None:
    """What a platform runs: hash the frame with its dihedral variants and send it."""
    env = {**os.environ, "STREAMSAFE_TOPIC_PREFIX": pipeline.settings.topic_prefix}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streamsafe", "hash", str(BRIDGE / picture), "--dihedral", "--emit",
                         "--stream-id", stream, "--broker", pipeline.settings.broker_url],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("prefilter", ["true", "false"])
async def test_a_mirrored_or_turned_authority_picture_blocks_the_stream_and_names_the_transform(pipeline, prefilter):
    original = hash_image_file(BRIDGE / "bridge-1-original.jpg")
    await publish_entries(pipeline.settings, [BankEntry("ncmec:bridge", "ncmec", "pdq", original.pdq)])
    worker = pipeline.start_worker(STREAMSAFE_PREFILTER=prefilter)
    await emit_with_variants(pipeline, "bridge-6-flipy.jpg", "s-mirrored")  # a front camera's mirror image
    await emit_with_variants(pipeline, "bridge-2-rotate-90.jpg", "s-turned")  # turned 90 degrees counterclockwise
    mirrored_plain = hash_image_file(BRIDGE / "bridge-6-flipy.jpg")  # the same frame, without its variants
    await pipeline.send(FRAME_HASHES, b"s-plain", {"schema_version": 1, "stream_id": "s-plain", "frames": [
        {"seq": 0, "ts_ms": int(time.time() * 1000), "pdq": mirrored_plain.pdq,
         "pdq_quality": mirrored_plain.pdq_quality}]})
    worker.wait_ready()
    records = await pipeline.read(
        until=lambda r: for_stream(r, "s-mirrored", ACTIONS) and for_stream(r, "s-turned", ACTIONS), settle_s=2.0)

    for stream, transform in (("s-mirrored", "flipy"), ("s-turned", "rotate90")):
        actions = for_stream(records, stream, ACTIONS)
        assert sorted(a["action"] for a in actions) == ["block", "report"], actions
        block = next(a for a in actions if a["action"] == "block")
        assert block["rule"] == "authority-hash-strong"
        (evidence,) = block["evidence"]
        assert evidence["entry_id"] == "ncmec:bridge" and evidence["transform"] == transform, evidence
        assert evidence["distance"] <= 10 and evidence["frame_seq"] == 0
    # without its variants, the mirrored frame is ~128 bits from the original: no match, as before
    assert for_stream(records, "s-plain", ACTIONS) == [] and for_stream(records, "s-plain", ESCALATIONS) == []
    assert worker.alive
