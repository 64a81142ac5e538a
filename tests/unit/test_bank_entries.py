"""Bank entries on the wire and from files: the fast decoder agrees with the schema;
importers report bad lines with their numbers."""

from __future__ import annotations

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsafe.errors import RejectedInput
from streamsafe.events.bank_entries import decode_bank_entry, entry_id_for
from streamsafe.events.contract import HASHBANK_ENTRIES, load_contract
from streamsafe.events.models import BankEntry
from streamsafe.matching.importers import ImportProblem, read_entries

SCHEMA = fastjsonschema.compile(dict(load_contract()[HASHBANK_ENTRIES].schema))
EXAMPLE = dict(load_contract()[HASHBANK_ENTRIES].example)


def test_example_decodes():
    entry = decode_bank_entry(b"ncmec:1", orjson.dumps(EXAMPLE))
    assert entry == BankEntry("ncmec:1", "ncmec", "pdq", EXAMPLE["hash"], EXAMPLE["label"], 100, EXAMPLE["added_ms"])


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.text(max_size=70),
                   st.sampled_from(["pdq", "md5", "sha256", "tmk", "a" * 32, "b" * 64, "B" * 64, "ncmec"]))
documents = st.fixed_dictionaries(
    {},
    optional={"schema_version": st.sampled_from([1, 2, "1", 1.0]), "bank": values, "signal_type": values,
              "hash": values, "quality": values, "label": values, "source": values, "added_ms": values,
              "extra": values},
)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_fast_decoder_agrees_with_the_json_schema(doc):
    try:
        SCHEMA(doc)
        schema_ok = doc.get("signal_type") is None or len(doc.get("hash", "")) == {
            "pdq": 64, "md5": 32, "sha256": 64}[doc["signal_type"]]
    except fastjsonschema.JsonSchemaException:
        schema_ok = False
    try:
        decode_bank_entry(b"k", orjson.dumps(doc))
        decoded = True
    except RejectedInput:
        decoded = False
    assert decoded == schema_ok


@pytest.mark.parametrize(("value", "reason"), [
    (b"{", "malformed_json"), (b"[]", "not_an_object"),
    (orjson.dumps({**EXAMPLE, "schema_version": 2}), "unknown_version"),
    (orjson.dumps({**EXAMPLE, "hash": "abc"}), "schema_violation"),
    (orjson.dumps({**EXAMPLE, "signal_type": "md5"}), "schema_violation"),  # 64 hex is not an MD5
    (orjson.dumps({**EXAMPLE, "signal_type": "tmk"}), "schema_violation"),
])
def test_corrupt_entries_are_rejected_with_a_reason(value, reason):
    with pytest.raises(RejectedInput) as info:
        decode_bank_entry(b"k", value)
    assert info.value.reason == reason


def collect(path, fmt, signal_type=None):
    items = list(read_entries(path, "bank-a", fmt, signal_type))
    return [i for i in items if isinstance(i, BankEntry)], [i for i in items if isinstance(i, ImportProblem)]


def test_one_hash_per_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(f"{'a' * 32}\n# comment\n{'b' * 64}\npdq:{'c' * 64} label-1\nzz\n")
    entries, problems = collect(path, "lines")
    assert [(e.signal_type, e.label) for e in entries] == [("md5", None), ("pdq", "label-1")]
    assert [(p.line, "PDQ or SHA-256" in p.reason) for p in problems] == [(3, True), (5, False)]
    entries, problems = collect(path, "lines", "sha256")
    assert [e.signal_type for e in entries] == ["md5", "sha256", "pdq"] and [p.line for p in problems] == [5]


def test_csv_with_columns(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text(f"hash,bank,label,signal_type,quality\n{'a' * 64},partner-x,l1,pdq,90\n"
                    f"{'b' * 32},,l2,md5,\nnope,,,pdq,\n{'c' * 64},,,pdq,101\n")
    entries, problems = collect(path, "csv")
    assert [(e.bank, e.signal_type, e.label, e.quality) for e in entries] == [
        ("partner-x", "pdq", "l1", 90), ("bank-a", "md5", "l2", None)]
    assert [p.line for p in problems] == [4, 5]


def test_pdq_export_lines(tmp_path):
    path = tmp_path / "export.pdq"
    path.write_text(f"{'d' * 64},87\npdq {'e' * 64} 100\n{'f' * 64}\n{'0' * 63}\n")
    entries, problems = collect(path, "pdq")
    assert [(e.hash[0], e.quality) for e in entries] == [("d", 87), ("e", 100), ("f", None)]
    assert [p.line for p in problems] == [4]
    assert entries[0].entry_id == entry_id_for("bank-a", "pdq", "d" * 64)  # re-imports are idempotent


@pytest.mark.parametrize("name", ["ncmec", "internal-confirmed", "platform_allow.v2", "x" * 64,
                                  "NCMEC Bank!", "", "-leading", "x" * 65, "Ncmec", "a b"])
def test_a_bank_name_is_refused_before_publishing_exactly_when_the_contract_refuses_it(name):
    from streamsafe.errors import BankError
    from streamsafe.events.bank_entries import check_bank_name

    valid = fastjsonschema.compile(dict(load_contract()[HASHBANK_ENTRIES].schema["properties"]["bank"]))
    try:
        valid(name)
        accepted_by_contract = True
    except fastjsonschema.JsonSchemaException:
        accepted_by_contract = False
    try:
        check_bank_name(name)
        accepted = True
    except BankError as exc:
        accepted = False
        assert repr(name) in str(exc)
    assert accepted == accepted_by_contract
