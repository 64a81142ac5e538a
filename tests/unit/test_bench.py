"""A benchmark that measured nothing says so: no percentile from fewer than two values."""

import importlib.util
from pathlib import Path


def load_worker_bench():
    path = Path(__file__).parents[2] / "bench" / "worker.py"
    spec = importlib.util.spec_from_file_location("bench_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_percentiles_of_nothing_are_none_not_zero():
    bench = load_worker_bench()
    assert bench.pct([], 50) is None and bench.pct([12.0], 99) is None
    assert bench.pct([1.0, 2.0, 3.0], 50) == 2.0
