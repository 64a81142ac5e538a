"""The fault drills, small (bench/drills.py): a hostile corpus with a ~1 MB record on every
input and control topic, and a kill -9 under load, on an Apache Kafka broker of their own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DRILLS = Path(__file__).parents[2] / "bench" / "drills.py"


@pytest.mark.timeout(900)
def test_small_drills_lose_nothing_and_dead_letter_everything_bad(broker):
    if "Kafka" not in broker.kind:
        pytest.skip(f"the drills kill workers and restart on Apache Kafka; this run's broker is {broker.kind}")
    run = subprocess.run([sys.executable, str(DRILLS), "--hostile", "2000", "--kills", "1", "--skip-broker-restart",
                          "--skip-scale", "--json"], capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    hostile, kill = result["hostile"], result["kill"]
    assert "error" not in hostile and "error" not in kill, (hostile, kill)
    # every record the contract rejects is dead-lettered with the contract's reason, nothing else is
    assert hostile["missing_dead_letters"] == {} and hostile["wrong_reason"] == {}, hostile
    assert hostile["unexpected_dead_letters"] == {}, hostile
    assert hostile["by_reason"]["oversized"] >= 5 and hostile["by_reason"]["implausible_time"] > 0
    assert hostile["control_dead_letters"] == {"streamsafe.policy": "oversized", "hashbank.entries": "oversized"}
    # every known-hash stream blocked exactly once, none other; no worker crashed
    assert hostile["canaries_blocked"] == hostile["canaries"] > 0, hostile
    assert hostile["duplicate_blocks"] == 0 and hostile["false_blocks"] == 0
    assert hostile["crashes"] == 0 and hostile["control_crashes"] == 0 and hostile["workers_alive"] == 2
    assert hostile["control_bank_update_applied"]
    # kill -9 under load, the slot restarted: nothing lost or decided twice differently
    assert kill["lost"] == 0 and kill["duplicates"] == 0 and kill["false_blocks"] == 0, kill
    assert all(t is not None for t in kill["time_to_resume_s"]), kill
