"""A benchmark that measured nothing says so: no percentile from fewer than two values."""

import importlib.util
from pathlib import Path

import orjson
import pytest


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


def test_stock_and_the_default_are_timed_back_to_back_in_abba_order_and_the_rest_once():
    bench = load_worker_bench()
    order = bench.measurement_order(list(bench.VARIANTS))
    assert order[:4] == [bench.STOCK, bench.DEFAULT, bench.DEFAULT, bench.STOCK]
    assert sorted(order[4:]) == sorted(v for v in bench.VARIANTS if v not in (bench.STOCK, bench.DEFAULT))
    assert bench.measurement_order([bench.FAST, bench.DEFAULT]) == [bench.FAST, bench.DEFAULT]  # no pair: once each


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


def test_the_scale_bench_counts_each_violation_of_blocked_exactly_once():
    bench = load_bench("scale")
    blocks = {"known-1": {"d1": 1}, "known-2": {"d2": 1, "d3": 1}, "known-3": {"d4": 2}, "benign": {"d5": 1},
              "c1-0": {"d6": 1}}
    check = bench.exactly_once({"known-1", "known-2", "known-3", "known-4"}, blocks, {"c1-0", "c2-0"})
    assert check == {"known_streams": 4, "blocked": 3, "missing": 1, "duplicates": 1, "false_blocks": 1,
                     "redelivered": 1}
    assert bench.violations(check) == 3
    clean = bench.exactly_once({"known-1"}, {"known-1": {"d1": 2}}, set())
    assert bench.violations(clean) == 0 and clean["redelivered"] == 1  # an identical copy is one decision


def test_the_scale_bench_gives_no_ratio_for_what_it_did_not_measure():
    bench = load_bench("scale")
    phases = bench.with_ratios([
        {"drain": {"msgs_per_s": 1000, "cpu_s_per_1k": 0.5}, "p99_ms": None},
        {"drain": {"msgs_per_s": 1500, "cpu_s_per_1k": 0.6}, "p99_ms": 80.0},
        {"drain": {"msgs_per_s": None, "cpu_s_per_1k": None}, "p99_ms": 90.0}])
    assert [p["throughput_x"] for p in phases] == [1.0, 1.5, None]
    assert [p["cpu_per_1k_x"] for p in phases] == [1.0, 1.2, None]
    assert [p["p99_x"] for p in phases] == [None, None, None]  # no one-worker p99: no ratio to it


def test_the_scale_bench_saves_costs_that_streamsafe_capacity_reads(tmp_path):
    from streamsafe.capacity import load_costs

    bench = load_bench("scale")
    result = {"phases": [{"drain": {"msgs_per_s": 2000, "cpu_s_per_1k": 0.45}}],
              "memory": {"worker_base_rss_bytes": 250_000_000, "stream_state_bytes": 1800,
                         "stream_state_serialized_bytes": 400,
                         "bank": {"entries": 1000, "bytes_per_entry": 500.0, "pdq_index_bytes_per_hash": 190.0}},
              "measured_at": "2026-12-01T20:00:00Z", "command": "bench/scale.py --quick", "head": "abc1234",
              "machine": bench.machine(), "broker": "kafka", "load_before": [1.0, 1.0, 1.0],
              "load_after": [2.0, 1.0, 1.0]}
    path = tmp_path / "costs.json"
    path.write_bytes(orjson.dumps(bench.costs_from(result)))
    costs = load_costs(path)
    assert costs.cpu_s_per_event == 0.00045 and costs.stream_state_bytes == 1800
    assert costs.provenance["machine"]["cores"] >= 1
    result["phases"][0]["drain"]["cpu_s_per_1k"] = None
    with pytest.raises(ValueError, match="no costs to save"):
        bench.costs_from(result)


def test_the_host_busy_share_is_of_every_core_and_none_when_no_time_passed():
    proc = load_bench("proc")
    assert proc.busy_fraction((10, 100), (60, 200)) == 0.5
    assert proc.busy_fraction((10, 100), (10, 100)) is None
    busy, total = proc.host_jiffies()
    assert 0 < busy <= total
    bench = load_worker_bench()
    assert bench.share(None) is None and bench.share(0.8526) == 85.3
