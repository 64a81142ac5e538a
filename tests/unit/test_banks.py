"""Hash banks: exact and PDQ matching, removals, quality floor, hash lists with bad lines."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsafe.events.models import BankEntry, Frame
from streamsafe.matching.banks import HashBanks, read_hash_list
from streamsafe.matching.signal_types import MD5, PDQ, SignalTypeRegistry


def flip(hex_hash: str, bits: list[int]) -> str:
    value = int(hex_hash, 16)
    for b in bits:
        value ^= 1 << (255 - b)  # bit 0 is the most significant (Meta's order)
    return f"{value:064x}"


def test_hash_list_reads_types_labels_and_reports_bad_lines(tmp_path):
    path = tmp_path / "known-csam.txt"
    path.write_text(
        "# authority list\n"
        "9E107D9D372BB6826BD81D3542A419D6 first\n"
        "sha256:" + "ab" * 32 + "\n"
        "\n"
        "not-a-hash\n"
        "md5:" + "a" * 31 + "\n"
        "pdq:" + "a" * 64 + "\n"
        + "cd" * 32 + "  # trailing comment\n"
        "tmk:" + "a" * 64 + "\n"
    )
    entries, problems = read_hash_list(path)
    assert [(e.signal_type, e.entry_id, e.label) for e in entries] == [
        ("md5", "known-csam:2", "first"),
        ("sha256", "known-csam:3", None),
        ("pdq", "known-csam:7", None),
        ("sha256", "known-csam:8", None),
    ]
    assert entries[0].hash == "9e107d9d372bb6826bd81d3542a419d6"
    assert [p.line for p in problems] == [5, 6, 9]


def test_exact_digests_match_by_equality_only():
    banks = HashBanks()
    banks.add_many([BankEntry("k:0", "k", "md5", "a" * 32), BankEntry("k:1", "k", "sha256", "b" * 64)])
    assert banks.sizes() == {"k": {"md5": 1, "sha256": 1}}
    hit = banks.match_frame(Frame(7, 70, md5="a" * 32, sha256="c" * 64))
    assert [(m.entry_id, m.signal_type, m.frame_seq, m.distance) for m in hit] == [("k:0", "md5", 7, 0)]
    assert banks.match_frame(Frame(8, 80, md5="a" * 31 + "b")) == []


def test_pdq_matches_within_radius_and_skips_low_quality_frames():
    rng = random.Random(3)
    base = f"{rng.getrandbits(256):064x}"
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "pdq", base))
    near = flip(base, list(range(31)))
    far = flip(base, list(range(32)))
    got = banks.match_frame(Frame(1, 1, pdq=near, pdq_quality=80))
    assert [(m.entry_id, m.distance, m.quality) for m in got] == [("ncmec:1", 31, 80)]
    assert banks.match_frame(Frame(2, 2, pdq=far, pdq_quality=80)) == []
    assert banks.match_frame(Frame(3, 3, pdq=base, pdq_quality=49)) == []  # below the quality floor
    assert banks.match_frame(Frame(4, 4, pdq=base, pdq_quality=50))[0].distance == 0


def test_per_bank_radius_override():
    base = "f" * 64
    banks = HashBanks(bank_radius={"strict": 8})
    banks.add_many([BankEntry("strict:1", "strict", "pdq", base), BankEntry("loose:1", "loose", "pdq", base)])
    got = banks.match_frame(Frame(1, 1, pdq=flip(base, list(range(12))), pdq_quality=90))
    assert [m.entry_id for m in got] == ["loose:1"]


def test_removal_takes_effect_at_once_and_readding_replaces():
    banks = HashBanks()
    banks.add_many([BankEntry("a", "b1", "pdq", "0" * 64), BankEntry("m", "b1", "md5", "1" * 32)])
    assert banks.remove("a") and banks.remove("m") and not banks.remove("a")
    assert banks.match_frame(Frame(1, 1, pdq="0" * 64, pdq_quality=90, md5="1" * 32)) == []
    assert len(banks) == 0 and banks.sizes() == {}
    banks.add(BankEntry("a", "b2", "pdq", "0" * 64))
    banks.add(BankEntry("a", "b3", "pdq", "f" * 64))  # same id: replaced
    assert [m.bank for m in banks.match_frame(Frame(1, 1, pdq="f" * 64, pdq_quality=90))] == ["b3"]
    assert banks.match_frame(Frame(1, 1, pdq="0" * 64, pdq_quality=90)) == []


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60), st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_pdq_lookup_equals_brute_force(seed, n, flips):
    rng = random.Random(seed)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(n)]
    banks = HashBanks()
    banks.add_many([BankEntry(f"e{i}", "b", "pdq", h) for i, h in enumerate(hashes)])
    removed = {f"e{i}" for i in range(0, n, 3)}
    for entry_id in removed:
        banks.remove(entry_id)
    pdq = PDQ()
    for k in flips:
        query = flip(rng.choice(hashes), rng.sample(range(256), k))
        expected = {(f"e{i}", pdq.distance(h, query)) for i, h in enumerate(hashes)
                    if pdq.distance(h, query) <= 31 and f"e{i}" not in removed}
        got = {(m.entry_id, m.distance) for m in banks.match_frame(Frame(0, 0, pdq=query, pdq_quality=99))}
        assert got == expected


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        SignalTypeRegistry(MD5(), MD5())


def test_matching_groups_at_once_matches_each_group_as_alone():
    rng = random.Random(3)
    banks = HashBanks()
    stored = [f"{rng.getrandbits(256):064x}" for _ in range(50)]
    banks.add_many([BankEntry(f"e{i}", "partner", "pdq", h) for i, h in enumerate(stored)])
    banks.add(BankEntry("m1", "ncmec", "md5", "9e107d9d372bb6826bd81d3542a419d6"))

    def near(h: str, bits: int) -> str:
        v = int(h, 16)
        for b in rng.sample(range(256), bits):
            v ^= 1 << b
        return f"{v:064x}"

    groups = [
        [Frame(seq=1, ts_ms=1, pdq=near(stored[0], 5), pdq_quality=90), Frame(seq=2, ts_ms=2, md5="0" * 32)],
        [Frame(seq=1, ts_ms=1, pdq=f"{rng.getrandbits(256):064x}", pdq_quality=90)],
        [Frame(seq=7, ts_ms=3, pdq=near(stored[9], 20), pdq_quality=80),
         Frame(seq=8, ts_ms=4, md5="9e107d9d372bb6826bd81d3542a419d6"),
         Frame(seq=9, ts_ms=5, pdq=near(stored[3], 2), pdq_quality=10)],  # below the quality floor
    ]
    together = banks.match_frame_groups(groups)
    assert together == [banks.match_frames(g) for g in groups]
    assert [len(m) for m in together] == [1, 0, 2]


def test_bank_age_is_the_newest_entrys_own_time_not_when_it_was_loaded():
    from dataclasses import replace

    entries = [BankEntry("ncmec:a", "ncmec", "md5", "a" * 32, added_ms=1_000_000),
               BankEntry("ncmec:b", "ncmec", "md5", "b" * 32, added_ms=2_000_000)]
    banks = HashBanks()
    banks.add_many(entries)
    assert banks.updated_at == 2_000.0
    banks.add_many([replace(e, added_ms=9_000_000) for e in entries])  # the same entries again
    assert banks.updated_at == 2_000.0 and banks.sizes() == {"ncmec": {"md5": 2}}
    reloaded = HashBanks()  # a restart reads the same records
    reloaded.add_many(entries)
    assert reloaded.updated_at == banks.updated_at
    banks.add_many([BankEntry("ncmec:c", "ncmec", "md5", "c" * 32, added_ms=3_000_000)])
    assert banks.updated_at == 3_000.0
    banks.remove("ncmec:a", at=4_000.0)
    assert banks.updated_at == 4_000.0
    banks.remove("ncmec:missing", at=5_000.0)  # nothing removed: nothing changed
    assert banks.updated_at == 4_000.0


def test_settled_banks_hold_no_delta_and_match_as_before():
    # a worker settles its banks before it is ready: every lookup scans the whole delta
    rng = random.Random(4)
    banks = HashBanks()
    stored = [f"{rng.getrandbits(256):064x}" for _ in range(300)]
    for start in range(0, 300, 100):  # loaded in batches, as the bank topic is read
        banks.add_many([BankEntry(f"e{i}", "partner", "pdq", stored[i]) for i in range(start, start + 100)])
    frames = [Frame(seq=i, ts_ms=i, pdq=flip(stored[i * 7], [i, 100 + i]), pdq_quality=90) for i in range(40)]
    before = banks.match_frame_groups([[f] for f in frames])
    assert banks._pdq.delta_size == 300
    banks.settle()
    assert banks._pdq.delta_size == 0
    assert banks.match_frame_groups([[f] for f in frames]) == before
    assert all(len(m) == 1 for m in before)
