"""Hash lists: exact digests load by type, bad lines are reported with their line numbers."""

import pytest

from streamsafe.events.models import Frame
from streamsafe.matching.banks import HashBanks, read_hash_list
from streamsafe.matching.signal_types import MD5, SignalTypeRegistry


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
    )
    entries, problems = read_hash_list(path)
    assert [(e.signal_type, e.entry_id, e.label) for e in entries] == [
        ("md5", "known-csam:2", "first"),
        ("sha256", "known-csam:3", None),
        ("sha256", "known-csam:8", None),
    ]
    assert entries[0].hash == "9e107d9d372bb6826bd81d3542a419d6"
    assert [p.line for p in problems] == [5, 6, 7]


def test_banks_match_exact_digests_only():
    banks = HashBanks()
    path_entries = [("md5", "a" * 32), ("sha256", "b" * 64)]
    from streamsafe.matching.banks import BankEntry

    for i, (kind, digest) in enumerate(path_entries):
        banks.add(BankEntry(f"k:{i}", "k", kind, digest))
    assert banks.sizes() == {"k": 2}
    hit = banks.match_frame(Frame(7, 70, md5="a" * 32, sha256="c" * 64))
    assert [(m.entry_id, m.signal_type, m.frame_seq, m.distance) for m in hit] == [("k:0", "md5", 7, 0)]
    assert banks.match_frame(Frame(8, 80, md5="a" * 31 + "b")) == []


def test_registry_refuses_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):
        SignalTypeRegistry(MD5(), MD5())
