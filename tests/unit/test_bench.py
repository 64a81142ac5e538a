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


def load_bench(name: str):
    path = Path(__file__).parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dihedral_bench_measures_both_ways_or_says_it_measured_nothing():
    bench = load_bench("dihedral")
    nothing = bench.bench_hashing("64x48", 0)
    assert nothing["pdq_ms_per_frame"] == nothing["ratio"] == bench.NOT_MEASURED
    hashed = bench.bench_hashing("64x48", 2)
    assert hashed["frames"] == 2 and hashed["dihedral_ms_per_frame"] > 0 and hashed["ratio"] > 0
    assert bench.bench_screen(100, 0)["ratio"] == bench.NOT_MEASURED
    screened = bench.bench_screen(100, 20)
    assert screened["v1_us_per_message"] > 0 and screened["v2_us_per_message"] > 0
