"""The README's kcat recipes, pasted as a user would, against Apache Kafka and a real worker:
they must produce valid, correctly partitioned records (kcat with librdkafka's murmur2
partitioner) that the worker decides on, and the last recipe must print the decision."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest

from streamsafe.brokers.topics import apply_topics
from streamsafe.events.contract import load_contract
from streamsafe.runner import spawn_worker
from streamsafe.settings import Settings
from tests.integration.conftest import KNOWN_MD5

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def kcat_recipes() -> list[str]:
    text = README.read_text()
    section = text[text.index("**kcat recipes**"):]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block, "no kcat recipe block in the README"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_describes_the_known_hash_the_recipes_use():
    assert KNOWN_MD5 in "\n".join(kcat_recipes())
    assert f"md5:{KNOWN_MD5}" in README.read_text()


@pytest.mark.skipif(shutil.which("kcat") is None and not os.environ.get("CI"),
                    reason="kcat not installed (apt-get install kcat; CI installs it and requires it)")
async def test_the_readme_kcat_recipes_work_when_pasted(broker, tmp_path):
    if "Tansu" in broker.kind:
        pytest.skip("the recipes ask for an idempotent producer, which Tansu does not grant")
    settings = Settings(broker_url=broker.url, replication_factor=1, app_id=f"readme-{uuid.uuid4().hex[:8]}",
                        http_port=0, data_dir=tmp_path / "data")
    await apply_topics(settings, load_contract())  # the recipes name the topics without a prefix
    hash_list = tmp_path / "known-csam.txt"  # as the README says
    hash_list.write_text(f"md5:{KNOWN_MD5}\n")
    worker = spawn_worker(settings.replace(hash_list=hash_list), tmp_path / "worker.log")
    try:
        worker.wait_ready(90)
        *produce, consume = kcat_recipes()
        env = {**os.environ, "BROKER": settings.bootstrap_servers}
        pasted = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(produce)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert pasted.returncode == 0, pasted.stderr
        deadline = time.monotonic() + 60
        decisions: list[dict] = []
        while time.monotonic() < deadline:
            read = subprocess.run(["bash", "-c", consume], env=env, capture_output=True, text=True, timeout=60)
            assert read.returncode == 0, read.stderr
            decisions = [orjson.loads(line) for line in read.stdout.splitlines() if line.strip()]
            if any(d["stream_id"] == "st-readme-1" and d["action"] == "block" for d in decisions):
                break
            time.sleep(0.5)
        blocks = [d for d in decisions if d["stream_id"] == "st-readme-1" and d["action"] == "block"]
        assert len(blocks) == 1, decisions
        assert "wrong_partition" not in worker.log() and "dead-lettered" not in worker.log()
    finally:
        worker.stop()
