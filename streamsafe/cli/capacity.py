"""``streamsafe capacity``: the cores, partitions and memory a deployment needs, from
measured per-event costs (no broker)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from streamsafe.cli.base import cli

__all__: list[str] = []


@cli.command()
@click.option("--streams", required=True, help="live streams at the peak")
@click.option("--fps", required=True, help="hashed frames per second per stream")
@click.option("--signals-per-s", required=True, help="classifier signals per second per stream")
@click.option("--bank", required=True, help="PDQ entries in all banks together")
@click.option("--metadata-per-s", default="0.1", show_default=True, help="metadata events per second per stream")
@click.option("--reports-per-s", default="0.01", show_default=True, help="user reports per second per stream")
@click.option("--frames-per-message", default="1", show_default=True,
              help="frames a producer batches in one frame-hashes message (1..64)")
@click.option("--target-utilisation", default="0.6", show_default=True,
              help="share of a core each worker may use at the peak (0..1]")
@click.option("--costs", "costs_path", type=click.Path(path_type=Path),
              help="costs from bench/scale.py --save-costs (default: the ones measured for this release)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of text")
def capacity(streams: str, fps: str, signals_per_s: str, bank: str, metadata_per_s: str, reports_per_s: str,
             frames_per_message: str, target_utilisation: str, costs_path: Path | None, as_json: bool) -> None:
    """Cores, workers, partitions and memory for a peak load, with the measured costs used
    and where they were measured (see the README's "Scale-out and capacity")."""
    from streamsafe.capacity import load_costs, parse_demand, plan, render
    from streamsafe.events.contract import INPUT_TOPICS, load_contract

    demand = parse_demand(streams, fps, signals_per_s, bank, metadata_per_s, reports_per_s, frames_per_message,
                          target_utilisation)
    costs = load_costs(costs_path)
    contract = load_contract()
    result = plan(demand, costs, max(contract[t].partitions for t in INPUT_TOPICS))
    click.echo(orjson.dumps(result.to_json()).decode() if as_json else render(result))
