"""``PDQIndex``: the static tables plus a delta buffer, with live adds, removes and
compaction (see the package docstring for the design)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from streamsafe.matching.pdq.kernels import gather_rows, lookup, lookup_holding_gil
from streamsafe.matching.pdq.plan import MAX_WIDTH, MIN_WIDTH, StaticTables, auto_widths
from streamsafe.matching.pdq.words import (
    PDQ_CONFIDENT_MATCH_THRESHOLD,
    HashInput,
    WordArray,
    aligned_rows,
    one_hex,
    to_words,
)

__all__ = ["DEFAULT_MAX_DELTA", "PDQIndex", "warm_up"]

DEFAULT_MAX_DELTA = 16_384
"""Delta rows beyond which the index wants compaction: every lookup scans the whole
delta (~32 bytes a row), so its size bounds what recent adds cost each frame."""

SMALL_DELTA = 1_024
"""Below ``max_delta``, a delta larger than this and than 1/64 of the static rows also
wants compaction. The scan of a full delta costs far more than the static lookup on a
small bank: at 100k entries, 16k delta rows took a batched lookup from 7.5 to 37 us a
hash, where the rebuild that removes them takes ~45 ms in a thread; at 10M entries the
rebuild takes seconds, and the bound stays ``max_delta``."""


HOLD_GIL_BELOW = 64
"""Lookups of fewer hashes than this keep the GIL. Releasing it is worth it for a large
batch (other threads run meanwhile), but a few hashes cost tens of microseconds, and
getting the GIL back from a thread that took it meanwhile can cost up to the interpreter's
switch interval: in a worker beside Faust's consumer thread, the pre-filter's slices of
~20 hashes took 85 us of wall time a hash for 17 us of CPU."""


class _Delta:
    """Append-only buffer of recent adds, scanned by brute force. Removal sets a dead
    flag instead of moving rows, so that rows appended after a compaction snapshot
    are exactly those at positions >= the snapshot length."""

    def __init__(self, capacity: int = 1024) -> None:
        self.hashes: WordArray = aligned_rows(capacity)
        self.ids: npt.NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)
        self.dead: npt.NDArray[np.uint8] = np.zeros(capacity, dtype=np.uint8)
        self.n = 0
        self.slot: dict[int, int] = {}  # live entry id -> row

    def append(self, ids: npt.NDArray[np.int64], hashes: WordArray) -> None:
        k = int(ids.shape[0])
        if self.n + k > self.ids.shape[0]:
            capacity = max(2 * self.ids.shape[0], self.n + k)
            # New arrays rather than a resize in place: a lookup running concurrently
            # keeps reading the old ones, which stay valid for the rows it knows about.
            hashes_new = aligned_rows(capacity)
            ids_new = np.zeros(capacity, dtype=np.int64)
            dead_new = np.zeros(capacity, dtype=np.uint8)
            hashes_new[: self.n] = self.hashes[: self.n]
            ids_new[: self.n] = self.ids[: self.n]
            dead_new[: self.n] = self.dead[: self.n]
            self.hashes, self.ids, self.dead = hashes_new, ids_new, dead_new
        self.hashes[self.n : self.n + k] = hashes
        self.ids[self.n : self.n + k] = ids
        self.dead[self.n : self.n + k] = 0
        for offset, entry_id in enumerate(ids.tolist()):
            self.slot[entry_id] = self.n + offset
        self.n += k

    def kill(self, entry_id: int) -> bool:
        row = self.slot.pop(entry_id, None)
        if row is None:
            return False
        self.dead[row] = 1
        return True

    @property
    def live(self) -> int:
        return len(self.slot)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.ids.nbytes + self.dead.nbytes)


class PDQIndex:
    """Exact Hamming-radius index of PDQ hashes with immediate adds and removes.

    Thread safety: every method may be called from any thread. Updates and the state
    swap of ``compact`` are serialised by a lock; lookups hold it only to read a
    consistent snapshot, and run their numba kernel with the GIL released (unless
    they are small: :data:`HOLD_GIL_BELOW`).
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] | None = None,
        max_radius: int = PDQ_CONFIDENT_MATCH_THRESHOLD,
        max_delta: int = DEFAULT_MAX_DELTA,
        auto_compact: bool = False,
    ) -> None:
        """
        Args:
            widths: chunk widths in bits (consecutive chunks from bit 0, at most 256 bits
                in all); ``None`` picks them from the bank size at every (re)build.
            max_radius: the largest radius lookups may ask for; flip masks are
                precomputed for it.
            max_delta: delta rows beyond which ``needs_compaction`` turns true and
                ``add_many`` folds a batch into a rebuild rather than the delta.
            auto_compact: start ``compact_in_background`` whenever an update leaves the
                index needing compaction (and none is running).
        """
        if widths is not None:
            widths = tuple(int(w) for w in widths)
            if not widths or sum(widths) > 256 or not all(MIN_WIDTH <= w <= MAX_WIDTH for w in widths):
                raise ValueError(f"chunk widths must be {MIN_WIDTH}..{MAX_WIDTH} bits, 256 in all at most")
        if not 0 <= max_radius <= 255:
            raise ValueError("max_radius must be 0..255")
        self._widths = widths
        self._max_radius = max_radius
        self.max_delta = max_delta
        self.auto_compact = auto_compact
        self._lock = threading.RLock()
        self._compact_lock = threading.Lock()
        self._compactor: threading.Thread | None = None
        self._static = self._build_static(np.empty(0, np.int64), aligned_rows(0))
        self._delta = _Delta()
        self._removed_during_compaction: list[int] | None = None

    # ---- sizes -------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._static.live + self._delta.live

    def __contains__(self, entry_id: object) -> bool:
        if not isinstance(entry_id, int | np.integer):
            return False
        with self._lock:
            return int(entry_id) in self._delta.slot or self._static.row_of(int(entry_id)) >= 0

    @property
    def widths(self) -> tuple[int, ...]:
        """Chunk widths of the current static tables."""
        return self._static.widths

    @property
    def delta_size(self) -> int:
        """Rows in the delta buffer (live or dead) that every lookup scans."""
        return self._delta.n

    @property
    def needs_compaction(self) -> bool:
        """True once the delta scan or the tombstones cost enough to be worth a rebuild
        (see :data:`SMALL_DELTA`)."""
        with self._lock:
            tombstones = self._static.n - self._static.live
            scan_bound = min(self.max_delta, max(SMALL_DELTA, self._static.n // 64))
            return self._delta.n > scan_bound or tombstones > max(self.max_delta, self._static.n // 4)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays (static tables, delta buffer)."""
        with self._lock:
            return self._static.nbytes + self._delta.nbytes

    # ---- updates -----------------------------------------------------------------

    def add(self, entry_id: int, pdq_hash: HashInput) -> None:
        """Add (or replace) one entry; visible to the next lookup."""
        words = to_words(pdq_hash)
        if words.shape[0] != 1:
            raise ValueError("add takes one hash; use add_many for several")
        self._add_rows(np.asarray([entry_id], dtype=np.int64), words)

    def add_many(self, ids: npt.ArrayLike, hashes: HashInput) -> None:
        """Add (or replace) many entries; ids must be unique within the batch.

        Into an empty index a batch larger than ``max_delta`` is a bulk build (O(N) per
        chunk, about 9 s for 10M entries). Otherwise a batch that fits the delta goes
        there, and a larger one is added and then compacted synchronously.
        """
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        words = to_words(hashes)
        if words.shape[0] != ids_arr.shape[0]:
            raise ValueError(f"{ids_arr.shape[0]} ids for {words.shape[0]} hashes")
        if ids_arr.size == 0:
            return
        order = np.argsort(ids_arr, kind="stable")
        sorted_ids = ids_arr[order]
        if np.any(sorted_ids[1:] == sorted_ids[:-1]):
            raise ValueError("entry ids must be unique within a batch")
        with self._lock:
            small = self._delta.n + ids_arr.size <= self.max_delta
            empty = self._static.live == 0 and self._delta.n == 0
        if empty and not small:
            rows = aligned_rows(ids_arr.size)
            np.take(words, order, axis=0, out=rows)
            static = self._build_static(sorted_ids, rows)
            with self._compact_lock, self._lock:
                # Swap only if nothing was added or compacted meanwhile.
                if self._static.live == 0 and self._delta.n == 0:
                    self._static = static
                    return
        self._add_rows(ids_arr, words)
        if not small:
            self.compact()

    def remove(self, entry_id: int) -> bool:
        """Remove one entry; returns whether it was present. Visible to the next lookup."""
        with self._lock:
            removed = self._remove_locked(int(entry_id))
        self._maybe_compact()
        return removed

    def remove_many(self, ids: Iterable[int]) -> int:
        """Remove entries; returns how many were present."""
        with self._lock:
            count = sum(self._remove_locked(int(i)) for i in ids)
        self._maybe_compact()
        return count

    def _remove_locked(self, entry_id: int) -> bool:
        removed = self._delta.kill(entry_id)
        if not removed:
            row = self._static.row_of(entry_id)
            if row >= 0:
                self._static.dead[row] = 1
                self._static.live -= 1
                removed = True
        if removed and self._removed_during_compaction is not None:
            self._removed_during_compaction.append(entry_id)
        return removed

    def _add_rows(self, ids: npt.NDArray[np.int64], words: WordArray) -> None:
        with self._lock:
            for entry_id in ids.tolist():
                self._remove_locked(entry_id)
            self._delta.append(ids, words)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self.auto_compact and self.needs_compaction:
            with self._lock:
                running = self._compactor is not None and self._compactor.is_alive()
                if not running:
                    self._compactor = self.compact_in_background()

    # ---- lookups -----------------------------------------------------------------

    def query(
        self, pdq_hash: HashInput, radius: int = PDQ_CONFIDENT_MATCH_THRESHOLD
    ) -> list[tuple[int, int]]:
        """Every live entry within ``radius`` of one hash, as ``(entry_id, distance)``
        sorted by distance then id."""
        words = one_hex(pdq_hash) if isinstance(pdq_hash, str) else to_words(pdq_hash)
        if words.shape[0] != 1:
            raise ValueError("query takes one hash; use query_batch for several")
        _, ids, dists = self._lookup(words, radius)
        return list(zip(ids.tolist(), dists.tolist(), strict=True))

    def query_batch(
        self, hashes: HashInput, radius: int = PDQ_CONFIDENT_MATCH_THRESHOLD
    ) -> list[tuple[int, int, int]]:
        """Look up many hashes (e.g. all frames of a segment) in one call; returns
        ``(query_index, entry_id, distance)`` sorted by query, distance, id."""
        qidx, ids, dists = self.query_batch_arrays(hashes, radius)
        return list(zip(qidx.tolist(), ids.tolist(), dists.tolist(), strict=True))

    def query_batch_arrays(
        self, hashes: HashInput, radius: int = PDQ_CONFIDENT_MATCH_THRESHOLD
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``query_batch`` as three numpy arrays (query index, entry id, distance)."""
        return self._lookup(to_words(hashes), radius)

    def _lookup(
        self, queries: WordArray, radius: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if not 0 <= radius <= self._max_radius:
            raise ValueError(f"radius must be 0..{self._max_radius}, got {radius}")
        with self._lock:
            static = self._static
            delta = self._delta
            dn = delta.n
            dhashes, dids, ddead = delta.hashes, delta.ids, delta.dead
            plan = static.plan(radius)
        kernel = lookup_holding_gil if queries.shape[0] < HOLD_GIL_BELOW else lookup
        return kernel(  # type: ignore[no-any-return]
            queries.reshape(-1),
            queries.shape[0],
            radius,
            static.hashes.reshape(-1),
            static.dead,
            static.ids,
            plan,
            static.slots,
            static.runs,
            static.masks,
            dhashes.reshape(-1),
            ddead,
            dids,
            dn,
        )

    # ---- compaction ----------------------------------------------------------------

    def compact(self) -> None:
        """Fold the delta and tombstones into rebuilt static tables.

        The build runs without the lock (lookups and updates go on meanwhile; peak memory
        is about twice the index); updates made during it are replayed at the swap.
        Concurrent calls are serialised.
        """
        with self._compact_lock:
            with self._lock:
                static = self._static
                delta = self._delta
                snap_n = delta.n
                static_rows = np.flatnonzero(static.dead == 0)
                delta_rows = np.flatnonzero(delta.dead[:snap_n] == 0)
                delta_hashes = delta.hashes  # rows < snap_n are never rewritten
                self._removed_during_compaction = []
            try:
                ids = np.concatenate([static.ids[static_rows], delta.ids[delta_rows]])
                order = np.argsort(ids, kind="stable")
                rows = aligned_rows(ids.size)
                gather_rows(static.hashes, static_rows, delta_hashes, delta_rows, order, rows)
                new_static = self._build_static(ids[order], rows)
                del ids, order, rows
            except BaseException:
                with self._lock:
                    self._removed_during_compaction = None
                raise
            with self._lock:
                new_delta = _Delta(max(1024, delta.n - snap_n))
                tail = np.arange(snap_n, delta.n)[delta.dead[snap_n : delta.n] == 0]
                if tail.size:
                    new_delta.append(delta.ids[tail], delta.hashes[tail])
                removed = self._removed_during_compaction or []
                self._removed_during_compaction = None
                for entry_id in removed:
                    row = new_static.row_of(entry_id)
                    if row >= 0:
                        new_static.dead[row] = 1
                        new_static.live -= 1
                self._static = new_static
                self._delta = new_delta

    def compact_in_background(self) -> threading.Thread:
        """Start ``compact`` in a daemon thread and return it (join it to wait)."""
        thread = threading.Thread(target=self.compact, name="pdq-index-compact", daemon=True)
        thread.start()
        return thread

    def _build_static(self, ids: npt.NDArray[np.int64], hashes: WordArray) -> StaticTables:
        n = int(ids.shape[0])
        # An empty static part finds nothing: keep its tables tiny whatever the widths.
        widths = self._widths if self._widths and n else auto_widths(n, self._max_radius)
        return StaticTables.build(ids, hashes, widths, self._max_radius)


def warm_up() -> None:
    """Load (or compile) every numba kernel once, on a throwaway index: the first
    frame after a deploy must not wait seconds for compilation on the event loop."""
    rng = np.random.default_rng(0)
    hashes = [f"{int(v):016x}" * 4 for v in rng.integers(0, 2**62, 64)]
    index = PDQIndex()
    index.add_many(np.arange(32), hashes[:32])
    index.compact()
    index.add_many(np.arange(32, 64), hashes[32:])  # delta rows
    index.remove(0)
    index.query_batch(hashes[:8])  # few: the kernel that keeps the GIL
    index.query_batch(hashes * (HOLD_GIL_BELOW // len(hashes) + 1))  # many: the one that releases it
