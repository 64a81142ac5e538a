"""Synthetic PDQ banks and query mixes for benchmarks and tests.

Real banks are not uniform: many entries are variants of the same image (re-encodes,
crops, watermarks), which shows up as clusters of hashes a few bits apart. Such
clusters make some MIH buckets heavy and some queries return many matches, so a
benchmark on uniform random hashes alone would flatter any index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Bank", "flip_bits", "make_bank", "make_queries"]


@dataclass(frozen=True)
class Bank:
    ids: npt.NDArray[np.int64]
    hashes: npt.NDArray[np.uint64]  # [n, 4]
    clustered: npt.NDArray[np.bool_]  # row is a near-duplicate variant of a cluster centre


def flip_bits(
    hashes: npt.NDArray[np.uint64], flips: npt.NDArray[np.int64], rng: np.random.Generator
) -> npt.NDArray[np.uint64]:
    """Copy of ``hashes`` with exactly ``flips[i]`` distinct random bits of row ``i`` flipped."""
    out = hashes.copy()
    n = hashes.shape[0]
    kmax = int(flips.max(initial=0))
    if kmax == 0:
        return out
    batch = 65_536
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        # distinct positions per row: the first k of a random permutation of 0..255
        keys = rng.random((hi - lo, 256), dtype=np.float32)
        positions = (
            np.argpartition(keys, kmax - 1, axis=1)[:, :kmax] if kmax < 256 else np.argsort(keys, axis=1)
        )
        use = np.arange(kmax)[None, :] < flips[lo:hi, None]
        rows = np.broadcast_to(np.arange(lo, hi)[:, None], positions.shape)[use]
        pos = positions[use]
        bit = np.uint64(1) << (np.uint64(63) - (pos % 64).astype(np.uint64))
        np.bitwise_xor.at(out, (rows, pos // 64), bit)
    return out


def make_bank(
    n: int,
    seed: int = 0,
    clustered_fraction: float = 0.10,
    cluster_size: int = 20,
    max_variant_flips: int = 16,
) -> Bank:
    """``n`` hashes: uniform random ones plus ``clustered_fraction`` of near-duplicates
    (clusters of ``cluster_size`` variants of a centre, each 1..``max_variant_flips``
    bits away from it). Ids are a shuffled, sparse range so that ids != row numbers."""
    rng = np.random.default_rng(seed)
    n_clustered = int(n * clustered_fraction)
    n_random = n - n_clustered
    hashes = np.empty((n, 4), dtype=np.uint64)
    hashes[:n_random] = rng.integers(
        0, np.iinfo(np.uint64).max, size=(n_random, 4), dtype=np.uint64, endpoint=True
    )
    if n_clustered:
        n_centres = max(1, n_clustered // cluster_size)
        centres = rng.integers(
            0, np.iinfo(np.uint64).max, size=(n_centres, 4), dtype=np.uint64, endpoint=True
        )
        which = rng.integers(0, n_centres, size=n_clustered)
        flips = rng.integers(1, max_variant_flips + 1, size=n_clustered)
        hashes[n_random:] = flip_bits(centres[which], flips, rng)
    clustered = np.zeros(n, dtype=bool)
    clustered[n_random:] = True
    order = rng.permutation(n)
    ids = rng.permutation(n).astype(np.int64) * 7 + 1_000_003
    return Bank(ids=ids, hashes=np.ascontiguousarray(hashes[order]), clustered=clustered[order])


def make_queries(
    bank: Bank, count: int, seed: int = 1, member_fraction: float = 0.5, max_flips: int = 40
) -> npt.NDArray[np.uint64]:
    """A lookup mix: ``member_fraction`` are bank entries with k random bits flipped
    (k uniform in 0..``max_flips``, so some are within radius 31 and some beyond), half
    of them drawn from the clustered tail; the rest are uniform random hashes."""
    rng = np.random.default_rng(seed)
    n = bank.hashes.shape[0]
    n_members = int(count * member_fraction)
    rows = rng.integers(0, n, size=n_members)
    clustered_rows = np.flatnonzero(bank.clustered)
    if clustered_rows.size:
        half = n_members // 2
        rows[:half] = clustered_rows[rng.integers(0, clustered_rows.size, size=half)]
    queries = np.empty((count, 4), dtype=np.uint64)
    if n_members:
        flips = rng.integers(0, max_flips + 1, size=n_members)
        queries[:n_members] = flip_bits(bank.hashes[rows], flips, rng)
    queries[n_members:] = rng.integers(
        0, np.iinfo(np.uint64).max, size=(count - n_members, 4), dtype=np.uint64, endpoint=True
    )
    return np.ascontiguousarray(queries[rng.permutation(count)])
