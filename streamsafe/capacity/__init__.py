"""Capacity planning from measured per-event costs (``streamsafe capacity``).

The model, for ``streams`` live streams (the README's "Scale-out and capacity" says more):

* events/s = streams x (fps / frames per message + signals/s + metadata/s + reports/s);
* cores = events/s x CPU seconds per event / target utilisation; a worker is one Python
  process and uses at most one core, so workers = cores rounded up;
* partitions per input topic = the contract's count, or the next power of two at or above
  the workers when that is more (a consumer group gives a partition to one worker only);
* memory per worker = base RSS + bank entries x bytes per entry (every worker holds every
  bank) + streams per worker x state bytes per stream.

The costs come from a JSON file that ``bench/scale.py --save-costs`` writes, with where and
when they were measured; the one measured for this release ships beside this module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamsafe.errors import StreamSafeError

__all__ = ["DEFAULT_COSTS", "Costs", "Demand", "Plan", "load_costs", "parse_demand", "plan", "render"]

DEFAULT_COSTS = Path(__file__).with_name("measured-costs.json")
_COST_FIELDS = ("cpu_s_per_event", "worker_base_rss_bytes", "bank_bytes_per_entry", "pdq_index_bytes_per_hash",
                "stream_state_bytes")
GIB = 2**30


@dataclass(frozen=True)
class Costs:
    """Per-event and per-item costs, measured by ``bench/scale.py`` (``source``: the file)."""

    cpu_s_per_event: float
    worker_base_rss_bytes: float
    bank_bytes_per_entry: float
    pdq_index_bytes_per_hash: float
    stream_state_bytes: float
    frames_per_message: int = 1
    source: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


def load_costs(path: Path | None = None) -> Costs:
    """The costs in ``path`` (default: the file shipped with StreamSafe); a one-line error when
    the file is missing, not JSON, or lacks a cost."""
    path = path or DEFAULT_COSTS
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise StreamSafeError(f"cannot read the costs file {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise StreamSafeError(f"the costs file {path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise StreamSafeError(f"the costs file {path} is not a JSON object")
    bad = [k for k in _COST_FIELDS if not _positive_number(doc.get(k))]
    if bad:
        raise StreamSafeError(f"the costs file {path} lacks a positive number for {', '.join(bad)} "
                              "(write it with bench/scale.py --save-costs)")
    return Costs(**{k: float(doc[k]) for k in _COST_FIELDS}, frames_per_message=int(doc.get("frames_per_message", 1)),
                 source=str(path), provenance=dict(doc.get("provenance") or {}))


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Demand:
    """What a deployment must carry; rates are per live stream."""

    streams: int
    fps: float
    signals_per_s: float
    bank: int
    metadata_per_s: float = 0.1
    reports_per_s: float = 0.01
    frames_per_message: int = 1
    target_utilisation: float = 0.6


def _number(name: str, text: object, *, whole: bool = False, zero: bool = False, most: float | None = None) -> Any:
    try:
        value = int(str(text)) if whole else float(str(text))
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise StreamSafeError(f"--{name} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or (most is not None and value > most):
        bound = f" and at most {most}" if most is not None else ""
        raise StreamSafeError(f"--{name} must be {'at least 0' if zero else 'more than 0'}{bound}, got {text!r}")
    return value


def parse_demand(streams: object, fps: object, signals_per_s: object, bank: object, metadata_per_s: object = 0.1,
                 reports_per_s: object = 0.01, frames_per_message: object = 1,
                 target_utilisation: object = 0.6) -> Demand:
    """A :class:`Demand` from command-line text; a one-line error naming the option otherwise."""
    return Demand(streams=_number("streams", streams, whole=True), fps=_number("fps", fps, zero=True),
                  signals_per_s=_number("signals-per-s", signals_per_s, zero=True),
                  bank=_number("bank", bank, whole=True, zero=True),
                  metadata_per_s=_number("metadata-per-s", metadata_per_s, zero=True),
                  reports_per_s=_number("reports-per-s", reports_per_s, zero=True),
                  frames_per_message=_number("frames-per-message", frames_per_message, whole=True, most=64),
                  target_utilisation=_number("target-utilisation", target_utilisation, most=1.0))


@dataclass(frozen=True)
class Plan:
    demand: Demand
    costs: Costs
    events_per_s: dict[str, float]
    cores: float
    workers: int
    partitions: int
    contract_partitions: int
    partitions_reason: str
    memory_per_worker_bytes: dict[str, float]
    memory_total_bytes: float
    memory_one_down_bytes: float | None

    @property
    def events_total(self) -> float:
        return sum(self.events_per_s.values())

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["events_per_s_total"] = self.events_total
        doc["memory_per_worker_bytes"]["total"] = sum(self.memory_per_worker_bytes.values())
        return doc


def plan(demand: Demand, costs: Costs, contract_partitions: int) -> Plan:
    """Cores, workers, partitions and memory for ``demand`` at ``costs`` (see the module docstring)."""
    s = demand.streams
    events = {"frame-hashes": s * demand.fps / demand.frames_per_message,
              "classifier-signals": s * demand.signals_per_s, "metadata": s * demand.metadata_per_s,
              "user-reports": s * demand.reports_per_s}
    cores = sum(events.values()) * costs.cpu_s_per_event / demand.target_utilisation
    workers = max(1, math.ceil(round(cores, 6)))
    power = 1 << (workers - 1).bit_length()
    if power <= contract_partitions:
        partitions = contract_partitions
        reason = (f"the contract's {contract_partitions} per input topic already give each of the {workers} "
                  f"worker(s) at least one partition")
    else:
        partitions = power
        reason = (f"MORE than the contract's {contract_partitions}: {workers} workers need at least {workers} "
                  f"partitions (a consumer group gives a partition to one worker), rounded up to a power of two "
                  f"so that the count divides evenly as workers double. Raise every input topic together (they "
                  f"are co-partitioned by stream id) before adding workers: a new count moves keys to other "
                  f"partitions (murmur2 % partitions), so change it on drained topics")
    state = costs.stream_state_bytes
    memory = {"base": costs.worker_base_rss_bytes, "banks": demand.bank * costs.bank_bytes_per_entry,
              "stream_state": math.ceil(s / workers) * state}
    one_down = (costs.worker_base_rss_bytes + memory["banks"] + math.ceil(s / (workers - 1)) * state
                if workers > 1 else None)
    return Plan(demand, costs, events, cores, workers, partitions, contract_partitions, reason, memory,
                workers * sum(memory.values()), one_down)


def _gib(n: float) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n / GIB:,.2f} GiB" if n >= GIB else f"{n / 2**20:,.1f} MiB"


def render(p: Plan) -> str:
    """The plan as the lines ``streamsafe capacity`` prints."""
    d, c = p.demand, p.costs
    e = p.events_per_s
    where = c.provenance
    machine = where.get("machine") or {}
    lines = [
        f"Capacity for {d.streams:,} live streams: {d.fps:g} frame(s)/s in {d.frames_per_message}-frame messages, "
        f"{d.signals_per_s:g} classifier signals/s, {d.metadata_per_s:g} metadata events/s and "
        f"{d.reports_per_s:g} user reports/s per stream; banks of {d.bank:,} PDQ entries",
        f"  events      {p.events_total:,.0f}/s = frame-hash messages {e['frame-hashes']:,.0f} + classifier "
        f"signals {e['classifier-signals']:,.0f} + metadata {e['metadata']:,.0f} + user reports "
        f"{e['user-reports']:,.0f}",
        f"  cores       {p.cores:,.1f} = {p.events_total:,.0f}/s x {c.cpu_s_per_event * 1000:.4f} CPU-ms per event "
        f"/ {d.target_utilisation:g} target utilisation (workers only: the brokers are sized apart)",
        f"  workers     {p.workers:,} (one Python process each, at most one core)",
        f"  partitions  {p.partitions:,} per input topic: {p.partitions_reason}",
        f"  memory      {_gib(sum(p.memory_per_worker_bytes.values()))} per worker = base "
        f"{_gib(p.memory_per_worker_bytes['base'])} + banks {_gib(p.memory_per_worker_bytes['banks'])} "
        f"({c.bank_bytes_per_entry:g} B per entry, every worker holds every bank; the PDQ index itself "
        f"{c.pdq_index_bytes_per_hash:g} B per hash) + stream state "
        f"{_gib(p.memory_per_worker_bytes['stream_state'])} ({math.ceil(d.streams / p.workers):,} streams x "
        f"{c.stream_state_bytes:g} B); {_gib(p.memory_total_bytes)} for all {p.workers:,}"
        + (f"; {_gib(p.memory_one_down_bytes)} per worker with one down" if p.memory_one_down_bytes else ""),
        f"  costs       {c.source}: measured {where.get('measured_at', 'at an unknown time')} by "
        f"{where.get('command', 'an unknown command')} at {where.get('head', '?')} on {machine.get('cores', '?')} "
        f"cores of {machine.get('cpu', 'an unknown CPU')} ({machine.get('os', '?')}; Python "
        f"{machine.get('python', '?')}), with {c.frames_per_message}-frame messages of the realistic mix",
    ]
    if d.frames_per_message != c.frames_per_message:
        lines.append(f"  note        the costs were measured with {c.frames_per_message}-frame messages: a "
                     f"{d.frames_per_message}-frame message costs more than one, so these cores are a lower bound")
    return "\n".join(lines)
