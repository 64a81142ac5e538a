"""Tests for pdq_index: the index must agree exactly with brute force, always.

Property tests draw small banks made of near-duplicate clusters (random 256-bit hashes
never come within radius 31 of each other, so uniform banks would test nothing) and
compare every lookup with a brute-force scan, for many chunk layouts and radii, and
through sequences of adds, removes, bulk loads and compactions. Conformance tests use
Meta's reference data (haystack/needles, reference images) when it is present.
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from streamsafe.matching.pdq import (
    PDQ_CONFIDENT_MATCH_THRESHOLD,
    PDQIndex,
    auto_widths,
    bits_to_words,
    brute_force,
    hamming,
    hex_to_words,
    to_words,
    words_to_hex,
)
from streamsafe.matching.pdq.index import HOLD_GIL_BELOW, SMALL_DELTA

MASK64 = (1 << 64) - 1

# Layouts exercised by the property tests: automatic, pytx-like 16x16, many narrow
# chunks, a few wide ones (6 flips per chunk at r=31), and layouts that leave bits
# uncovered (exactness must not depend on covering all 256 bits).
LAYOUTS = [
    None,
    (16,) * 16,
    (8,) * 32,
    (12,) * 5,
    (20,) * 12,
    (4,) * 8,
    (19, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18),
]


def _words(x: int) -> np.ndarray:
    return np.array([(x >> (192 - 64 * i)) & MASK64 for i in range(4)], dtype=np.uint64)


def _flip(x: int, bits: frozenset[int] | set[int]) -> int:
    for b in bits:
        x ^= 1 << (255 - b)  # bit b in MSB-first numbering
    return x


def _expected(model: dict[int, np.ndarray], query: np.ndarray, radius: int) -> list[tuple[int, int]]:
    if not model:
        return []
    ids = np.fromiter(model.keys(), dtype=np.int64, count=len(model))
    bank = np.stack(list(model.values()))
    rows, dists = brute_force(bank, query, radius)
    return sorted(zip(dists.tolist(), ids[rows].tolist(), strict=True))


def _got(index: PDQIndex, query: np.ndarray, radius: int) -> list[tuple[int, int]]:
    return sorted((d, i) for i, d in index.query(query, radius))


centres = st.lists(st.integers(0, 2**256 - 1), min_size=1, max_size=6)
flips = st.sets(st.integers(0, 255), max_size=40)


@st.composite
def banks_and_queries(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    base = draw(centres)
    bank = [
        _flip(base[draw(st.integers(0, len(base) - 1))], draw(flips)) for _ in range(draw(st.integers(0, 60)))
    ]
    bank += draw(st.lists(st.integers(0, 2**256 - 1), max_size=5))
    queries = [
        _flip(base[draw(st.integers(0, len(base) - 1))], draw(flips)) for _ in range(draw(st.integers(1, 8)))
    ]
    queries += draw(st.lists(st.integers(0, 2**256 - 1), max_size=2))
    return bank, queries


# ----------------------------------------------------------------------------------------
# conversions
# ----------------------------------------------------------------------------------------


def test_hex_words_round_trip_msb_first() -> None:
    hexes = ["8" + "0" * 63, "0" * 63 + "1", "0123456789abcdef" * 4]
    words = hex_to_words(hexes)
    assert words[0].tolist() == [1 << 63, 0, 0, 0]  # first hex digit = most significant bits
    assert words[1].tolist() == [0, 0, 0, 1]
    assert words_to_hex(words) == hexes
    assert np.array_equal(to_words(bytes.fromhex("".join(hexes))), words)
    assert np.array_equal(to_words(hexes[2].upper()), words[2:])


@pytest.mark.parametrize("bad", ["0" * 63, "0" * 65, "g" * 64, "00 " + "0" * 61])
def test_hex_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        hex_to_words(bad)


def test_bits_to_words_matches_hex() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=256)
    hex_from_bits = "".join(f"{int(''.join(map(str, bits[i : i + 4])), 2):x}" for i in range(0, 256, 4))
    assert words_to_hex(bits_to_words(bits)) == [hex_from_bits]


@given(st.integers(0, 2**256 - 1), flips)
def test_hamming_counts_flipped_bits(x: int, bits: set[int]) -> None:
    assert hamming(_words(x), _words(_flip(x, bits))).tolist() == [len(bits)]


# ----------------------------------------------------------------------------------------
# exactness against brute force
# ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banks_and_queries(), st.integers(0, 31), st.sampled_from(LAYOUTS), st.booleans())
def test_matches_brute_force(
    data: tuple[list[int], list[int]], radius: int, widths: tuple[int, ...] | None, bulk: bool
) -> None:
    bank, queries = data
    # bulk: straight into the static tables; otherwise through the delta buffer
    index = PDQIndex(widths=widths, max_delta=0 if bulk else 10_000)
    ids = np.arange(len(bank), dtype=np.int64) * 3 - 50  # ids are not row numbers, may be negative
    model = {int(i): _words(h) for i, h in zip(ids, bank, strict=True)}
    if bank:
        index.add_many(ids, np.stack([_words(h) for h in bank]))
    assert len(index) == len(bank)
    qwords = np.stack([_words(q) for q in queries])
    for q in qwords:
        assert _got(index, q, radius) == _expected(model, q, radius)
    batch = index.query_batch(qwords, radius)
    assert batch == sorted(batch, key=lambda t: (t[0], t[2], t[1]))  # query, distance, id
    expected_batch = [(qi, i, d) for qi, q in enumerate(qwords) for d, i in _expected(model, q, radius)]
    assert sorted(batch) == sorted(expected_batch)


@settings(max_examples=100, deadline=None)
@given(banks_and_queries(), st.sampled_from(LAYOUTS))
def test_results_after_compact_match_brute_force(
    data: tuple[list[int], list[int]], widths: tuple[int, ...] | None
) -> None:
    bank, queries = data
    index = PDQIndex(widths=widths)
    model: dict[int, np.ndarray] = {}
    for i, h in enumerate(bank):
        index.add(i, _words(h))
        model[i] = _words(h)
    for i in range(0, len(bank), 3):
        assert index.remove(i)
        del model[i]
    index.compact()
    assert index.delta_size == 0
    for q in queries:
        assert _got(index, _words(q), 31) == _expected(model, _words(q), 31)


def test_layouts_cover_pigeonhole_edge_radii() -> None:
    """Entries at exactly the radius, spread evenly over all chunks, must be found."""
    rng = np.random.default_rng(11)
    for widths in [(16,) * 16, (24, 24, 24, 23, 23, 23, 23, 23, 23, 23, 23), (20,) * 12]:
        starts = np.cumsum((0, *widths[:-1]))
        centre = int(rng.integers(0, 2**63)) << 193 | int(rng.integers(0, 2**63))
        bank = []
        for radius in (0, 1, len(widths) - 1, len(widths), 31):
            # flip radius bits round-robin over the chunks: the worst case for pigeonhole
            bits = {int(starts[k % len(widths)] + k // len(widths)) for k in range(radius)}
            bank.append(_flip(centre, bits))
        index = PDQIndex(widths=widths, max_delta=0)
        index.add_many(np.arange(len(bank)), np.stack([_words(h) for h in bank]))
        model = {i: _words(h) for i, h in enumerate(bank)}
        for r in range(32):
            assert _got(index, _words(centre), r) == _expected(model, _words(centre), r)


@pytest.mark.parametrize("widths", [None, (16,) * 16, (24, 24, 24, 23, 23, 23, 23, 23, 23, 23, 23)])
def test_heavy_buckets_and_large_results(widths: tuple[int, ...] | None) -> None:
    """Hundreds of variants of one image: buckets far above the 16 rows a slot can
    describe, runs longer than one 8-row copy, and more matches than the kernel's first
    output buffer holds, in the static part and in the delta."""
    rng = np.random.default_rng(21)
    centre = int(rng.integers(0, 2**63)) << 190 | int(rng.integers(0, 2**63))
    variants = [
        _flip(centre, set(rng.choice(256, size=int(rng.integers(0, 12)), replace=False).tolist()))
        for _ in range(700)
    ]
    variants += [centre] * 50  # exact duplicates under different ids
    noise = [int(x) << 192 | int(y) for x, y in rng.integers(0, 2**62, size=(2000, 2))]
    bank = variants + noise
    model = {i: _words(h) for i, h in enumerate(bank)}
    index = PDQIndex(widths=widths, max_delta=100)
    index.add_many(np.arange(len(bank)), np.stack(list(model.values())))
    for i in range(len(bank), len(bank) + 60):  # and a delta full of them
        model[i] = _words(centre)
        index.add(i, model[i])
    queries = np.stack([_words(centre), _words(_flip(centre, {0, 100, 200})), _words(noise[0])])
    for radius in (0, 8, 31):
        batch = index.query_batch(queries, radius)
        expected = [(qi, i, d) for qi, q in enumerate(queries) for d, i in _expected(model, q, radius)]
        assert batch == sorted(expected, key=lambda t: (t[0], t[2], t[1]))
    assert len(index.query(centre.to_bytes(32, "big"), 31)) > 700


# ----------------------------------------------------------------------------------------
# updates
# ----------------------------------------------------------------------------------------

_CENTRES = [int(x) for x in np.random.default_rng(5).integers(0, 2**62, size=4)]


@st.composite
def near_hashes(draw: st.DrawFn) -> int:
    centre = _CENTRES[draw(st.integers(0, len(_CENTRES) - 1))] << 190
    return _flip(centre, draw(flips))


class IndexMachine(RuleBasedStateMachine):
    """Random sequences of updates, bulk loads and compactions, checked against a dict."""

    @initialize(widths=st.sampled_from([None, (16,) * 16, (8,) * 32]), max_delta=st.sampled_from([0, 3, 50]))
    def setup(self, widths: tuple[int, ...] | None, max_delta: int) -> None:
        self.index = PDQIndex(widths=widths, max_delta=max_delta)
        self.model: dict[int, np.ndarray] = {}

    @rule(entry_id=st.integers(-5, 40), h=near_hashes())
    def add(self, entry_id: int, h: int) -> None:
        self.index.add(entry_id, _words(h))
        self.model[entry_id] = _words(h)

    @rule(entries=st.dictionaries(st.integers(-5, 40), near_hashes(), max_size=12))
    def add_many(self, entries: dict[int, int]) -> None:
        if not entries:
            return
        self.index.add_many(np.array(list(entries)), np.stack([_words(h) for h in entries.values()]))
        self.model.update({i: _words(h) for i, h in entries.items()})

    @rule(entry_id=st.integers(-5, 40))
    def remove(self, entry_id: int) -> None:
        assert self.index.remove(entry_id) == (entry_id in self.model)
        self.model.pop(entry_id, None)

    @rule()
    def compact(self) -> None:
        self.index.compact()

    @rule(q=near_hashes(), radius=st.integers(0, 31))
    def query(self, q: int, radius: int) -> None:
        assert _got(self.index, _words(q), radius) == _expected(self.model, _words(q), radius)

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.index) == len(self.model)
        for entry_id in range(-5, 41):
            assert (entry_id in self.index) == (entry_id in self.model)


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_replacing_an_id_moves_it() -> None:
    index = PDQIndex()
    a, b = _words(_CENTRES[0] << 190), _words(_CENTRES[1] << 190)
    index.add(7, a)
    index.add(7, b)
    assert len(index) == 1
    assert index.query(a, 0) == []
    assert index.query(b, 0) == [(7, 0)]
    assert not index.remove(8)


def test_rejects_bad_input() -> None:
    index = PDQIndex()
    with pytest.raises(ValueError):
        index.add_many([1, 1], np.zeros((2, 4), np.uint64))
    with pytest.raises(ValueError):
        index.add_many([1, 2, 3], np.zeros((2, 4), np.uint64))
    with pytest.raises(ValueError):
        index.query("0" * 64, PDQ_CONFIDENT_MATCH_THRESHOLD + 1)
    with pytest.raises(ValueError):
        PDQIndex(widths=(30,) * 8)


def test_compaction_in_background_keeps_concurrent_updates() -> None:
    """Updates made while a background compaction builds must survive its swap."""
    rng = np.random.default_rng(8)
    n = 300_000
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=(n, 4), dtype=np.uint64, endpoint=True)
    index = PDQIndex(max_delta=1_000_000)
    index.add_many(np.arange(n), hashes)
    model = {i: hashes[i] for i in range(n)}
    for i in range(n, n + 500):  # pending delta rows for the compaction to fold in
        h = hashes[i - n] ^ np.uint64(1)
        index.add(i, h)
        model[i] = h
    for i in range(0, 300):
        index.remove(i)
        del model[i]

    thread = index.compact_in_background()
    concurrent = 0
    k = 0
    while thread.is_alive() or concurrent < 50:
        entry_id = n + 10_000 + k
        h = hashes[1000 + k] ^ np.uint64(3)
        index.add(entry_id, h)  # new entries during the build
        model[entry_id] = h
        victim = 2_000 + k  # removes of entries the build snapshot still holds
        index.remove(victim)
        del model[victim]
        if k % 2:
            index.add(n + k % 500, hashes[5000 + k])  # replace a pre-snapshot delta entry
            model[n + k % 500] = hashes[5000 + k]
        concurrent += thread.is_alive()
        k += 1
    thread.join()
    assert concurrent >= 1, "compaction finished before any concurrent update"
    assert len(index) == len(model)
    probes = [hashes[i] for i in (0, 299, 300, 1000, 1001, 2000, 2001, 5000, 5001, 123_456)]
    probes += [hashes[i] ^ np.uint64(1) for i in range(0, 20)]
    for q in probes:
        assert _got(index, q, 31) == _expected(model, q, 31)


def test_auto_widths_respect_memory_cap() -> None:
    for n in (0, 1, 1_000, 100_000, 1_000_000, 10_000_000):
        widths = auto_widths(n)
        assert sum(widths) <= 256 and max(widths) <= 24
        assert sum(4 << w for w in widths) <= max(64 << 20, 192 * n)


# ----------------------------------------------------------------------------------------
# conformance with Meta's reference data
# ----------------------------------------------------------------------------------------


def _reference_dir() -> Path | None:
    env = os.environ.get("PDQ_REFERENCE_DIR")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" / "pdq-reference" for p in Path(__file__).resolve().parents]
    return next((c for c in candidates if (c / "haystack.txt").is_file()), None)


REFERENCE = _reference_dir()
needs_reference = pytest.mark.skipif(
    REFERENCE is None,
    reason="PDQ reference data not found (../shared/data/pdq-reference or $PDQ_REFERENCE_DIR)",
)


def _read_hashes(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@needs_reference
@pytest.mark.parametrize("widths", [None, (16,) * 16, (24, 24, 24, 23, 23, 23, 23, 23, 23, 23, 23)])
def test_meta_haystack_needles_match_brute_force(widths: tuple[int, ...] | None) -> None:
    assert REFERENCE is not None
    haystack = hex_to_words(_read_hashes(REFERENCE / "haystack.txt"))
    needles = hex_to_words(_read_hashes(REFERENCE / "needles.txt"))
    index = PDQIndex(widths=widths, max_delta=0)
    index.add_many(np.arange(len(haystack)), haystack)
    got = index.query_batch(needles, 31)
    expected = []
    for qi, q in enumerate(needles):
        rows, dists = brute_force(haystack, q, 31)
        expected += [(qi, int(r), int(d)) for r, d in zip(rows, dists, strict=True)]
    assert sorted(got) == sorted(expected)
    assert len(expected) > len(needles)  # the data set is built to have matches


@needs_reference
def test_pdqhash_matches_meta_reference_hashes() -> None:
    pdqhash = pytest.importorskip("pdqhash")
    image_mod = pytest.importorskip("PIL.Image")
    assert REFERENCE is not None
    with open(REFERENCE / "expected.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        pixels = np.asarray(image_mod.open(REFERENCE / row["path"]).convert("RGB"))
        bits, _quality = pdqhash.compute(pixels)
        # pdqhash returns bits MSB first, the order of Meta's hex
        ours = bits_to_words(bits)
        distance = int(hamming(ours, row["pdq_hex"])[0])
        assert distance <= 16, f"{row['path']}: distance {distance} to the reference"


def test_a_batch_finds_what_its_queries_find_alone_on_either_kernel() -> None:
    # batches below HOLD_GIL_BELOW run the kernel that keeps the GIL, larger ones the one
    # that releases it: the same lookup either way
    rng = np.random.default_rng(8)
    bank = [int(x) << 192 | int(y) for x, y in rng.integers(0, 2**62, size=(3000, 2))]
    model = {i: _words(h) for i, h in enumerate(bank)}
    index = PDQIndex(max_delta=500)
    index.add_many(np.arange(2500), np.stack([model[i] for i in range(2500)]))
    index.add_many(np.arange(2500, 3000), np.stack([model[i] for i in range(2500, 3000)]))  # a delta too
    assert index.delta_size == 500
    queries = np.stack([_words(_flip(bank[i], set(rng.choice(256, size=int(rng.integers(0, 40)),
                                                             replace=False).tolist())))
                        for i in rng.choice(3000, size=2 * HOLD_GIL_BELOW, replace=False)])
    together = index.query_batch(queries)
    expected = [(qi, i, d) for qi, q in enumerate(queries) for d, i in _expected(model, q, 31)]
    assert together == sorted(expected, key=lambda t: (t[0], t[2], t[1]))
    assert 0 < len(together) < len(queries)  # some near, some too far
    few = HOLD_GIL_BELOW // 4
    alone = [(start + qi, i, d) for start in range(0, len(queries), few)
             for qi, i, d in index.query_batch(queries[start:start + few])]
    assert alone == together


def test_a_delta_wants_compaction_once_it_outgrows_a_sixty_fourth_of_the_static_rows() -> None:
    rng = np.random.default_rng(9)

    def index_of(static: int, delta: int) -> PDQIndex:
        index = PDQIndex()
        rows = rng.integers(0, 2**63, size=(static + delta, 4), dtype=np.int64).astype(np.uint64)
        index.add_many(np.arange(static), rows[:static])  # one bulk build: no delta
        if delta:
            index.add_many(np.arange(static, static + delta), rows[static:])
        assert index.delta_size == delta
        return index

    assert not index_of(0, SMALL_DELTA).needs_compaction  # a small bank: at least SMALL_DELTA rows
    assert index_of(0, SMALL_DELTA + 1).needs_compaction
    bound = 128_000 // 64  # 2,000 rows: well under DEFAULT_MAX_DELTA
    assert not index_of(128_000, bound).needs_compaction
    wants = index_of(128_000, bound + 1)
    assert wants.needs_compaction
    wants.compact()
    assert wants.delta_size == 0 and not wants.needs_compaction
    capped = PDQIndex(max_delta=16)  # max_delta still bounds it from above
    for i in range(17):
        assert not capped.needs_compaction
        capped.add(i, rng.integers(0, 2**63, size=4, dtype=np.int64).astype(np.uint64))
    assert capped.delta_size == 17 and capped.needs_compaction


def test_threads_can_query_during_updates() -> None:
    index = PDQIndex(max_delta=100)
    base = _words(_CENTRES[2] << 190)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(300):
                for i, d in index.query(base, 31):
                    assert d <= 31 and i >= 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(400):
        index.add(i, base ^ np.uint64(i % 7))
        if i % 3 == 0:
            index.remove(i // 2)
    t.join()
    assert not errors
