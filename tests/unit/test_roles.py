"""The role model lives in the topic files: every topic StreamSafe creates has an owner who
writes it, only known roles are named, and the worker's internal topics are the worker's alone."""

from __future__ import annotations

import json
import shutil

import pytest

from streamsafe.errors import ContractError
from streamsafe.events.contract import contract_dir, load_contract
from streamsafe.roles import ROLES, owned_topics, role_access, role_names, unassigned_topics
from streamsafe.settings import Settings


def test_every_topic_file_names_an_owner_that_writes_it_and_only_known_roles():
    contract = load_contract()
    for name, spec in contract.items():
        assert spec.owner in spec.writers, f"{name}: its owner must write it"
        assert {*spec.readers, *spec.writers} <= role_names(), f"{name}: unknown role"
        assert spec.readers, f"{name}: nobody reads it"
    assert unassigned_topics(contract) == []


def test_every_topic_streamsafe_creates_has_an_owner_internal_ones_included():
    settings = Settings(app_id="ss", topic_prefix="p.")
    topics = {t.topic: t for t in owned_topics(load_contract(), settings)}
    assert all(t.owner for t in topics.values())
    for internal in ("ss-stream-state-changelog", "ss-incidents-changelog", "p.streamsafe.frame-matches"):
        assert (topics[internal].owner, topics[internal].readers, topics[internal].internal) == (
            "worker", ("worker",), True)
    assert {t for t in topics if not t.startswith("p.")} == {
        "ss-stream-state-changelog", "ss-incidents-changelog", "ss-accounts-changelog", "ss-__assignor-__leader"}


def test_the_contract_keeps_the_issue_refusals():
    access = role_access(load_contract(), Settings())
    assert "enforcement.actions" not in access["platform"].writes
    assert "hashbank.entries" not in access["platform"].writes
    assert "enforcement.reports" not in access["enforcement"].reads
    readers = {r for r, a in access.items() if "enforcement.reports" in a.reads}
    assert readers == {"reporting"}
    assert {r.name for r in ROLES} == set(access)


@pytest.mark.parametrize("access, message", [
    ({"owner": "platform", "read": ["worker"], "write": ["worker"]}, "must be one of its writers"),
    ({"read": "worker"}, "lists of role names"),
    ({"owner": "worker", "write": ["worker"], "admins": []}, "access must be an object"),
])
def test_a_malformed_access_is_refused_with_the_file_name(tmp_path, access, message):
    for path in contract_dir().glob("*.json"):
        shutil.copy(path, tmp_path)
    spec = json.loads((tmp_path / "streamsafe.timers.json").read_text())
    spec["access"] = access
    (tmp_path / "streamsafe.timers.json").write_text(json.dumps(spec))
    with pytest.raises(ContractError, match=message):
        load_contract(tmp_path)


def test_an_unknown_role_is_named(tmp_path):
    for path in contract_dir().glob("*.json"):
        shutil.copy(path, tmp_path)
    spec = json.loads((tmp_path / "enforcement.reports.json").read_text())
    spec["access"]["read"] = ["reporting", "marketing"]
    (tmp_path / "enforcement.reports.json").write_text(json.dumps(spec))
    assert unassigned_topics(load_contract(tmp_path)) == ["enforcement.reports (unknown roles ['marketing'])"]
