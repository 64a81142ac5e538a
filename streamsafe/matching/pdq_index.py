"""Placeholder exact PDQ index (brute force with numpy); replaced by the
multi-index-hashing index. Same interface: int entry ids, hex hashes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["PDQIndex", "hex_to_words"]


def hex_to_words(hexes: Iterable[str]) -> np.ndarray:
    return np.array([[int(h[i:i + 16], 16) for i in range(0, 64, 16)] for h in hexes],
                    dtype=np.uint64).reshape(-1, 4)


class PDQIndex:
    def __init__(self, *, max_radius: int = 31) -> None:
        self._ids = np.empty(0, np.int64)
        self._words = np.empty((0, 4), np.uint64)
        self._alive = np.empty(0, bool)
        self.needs_compaction = False

    def __len__(self) -> int:
        return int(self._alive.sum())

    def add_many(self, ids: Sequence[int], hashes: Sequence[str]) -> None:
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)])
        self._words = np.concatenate([self._words, hex_to_words(hashes)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])

    def remove(self, entry_id: int) -> bool:
        hit = (self._ids == entry_id) & self._alive
        self._alive[hit] = False
        return bool(hit.any())

    def compact(self) -> None:
        pass

    def query_batch(self, hashes: Sequence[str], radius: int) -> list[tuple[int, int, int]]:
        out = []
        for i, words in enumerate(hex_to_words(hashes)):
            x = np.bitwise_xor(self._words, words)
            distance = np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1)
            for row in np.nonzero((distance <= radius) & self._alive)[0]:
                out.append((i, int(self._ids[row]), int(distance[row])))
        return out
