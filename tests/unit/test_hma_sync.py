"""The HMA sync's pure parts: the mapping file and how HMA's rows become bank entries."""

from __future__ import annotations

import pytest

from streamsafe.errors import ConfigError
from streamsafe.events.bank_entries import entry_id_for
from streamsafe.integrations.hma.mapping import default_mapping, parse_mapping, policy_disagreements
from streamsafe.integrations.hma.source import plain_dsn
from streamsafe.integrations.hma.state import Row, SyncState
from streamsafe.policy.loader import load_policy

A = "ab" * 32
B = "cd" * 32
MD5 = "0f" * 16


def mapping(**banks: tuple[str, str]):
    return parse_mapping({"banks": {h: {"bank": b, "trust": t} for h, (b, t) in banks.items()}})


def test_mapping_file_is_validated_with_the_place_of_each_problem():
    m = mapping(NCMEC_CSAM=("ncmec", "authority"), OURS=("internal-confirmed", "internal"))
    assert m.as_dict() == {"NCMEC_CSAM": "ncmec", "OURS": "internal-confirmed"}
    for doc, where in [({"banks": {"lower": {"bank": "x", "trust": "partner"}}}, "banks.lower"),
                       ({"banks": {"X": {"bank": "Bad Name", "trust": "partner"}}}, "banks.X.bank"),
                       ({"banks": {"X": {"bank": "x", "trust": "sure"}}}, "banks.X.trust"),
                       ({"banks": {"X": {"bank": "x", "trust": "partner", "extra": 1}}}, "banks.X"),
                       ({"banks": {"X": {"bank": "x"}}}, "banks.X"),
                       ({"banks": {}}, "banks"), ({"bank": {}}, "top level"), ([], "top level")]:
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            parse_mapping(doc)
    with pytest.raises(ConfigError, match="does not map: NOPE"):
        m.only(["NOPE"])
    assert m.only(["OURS"]).hma_banks == ["OURS"]
    assert default_mapping(["NCMEC"]).as_dict() == {"NCMEC": "ncmec"}
    with pytest.raises(ConfigError):
        default_mapping(["ncmec"])


def test_mapping_trust_must_agree_with_the_policy():
    policy = load_policy()
    assert policy_disagreements(mapping(N=("ncmec", "authority"), O=("internal-confirmed", "internal")), policy) == []
    (problem,) = policy_disagreements(mapping(P=("hma-partner", "authority")), policy)
    assert "gives hma-partner trust partner" in problem and "'hma-partner: authority'" in problem
    assert policy_disagreements(default_mapping(["ANY"]), policy) == []  # no trust stated: the policy's


def rows(state: SyncState, *items: tuple[int, str, str, str]) -> None:
    state.add_rows(Row(c, t, b, v, 1_700_000_000_000 + c) for c, t, b, v in items)


def test_entries_follow_additions_deletions_and_shared_hashes():
    state = SyncState(mapping(H1=("ncmec", "authority"), H2=("ncmec", "authority")))
    rows(state, (1, "pdq", "H1", A), (2, "pdq", "H2", A), (3, "video_md5", "H1", MD5.upper()),
         (4, "pdq", "UNMAPPED", B))
    eid, md5_id = entry_id_for("ncmec", "pdq", A), entry_id_for("ncmec", "md5", MD5)
    assert set(state.changes.publish) == {eid, md5_id} and not state.changes.remove
    entry, source = state.changes.publish[eid]
    assert (entry.hash, entry.added_ms, source) == (A, 1_700_000_000_001, "hma:H1")  # HMA's own time
    assert state.changes.publish[md5_id][0].signal_type == "md5" and state.changes.publish[md5_id][0].hash == MD5
    state.changes.clear()
    assert state.drop_rows([(1, "pdq")]) == 1 and not state.changes  # content 2 still holds the hash
    state.drop_rows([(2, "pdq")])
    assert state.changes.remove == {eid} and eid not in state.entries
    assert state.bank_totals() == {"H1": (1, 3)}


def test_disabled_content_leaves_and_comes_back():
    state = SyncState(mapping(H=("ncmec", "authority")))
    state.set_disabled({2})
    rows(state, (1, "pdq", "H", A), (2, "pdq", "H", B))
    eid_b = entry_id_for("ncmec", "pdq", B)
    assert eid_b not in state.changes.publish  # disabled when first seen: never published
    state.changes.clear()
    assert state.set_disabled({1}) == (1, 1)
    assert state.changes.remove == {entry_id_for("ncmec", "pdq", A)} and set(state.changes.publish) == {eid_b}
    state.changes.clear()
    state.set_disabled(set())
    assert set(state.changes.publish) == {entry_id_for("ncmec", "pdq", A)} and not state.changes.remove


def test_bad_hashes_and_unknown_signal_types_are_not_entries():
    state = SyncState(mapping(H=("ncmec", "authority")))
    rows(state, (1, "pdq", "H", "zz" * 32), (2, "video_tmk", "H", A))
    assert not state.changes and state.entries == {} and state.unusable == 2


def test_checkpoint_round_trip_and_a_changed_mapping():
    state = SyncState(mapping(H=("ncmec", "authority")))
    rows(state, (1, "pdq", "H", A), (2, "pdq", "H", B))
    state.set_disabled({2})
    doc = state.to_doc()
    same = SyncState.from_doc(doc, state.mapping)
    assert not same.changes and same.entries.keys() == state.entries.keys() and same.disabled == {2}
    moved = SyncState.from_doc(doc, mapping(H=("iwf", "authority")))
    assert moved.changes.remove == {entry_id_for("ncmec", "pdq", A)}
    assert set(moved.changes.publish) == {entry_id_for("iwf", "pdq", A)}
    dropped = SyncState.from_doc(doc, mapping(OTHER=("iwf", "authority")))
    assert dropped.changes.remove == {entry_id_for("ncmec", "pdq", A)} and dropped.rows == {}


def test_dsn_in_sqlalchemy_spelling_is_accepted():
    assert plain_dsn("postgresql+psycopg2://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert plain_dsn("postgresql://u:p@h:5/db") == "postgresql://u:p@h:5/db"


def test_sync_command_refuses_a_mapping_the_policy_disagrees_with_before_reading_hma(tmp_path):
    from click.testing import CliRunner

    from streamsafe.cli import cli

    path = tmp_path / "hma-banks.yaml"
    path.write_text("banks:\n  X: {bank: hma-x, trust: authority}\n")
    result = CliRunner().invoke(cli, ["bank", "sync", "hma", "--dsn", "postgresql://u@127.0.0.1:1/db",
                                      "--mapping", str(path), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1 and "add 'hma-x: authority' under banks: in the policy" in result.output
    result = CliRunner().invoke(cli, ["bank", "sync", "hma", "--dsn", "postgresql://u@127.0.0.1:1/db",
                                      "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 2 and "--mapping FILE and/or --banks" in result.output


def test_the_readmes_mapping_file_loads_and_agrees_with_the_packaged_policy():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Using StreamSafe with HMA", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "# hma-banks.yaml" in b]
    mapping = parse_mapping(yaml.safe_load(block))
    assert {m.hma_bank for m in mapping.banks} == {"NCMEC_CSAM", "PLATFORM_CONFIRMED", "PARTNER_SHARE"}
    assert policy_disagreements(mapping, load_policy()) == []
