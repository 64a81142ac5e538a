"""Benchmark: StreamSafe's exact PDQ index against python-threatexchange's PDQ index.

One run builds, for each bank size N, a bank of random PDQ hashes with clustered
near-duplicates and a lookup mix (perturbed members with 0..40 flipped bits, and
random hashes), then measures each method on the same data, each in a fresh worker
process so that its resident memory can be attributed to it:

* build time, single-thread lookups per second through the method's one-hash API
  (``query``), p50/p99 latency per lookup, and batch lookups per second;
* RSS growth over the build (MB) and the index's own array bytes where known;
* recall and false matches at radius 31 against a numpy brute force on a sample of
  queries (recall must be 1.0, false matches 0: both indexes claim to be exact);
* how long an update takes to become matchable: add a hash, look it up until found;
  remove it, look it up until gone. pytx's index has no remove; rebuilding it is the
  only way, so its remove time is its build time (flagged ``remove_via_rebuild``);
* for StreamSafe's index, frames with their eight dihedral PDQ variants (the frame and
  seven hashes unrelated to the bank, as a frame's mirror images and turns mostly are):
  frames per second with eight ``query`` calls per frame, with one ``query_batch`` of
  the eight (what the screen does), and with a consumer batch of frames x 8 in one
  call, next to the same frames without variants; the batched results are checked
  against the eight single lookups.

Output with ``--json``: one JSON line per (method, n), then
``{"ratio_vs_pytx": {n: ours_lookups_per_s / pytx_lookups_per_s}, ...,
"dihedral_cost": {n: {frames/s without variants over frames/s with them, per way}}}``.

Usage: python bench/matching.py --sizes 1000000,10000000 --json
(pytx's index needs the bench extras: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from matching_data import make_bank, make_queries  # noqa: E402

RADIUS = 31
OURS = "streamsafe_mih"
PYTX = "pytx_PDQIndex"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hexes(words: npt.NDArray[np.uint64]) -> list[str]:
    raw = np.ascontiguousarray(words).astype(">u8").tobytes()
    return [raw[i : i + 32].hex() for i in range(0, len(raw), 32)]


def _truth(
    bank_hashes: npt.NDArray[np.uint64], bank_ids: npt.NDArray[np.int64], queries: npt.NDArray[np.uint64]
) -> list[dict[int, int]]:
    """Brute force (numpy, independent of both indexes): per query, {entry id: distance}."""
    out = []
    for q in queries:
        d = np.bitwise_count(np.bitwise_xor(bank_hashes, q[None, :])).sum(axis=1, dtype=np.int64)
        rows = np.flatnonzero(d <= RADIUS)
        out.append(dict(zip(bank_ids[rows].tolist(), d[rows].tolist(), strict=True)))
    return out


def _score(found: list[dict[int, int]], truth: list[dict[int, int]]) -> tuple[float, int]:
    """(recall, false matches): a false match is a reported id not within the radius
    or reported with a wrong distance."""
    expected = sum(len(t) for t in truth)
    hit = sum(1 for f, t in zip(found, truth, strict=True) for i in t if i in f and f[i] == t[i])
    false = sum(1 for f, t in zip(found, truth, strict=True) for i, d in f.items() if t.get(i) != d)
    return (hit / expected if expected else 1.0), false


def _latencies(fn: Any, items: list[Any]) -> tuple[float, float, float, list[Any]]:
    """Call ``fn`` on each item; returns (lookups/s, p50 ms, p99 ms, results)."""
    times = np.empty(len(items))
    results = []
    clock = time.perf_counter
    start = clock()
    for i, item in enumerate(items):
        t0 = clock()
        results.append(fn(item))
        times[i] = clock() - t0
    total = clock() - start
    return (
        len(items) / total,
        float(np.percentile(times, 50) * 1e3),
        float(np.percentile(times, 99) * 1e3),
        results,
    )


# ---------------------------------------------------------------------------------------
# workers (one process per method and size)
# ---------------------------------------------------------------------------------------


def _worker_ours(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from streamsafe.matching.pdq import PDQIndex

    ids = np.load(data / "ids.npy")
    hashes = np.load(data / "hashes.npy")
    queries = np.load(data / "queries.npy")
    warm = np.load(data / "warmup.npy")
    sample = queries[: args.recall_sample]
    truth = _truth(hashes, ids, sample)
    query_hex = _hexes(queries[: args.queries])

    # Load the compiled kernels first, so that JIT memory is not counted as the index's.
    warm_index = PDQIndex(max_delta=0)
    warm_index.add_many(ids[:1000], hashes[:1000])
    warm_index.add(-1, hashes[0])
    warm_index.query_batch_arrays(warm[:10])
    del warm_index

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index = PDQIndex()
    index.add_many(ids, hashes)
    build_s = time.perf_counter() - t0
    rss_mb = _rss_mb() - rss0
    del hashes

    index.query_batch_arrays(warm)  # JIT (cached) and page/TLB warm-up, untimed
    lps, p50, p99, results = _latencies(lambda h: index.query(h, RADIUS), query_hex)
    t0 = time.perf_counter()
    for lo in range(0, len(queries), args.batch):
        index.query_batch_arrays(queries[lo : lo + args.batch], RADIUS)
    batch_lps = len(queries) / (time.perf_counter() - t0)
    dihedral = _dihedral_lookups(index, queries[: args.queries], args)

    found = [dict(r) for r in results[: len(sample)]]
    qidx, bids, bdist = index.query_batch_arrays(sample, RADIUS)
    found_batch: list[dict[int, int]] = [{} for _ in range(len(sample))]
    for q, i, d in zip(qidx.tolist(), bids.tolist(), bdist.tolist(), strict=True):
        found_batch[q][i] = d
    recall, false = _score(found, truth)
    recall_b, false_b = _score(found_batch, truth)

    rng = np.random.default_rng(7)
    adds, removes = [], []
    next_id = int(ids.max()) + 1
    for _ in range(args.updates):
        new_hex = _hexes(
            rng.integers(0, np.iinfo(np.uint64).max, size=(1, 4), dtype=np.uint64, endpoint=True)
        )[0]
        t0 = time.perf_counter()
        index.add(next_id, new_hex)
        while next_id not in {i for i, _ in index.query(new_hex, RADIUS)}:
            pass
        t1 = time.perf_counter()
        index.remove(next_id)
        while next_id in {i for i, _ in index.query(new_hex, RADIUS)}:
            pass
        t2 = time.perf_counter()
        adds.append(t1 - t0)
        removes.append(t2 - t1)
        next_id += 1
    add_ms = statistics.median(adds) * 1e3
    remove_ms = statistics.median(removes) * 1e3
    return {
        "build_s": build_s,
        "lookups_per_s": lps,
        "p50_ms": p50,
        "p99_ms": p99,
        "rss_mb": rss_mb,
        "recall": min(recall, recall_b),
        "false_matches": false + false_b,
        "update_visible_ms": add_ms + remove_ms,
        "add_visible_ms": add_ms,
        "remove_visible_ms": remove_ms,
        "batch_lookups_per_s": batch_lps,
        **dihedral,
        "index_mb": index.nbytes / 2**20,
        "widths": list(index.widths),
        "lookups_timed": len(query_hex),
        "recall_sample": len(sample),
        "true_matches_in_sample": sum(len(t) for t in truth),
    }


def _dihedral_lookups(index: Any, queries: npt.NDArray[np.uint64], args: argparse.Namespace) -> dict[str, Any]:
    """Frames/s when each frame brings its eight dihedral variants: eight ``query`` calls,
    one ``query_batch`` of eight, and ``args.batch`` frames x 8 in one call."""
    rng = np.random.default_rng(args.seed + 3)
    others = rng.integers(0, np.iinfo(np.uint64).max, size=(len(queries), 7, 4), dtype=np.uint64, endpoint=True)
    frames = np.ascontiguousarray(np.concatenate([queries[:, None, :], others], axis=1))  # [frames, 8, 4]
    hexes = [_hexes(f) for f in frames]
    t0 = time.perf_counter()
    probes = [[index.query(h, RADIUS) for h in eight] for eight in hexes]
    probes_fps = len(hexes) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    batched = [index.query_batch(eight, RADIUS) for eight in hexes]
    batched_fps = len(hexes) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for lo in range(0, len(frames), args.batch):
        index.query_batch_arrays(frames[lo : lo + args.batch].reshape(-1, 4), RADIUS)
    consumer_fps = len(frames) / (time.perf_counter() - t0)
    same = all(sorted((q, i, d) for q, found in enumerate(p) for i, d in found) == sorted(b)
               for p, b in zip(probes, batched, strict=True))
    return {"dihedral_frames_per_s_8_probes": probes_fps, "dihedral_frames_per_s_8_batched": batched_fps,
            "dihedral_batch_frames_per_s": consumer_fps, "dihedral_batched_same_as_probes": same,
            "dihedral_frames_timed": len(hexes)}


def _worker_pytx(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex
    from threatexchange.signal_type.pdq.signal import PdqSignal

    faiss.omp_set_num_threads(1)  # single thread, like ours
    assert PdqSignal.get_index_cls() is PDQIndex  # the index pytx itself uses for PDQ
    ids = np.load(data / "ids.npy")
    hashes = np.load(data / "hashes.npy")
    queries = np.load(data / "queries.npy")[: args.pytx_queries]
    sample = queries[: min(args.recall_sample, args.pytx_queries)]
    truth = _truth(hashes, ids, sample)
    entries = list(zip(_hexes(hashes), ids.tolist(), strict=True))
    query_hex = _hexes(queries)
    del hashes

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    index = PDQIndex(entries)
    build_s = time.perf_counter() - t0
    rss_mb = _rss_mb() - rss0

    for h in _hexes(np.load(data / "warmup.npy")[:20]):
        index.query(h)
    lps, p50, p99, results = _latencies(index.query, query_hex)
    t0 = time.perf_counter()
    index.index.search_with_distance_in_result(query_hex, PdqSignal.get_index_cls().get_match_threshold())
    batch_lps = len(query_hex) / (time.perf_counter() - t0)

    found = [{int(m.metadata): int(m.similarity_info.distance) for m in r} for r in results[: len(sample)]]
    recall, false = _score(found, truth)

    rng = np.random.default_rng(7)
    adds = []
    next_id = int(ids.max()) + 1
    for _ in range(max(1, min(args.updates, 3))):  # each add rebuilds a map of all N ids
        new_hex = _hexes(
            rng.integers(0, np.iinfo(np.uint64).max, size=(1, 4), dtype=np.uint64, endpoint=True)
        )[0]
        t0 = time.perf_counter()
        index.add(new_hex, next_id)
        while next_id not in {int(m.metadata) for m in index.query(new_hex)}:
            pass
        adds.append(time.perf_counter() - t0)
        next_id += 1
    add_ms = statistics.median(adds) * 1e3
    remove_ms = build_s * 1e3  # no remove in pytx's PDQIndex: rebuild without the entry
    return {
        "build_s": build_s,
        "lookups_per_s": lps,
        "p50_ms": p50,
        "p99_ms": p99,
        "rss_mb": rss_mb,
        "recall": recall,
        "false_matches": false,
        "update_visible_ms": add_ms + remove_ms,
        "add_visible_ms": add_ms,
        "remove_visible_ms": remove_ms,
        "remove_via_rebuild": True,
        "batch_lookups_per_s": batch_lps,
        "lookups_timed": len(query_hex),
        "recall_sample": len(sample),
        "true_matches_in_sample": sum(len(t) for t in truth),
    }


WORKERS = {OURS: _worker_ours, PYTX: _worker_pytx}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "numba", "llvmlite", "threatexchange", "faiss-cpu"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _run_worker(method: str, n: int, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--data",
        str(data),
        "--queries",
        str(args.queries),
        "--pytx-queries",
        str(args.pytx_queries),
        "--recall-sample",
        str(args.recall_sample),
        "--batch",
        str(args.batch),
        "--updates",
        str(args.updates),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    line: dict[str, Any] = {"method": method, "n": n}
    if proc.returncode != 0:
        line["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return line
    line.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in line.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated bank sizes")
    parser.add_argument("--json", action="store_true", help="JSON lines only on stdout")
    parser.add_argument("--methods", default=f"{OURS},{PYTX}")
    parser.add_argument("--queries", type=int, default=20_000, help="lookups timed for our index")
    parser.add_argument("--pytx-queries", type=int, default=200, help="lookups timed for pytx (slow at 10M)")
    parser.add_argument("--recall-sample", type=int, default=200, help="queries checked against brute force")
    parser.add_argument("--batch", type=int, default=256, help="frames per query_batch call")
    parser.add_argument("--updates", type=int, default=50, help="add/remove rounds timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = WORKERS[args.worker](Path(args.data), args)
        print(json.dumps(result))
        return 0

    methods = [m for m in args.methods.split(",") if m]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    lines: list[dict[str, Any]] = []
    if not args.json:
        print(json.dumps({"versions": _versions()}), file=sys.stderr)
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="pdq-bench-") as tmp:
            data = Path(tmp)
            t0 = time.perf_counter()
            bank = make_bank(n, seed=args.seed)
            n_queries = max(args.queries, args.pytx_queries, args.recall_sample)
            np.save(data / "ids.npy", bank.ids)
            np.save(data / "hashes.npy", bank.hashes)
            np.save(data / "queries.npy", make_queries(bank, n_queries, seed=args.seed + 1))
            np.save(data / "warmup.npy", make_queries(bank, 2_000, seed=args.seed + 2))
            del bank
            print(f"n={n}: data in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            for method in methods:
                t0 = time.perf_counter()
                line = _run_worker(method, n, data, args)
                print(f"n={n} {method}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
                lines.append(line)
                print(json.dumps(line), flush=True)
    ratios = {}
    batch_ratios = {}
    for n in sizes:
        by = {ln["method"]: ln for ln in lines if ln["n"] == n and "error" not in ln}
        if OURS in by and PYTX in by:
            ratios[str(n)] = round(by[OURS]["lookups_per_s"] / by[PYTX]["lookups_per_s"], 1)
            batch_ratios[str(n)] = round(by[OURS]["batch_lookups_per_s"] / by[PYTX]["batch_lookups_per_s"], 1)
    dihedral_cost = {}
    for ln in lines:
        if ln["method"] == OURS and "error" not in ln:
            dihedral_cost[str(ln["n"])] = {
                "8_probes": round(ln["lookups_per_s"] / ln["dihedral_frames_per_s_8_probes"], 2),
                "8_batched": round(ln["lookups_per_s"] / ln["dihedral_frames_per_s_8_batched"], 2),
                "consumer_batch": round(ln["batch_lookups_per_s"] / ln["dihedral_batch_frames_per_s"], 2)}
    print(json.dumps({"ratio_vs_pytx": ratios, "batch_ratio_vs_pytx": batch_ratios,
                      "dihedral_cost": dihedral_cost}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
