"""The capacity model (pure arithmetic on measured costs) and ``streamsafe capacity`` with the
costs file StreamSafe ships."""

import math

import orjson
import pytest
from click.testing import CliRunner

from streamsafe.capacity import DEFAULT_COSTS, Costs, Demand, load_costs, parse_demand, plan, render
from streamsafe.cli import cli
from streamsafe.errors import StreamSafeError

COSTS = Costs(cpu_s_per_event=0.0002, worker_base_rss_bytes=200e6, bank_bytes_per_entry=500.0,
              pdq_index_bytes_per_hash=190.0, stream_state_bytes=1500.0, source="test",
              provenance={"measured_at": "2026-12-01T20:00:00Z", "command": "bench/scale.py", "head": "abc1234",
                          "machine": {"cores": 2, "cpu": "Test CPU", "os": "Linux", "python": "3.11.7"}})


def test_events_follow_the_streams_and_their_rates():
    p = plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=0, metadata_per_s=0.1, reports_per_s=0.01),
             COSTS, 8)
    assert p.events_per_s == pytest.approx({"frame-hashes": 100_000, "classifier-signals": 50_000,
                                            "metadata": 10_000, "user-reports": 1_000})
    batched = plan(Demand(streams=100_000, fps=2, signals_per_s=0, bank=0, metadata_per_s=0, reports_per_s=0,
                          frames_per_message=4), COSTS, 8)
    assert batched.events_per_s["frame-hashes"] == pytest.approx(50_000)  # the contract batches frames


def test_cores_are_events_times_cpu_over_utilisation_and_workers_round_them_up():
    p = plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=0, metadata_per_s=0.1, reports_per_s=0.01,
                    target_utilisation=0.6), COSTS, 8)
    assert p.cores == pytest.approx(161_000 * 0.0002 / 0.6)
    assert p.workers == math.ceil(161_000 * 0.0002 / 0.6) == 54
    tiny = plan(Demand(streams=1, fps=1, signals_per_s=0, bank=0), COSTS, 8)
    assert tiny.workers == 1 and tiny.partitions == 8
    exact = plan(Demand(streams=3000, fps=1, signals_per_s=0, bank=0, metadata_per_s=0, reports_per_s=0,
                        target_utilisation=0.6), COSTS, 8)
    assert exact.cores == pytest.approx(1.0) and exact.workers == 1  # 1.0000000001 is not two workers


def test_partitions_keep_the_contracts_count_until_more_workers_need_more():
    at_eight = plan(Demand(streams=24_000, fps=1, signals_per_s=0, bank=0, metadata_per_s=0, reports_per_s=0,
                           target_utilisation=0.6), COSTS, 8)
    assert at_eight.workers == 8 and at_eight.partitions == 8 and "already" in at_eight.partitions_reason
    nine = plan(Demand(streams=25_000, fps=1, signals_per_s=0, bank=0, metadata_per_s=0, reports_per_s=0,
                       target_utilisation=0.6), COSTS, 8)
    assert nine.workers == 9 and nine.partitions == 16
    assert nine.partitions_reason.startswith("MORE than the contract's 8")
    big = plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=0), COSTS, 8)
    assert big.partitions == 64 >= big.workers


def test_memory_is_base_plus_the_whole_bank_plus_this_workers_streams():
    p = plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=10_000_000), COSTS, 8)
    per_stream = math.ceil(100_000 / p.workers) * 1500.0
    assert p.memory_per_worker_bytes == {"base": 200e6, "banks": 10_000_000 * 500.0, "stream_state": per_stream}
    assert p.memory_total_bytes == pytest.approx(p.workers * (200e6 + 5e9 + per_stream))
    assert p.memory_one_down_bytes == pytest.approx(200e6 + 5e9 + math.ceil(100_000 / (p.workers - 1)) * 1500.0)
    assert plan(Demand(streams=10, fps=1, signals_per_s=0, bank=0), COSTS, 8).memory_one_down_bytes is None


