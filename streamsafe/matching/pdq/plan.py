"""The multi-index plan: chunk widths, flip budgets and the static slot tables.

The 256 bits are split into ``m`` contiguous chunks; each chunk is a direct-address
slot table over the bank, probed with every flip mask its budget allows (see the
package docstring for why this is exact). ``auto_widths`` picks the chunks from a cost
model, ``StaticTables`` builds and holds the tables, and ``StaticTables.plan`` gives the
lookup kernel its per-chunk parameters for one radius.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamsafe.matching.pdq.kernels import MAX_ROWS, build_chunk
from streamsafe.matching.pdq.words import PDQ_CONFIDENT_MATCH_THRESHOLD, WordArray

__all__ = ["MAX_WIDTH", "MIN_WIDTH", "StaticTables", "auto_widths"]

MAX_WIDTH = 26  # a 2**26-slot table is 256 MiB; wider chunks would need hashed tables
MIN_WIDTH = 4


def _split(bits: int, m: int) -> tuple[int, ...]:
    base, extra = divmod(bits, m)
    return tuple([base + 1] * extra + [base] * (m - extra))


def _probe_count(width: int, flips: int) -> int:
    return sum(math.comb(width, k) for k in range(flips + 1)) if flips >= 0 else 0


def _chunk_radii(widths: Sequence[int], radius: int, n: int) -> list[int]:
    """Per-chunk flip budgets that still guarantee exactness (refined pigeonhole):
    ``a + 1`` chunks get ``q`` flips, the others ``q - 1``, where ``radius = m*q + a``.
    The reduced budget goes to the chunks that are dearest to probe at ``q`` flips."""
    m = len(widths)
    q, a = divmod(radius, m)

    def cost(w: int) -> float:
        return _probe_count(w, q) * (1.0 + n / float(1 << w))

    order = sorted(range(m), key=lambda c: cost(widths[c]))  # cheapest first
    radii = [q - 1] * m
    for c in order[: a + 1]:
        radii[c] = q
    return radii


def auto_widths(n: int, radius: int = PDQ_CONFIDENT_MATCH_THRESHOLD) -> tuple[int, ...]:
    """Chunk widths for a bank of ``n`` hashes, from a cost model of one lookup.

    A lookup reads one slot per probe and one row (plus, for multi-row buckets, an
    overflow run) per candidate, and measured costs per probe and per candidate are
    alike (4-9 ns each at 300k-10M). The model picks the measured-fastest chunk count
    on the benchmark banks at 100k (16 chunks), 300k (16), 1M (12), 3M (11) and 10M
    (11 chunks of 23-24 bits). Widths are capped at 24 bits (64 MiB slot tables) and
    all slot tables together at ``max(64 MiB, 192 bytes * n)``; bits left uncovered
    still count in the final distance, so exactness never depends on them.
    """
    n = max(int(n), 1)
    budget = max(64 << 20, 192 * n)
    best: tuple[float, tuple[int, ...]] | None = None
    for m in range(8, 33):
        widths = _split(256, m)
        if widths[0] > 24:
            widths = (24,) * m
        if sum(4 << w for w in widths) > budget:
            continue
        radii = _chunk_radii(widths, radius, n)
        cost = 0.0
        for w, r in zip(widths, radii, strict=True):
            cost += _probe_count(w, r) * (1.0 + n / float(1 << w))
        if best is None or cost < best[0]:
            best = (cost, widths)
    assert best is not None  # m = 32 (8-bit chunks) always fits the budget
    return best[1]


def _starts(widths: Sequence[int]) -> list[int]:
    return list(itertools.accumulate([0, *widths[:-1]]))


def _flip_masks(width: int, flips: int) -> npt.NDArray[np.uint32]:
    """Every XOR mask of ``width`` bits with at most ``flips`` bits set, fewest first."""
    masks = [0]
    for k in range(1, flips + 1):
        for combo in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in combo))
    return np.asarray(masks, dtype=np.uint32)


@dataclass(eq=False)
class StaticTables:
    """Bulk-built, read-only MIH tables over rows sorted by entry id (so that a remove
    finds its row by binary search, with no id->row map to hold in memory). Only
    ``dead`` and ``live`` change after the build (tombstones)."""

    ids: npt.NDArray[np.int64]
    hashes: WordArray  # 64-byte aligned
    dead: npt.NDArray[np.uint8]
    widths: tuple[int, ...]
    slots: npt.NDArray[np.uint32] = field(repr=False)
    slot_base: list[int] = field(repr=False)
    runs: npt.NDArray[np.uint32] = field(repr=False)
    run_base: list[int] = field(repr=False)
    masks: npt.NDArray[np.uint32] = field(repr=False)
    mask_base: list[int] = field(repr=False)
    mask_counts: dict[int, list[int]] = field(repr=False)  # width -> masks with <= k flips
    live: int = 0
    _plans: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, ids: npt.NDArray[np.int64], hashes: WordArray, widths: Sequence[int], max_radius: int
    ) -> StaticTables:
        """Build from unique ids in ascending order and their rows (aligned)."""
        n = int(ids.shape[0])
        if n >= MAX_ROWS:
            raise ValueError(f"the static index holds fewer than {MAX_ROWS} entries")
        widths = tuple(int(w) for w in widths)
        m = len(widths)
        starts = _starts(widths)
        sizes = [1 << w for w in widths]
        slot_base = list(itertools.accumulate([0, *sizes[:-1]]))
        slots = np.empty(sum(sizes), dtype=np.uint32)
        offsets = np.empty(max(sizes) + 1, dtype=np.uint32)  # counting-sort scratch, reused
        postings = np.empty(n, dtype=np.uint32)
        hflat = hashes.reshape(-1)
        chunk_runs: list[npt.NDArray[np.uint32]] = []
        for c, w in enumerate(widths):
            runs_c, fits = build_chunk(
                hflat,
                n,
                starts[c],
                w,
                offsets[: sizes[c] + 1],
                postings,
                slots[slot_base[c] : slot_base[c] + sizes[c]],
            )
            if not fits:
                raise ValueError(f"a {w}-bit chunk over {n} entries spills too many rows; use wider chunks")
            chunk_runs.append(runs_c)
        del offsets, postings
        run_base = list(itertools.accumulate([0, *[r.size for r in chunk_runs[:-1]]]))
        runs = np.concatenate(chunk_runs)
        del chunk_runs

        max_flips = max_radius // m
        mask_arrays: list[npt.NDArray[np.uint32]] = []
        mask_base: list[int] = []
        mask_counts: dict[int, list[int]] = {}
        by_width: dict[int, int] = {}
        cursor = 0
        for w in widths:
            if w not in by_width:
                masks_w = _flip_masks(w, max_flips)
                by_width[w] = cursor
                mask_arrays.append(masks_w)
                cursor += masks_w.shape[0]
                mask_counts[w] = [_probe_count(w, k) for k in range(max_flips + 1)]
            mask_base.append(by_width[w])
        return cls(
            ids=ids,
            hashes=hashes,
            dead=np.zeros(n, dtype=np.uint8),
            widths=widths,
            slots=slots,
            slot_base=slot_base,
            runs=runs,
            run_base=run_base,
            masks=np.concatenate(mask_arrays),
            mask_base=mask_base,
            mask_counts=mask_counts,
            live=n,
        )

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        arrays = (self.ids, self.hashes, self.dead, self.slots, self.runs, self.masks)
        return int(sum(a.nbytes for a in arrays))

    def row_of(self, entry_id: int) -> int:
        """Row of a live entry, or -1."""
        row = int(np.searchsorted(self.ids, entry_id))
        if row < self.n and int(self.ids[row]) == entry_id and not self.dead[row]:
            return row
        return -1

    def plan(self, radius: int) -> npt.NDArray[np.int64]:
        """The kernel's per-chunk parameters for one lookup radius (cached)."""
        plan = self._plans.get(radius)
        if plan is None:
            flips = _chunk_radii(self.widths, radius, self.n)
            nprobe = [
                self.mask_counts[w][f] if f >= 0 else 0 for w, f in zip(self.widths, flips, strict=True)
            ]
            rows = [
                _starts(self.widths),
                self.widths,
                flips,
                nprobe,
                self.slot_base,
                self.run_base,
                self.mask_base,
            ]
            plan = np.ascontiguousarray(np.array(rows, dtype=np.int64))
            self._plans[radius] = plan
        return plan
