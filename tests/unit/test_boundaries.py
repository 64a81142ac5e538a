"""The stream machinery stays at the edge: the packages that decide about a child's safety
import neither Faust, mode nor aiokafka (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

PURE = ("streamsafe.events", "streamsafe.matching", "streamsafe.scoring", "streamsafe.policy",
        "streamsafe.review", "streamsafe.pipeline")
FRAMEWORKS = ("faust", "mode", "aiokafka")


def test_pure_packages_import_no_stream_framework():
    probe = f"""
import importlib, pkgutil, sys
for name in {PURE!r}:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(info.name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FRAMEWORKS!r}))
print(",".join(loaded))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"pure packages pulled in {result.stdout.strip()}"


def test_the_check_sees_a_framework_import():
    probe = "import sys, streamsafe.agents.records, streamsafe.agents.streams; print('faust' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True", result.stderr