def test_the_rendered_plan_names_its_costs_and_where_they_were_measured():
    text = render(plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=10_000_000), COSTS, 8))
    for part in ("161,000/s", "0.2000 CPU-ms per event", "54 (one Python process", "64 per input topic",
                 "MORE than the contract's 8", "measured 2026-12-01T20:00:00Z by bench/scale.py at abc1234",
                 "2 cores of Test CPU"):
        assert part in text
    batched = render(plan(Demand(streams=10, fps=5, signals_per_s=0, bank=0, frames_per_message=5), COSTS, 8))
    assert "lower bound" in batched


@pytest.mark.parametrize(("options", "message"), [
    ({"streams": "abc"}, "--streams must be a whole number, got 'abc'"),
    ({"streams": "0"}, "--streams must be more than 0"),
    ({"streams": "1.5"}, "--streams must be a whole number"),
    ({"fps": "-1"}, "--fps must be at least 0"),
    ({"fps": "nan"}, "--fps must be at least 0"),
    ({"bank": "1e7"}, "--bank must be a whole number"),
    ({"target_utilisation": "1.5"}, "--target-utilisation must be more than 0 and at most 1.0"),
    ({"target_utilisation": "0"}, "--target-utilisation must be more than 0"),
    ({"frames_per_message": "65"}, "--frames-per-message must be more than 0 and at most 64"),
])
def test_bad_input_is_one_error_naming_the_option(options, message):
    given = {"streams": "100", "fps": "1", "signals_per_s": "0.5", "bank": "10", **options}
    with pytest.raises(StreamSafeError, match="^" + message.replace(".", r"\.").replace("(", r"\(")) as caught:
        parse_demand(**given)
    assert "\n" not in str(caught.value)


def test_a_costs_file_that_is_missing_broken_or_incomplete_is_one_line(tmp_path):
    with pytest.raises(StreamSafeError, match="cannot read the costs file"):
        load_costs(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StreamSafeError, match="is not JSON"):
        load_costs(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text('{"cpu_s_per_event": 0.001, "stream_state_bytes": -3}')
    with pytest.raises(StreamSafeError, match="lacks a positive number for worker_base_rss_bytes, bank_bytes_per_entry"
                                              ", pdq_index_bytes_per_hash, stream_state_bytes"):
        load_costs(tmp_path / "short.json")


def test_the_shipped_costs_were_measured_here_and_say_where():
    costs = load_costs()
    assert costs.source == str(DEFAULT_COSTS)
    where = costs.provenance
    assert where["command"].startswith("bench/scale.py") and where["measured_at"] and where["head"]
    assert where["machine"]["cores"] >= 1 and where["machine"]["cpu"]


def test_the_command_runs_with_the_shipped_costs():
    result = CliRunner().invoke(cli, ["capacity", "--streams", "100000", "--fps", "1", "--signals-per-s", "0.5",
                                      "--bank", "10000000"])
    assert result.exit_code == 0, result.output
    assert "events      161,000/s" in result.output and str(DEFAULT_COSTS) in result.output
    shipped = load_costs()
    expected = plan(Demand(streams=100_000, fps=1, signals_per_s=0.5, bank=10_000_000), shipped, 8)
    assert f"workers     {expected.workers:,} " in result.output
    as_json = CliRunner().invoke(cli, ["capacity", "--streams", "100000", "--fps", "1", "--signals-per-s", "0.5",
                                       "--bank", "10000000", "--json"])
    doc = orjson.loads(as_json.output)
    assert doc["workers"] == expected.workers and doc["partitions"] == expected.partitions
    assert doc["costs"]["cpu_s_per_event"] == shipped.cpu_s_per_event


def test_the_command_refuses_bad_input_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["capacity", "--streams", "many", "--fps", "1", "--signals-per-s", "0.5",
                                      "--bank", "10"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --streams must be a whole number, got 'many'"
    missing = CliRunner().invoke(cli, ["capacity", "--streams", "1", "--fps", "1", "--signals-per-s", "0.5",
                                       "--bank", "10", "--costs", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1


def test_the_installed_command_prints_the_plan_and_exits_0():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "streamsafe", "capacity", "--streams", "100000", "--fps", "1",
                          "--signals-per-s", "0.5", "--bank", "10000000"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "partitions" in run.stdout and "measured" in run.stdout and run.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "streamsafe", "capacity", "--streams", "-5", "--fps", "1",
                          "--signals-per-s", "0.5", "--bank", "1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: --streams must be more than 0, got '-5'"
