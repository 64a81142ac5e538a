"""The Coop bridge's pure parts: the mapping file, the report body, signatures, freshness,
replays and callbacks -> verdict records."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml

from streamsafe.errors import ConfigError
from streamsafe.events.contract import ESCALATIONS, REVIEW_VERDICTS
from streamsafe.integrations.coop.callbacks import (
    CallbackRefused,
    ReplayCache,
    callback_time_ms,
    load_public_key,
    parse_body,
    reviewer_id_for,
    verdict_record,
    verify_signature,
)
from streamsafe.integrations.coop.mapping import load_mapping, parse_mapping
from streamsafe.integrations.coop.reports import iso_utc, report_body
from tests.coop_fake import CoopSigner, report_errors

README = Path(__file__).resolve().parents[2] / "README.md"
NOW = 1_764_324_200_000
ESCALATION_ID = "dec-0a7e1f2b3c4d5e6f708192a3b4c5d6e7"
PDQ = "ab" * 32


def readme_mapping() -> dict:
    section = README.read_text().split("## Using StreamSafe with Coop", 1)[1]
    (block,) = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    return yaml.safe_load(block)


@pytest.fixture(scope="module")
def mapping():
    return parse_mapping(readme_mapping(), "README")


@pytest.fixture(scope="module")
def signer():
    return CoopSigner()


@pytest.fixture(scope="module")
def public_key(signer, tmp_path_factory):
    path = tmp_path_factory.mktemp("coop") / "key.pem"
    path.write_bytes(signer.public_pem())
    return load_public_key(path)


# -- the mapping file ---------------------------------------------------------------


def test_the_readme_mapping_is_valid_and_read_whole(mapping):
    assert mapping.stream_item_type_id == "live-stream"
    assert mapping.reporter_type_id == "streamsafe-reporter" and mapping.reporter_id == "streamsafe"
    assert mapping.actions["act-confirm-a1"].category == "A1"
    assert mapping.reviewers == {"lead.reviewer@example.org": "rev-0001"}
    assert (mapping.time_field, mapping.max_age_s, mapping.max_skew_s) == ("custom.decidedAt", 3600, 300)


def test_policy_precedence_rule_then_evidence_in_file_order_then_default(mapping):
    assert mapping.reason_for("grooming-private-young-account", ["hash_match"]).policy_id == "pol-grooming"
    assert mapping.reason_for("weak-hash", ["classifier", "hash_match"]).policy_id == "pol-csam"
    assert mapping.reason_for("weak-hash", ["classifier", "hash_match"]).csam is True
    assert mapping.reason_for(None, ["user_report"]).policy_id == "pol-user-flagged"
    assert mapping.reason_for("other", ["context"]).policy_id == "pol-child-safety"
    assert parse_mapping({**readme_mapping(), "policies": {}}).reason_for("x", ["hash_match"]) is None


@pytest.mark.parametrize(("change", "named"), [
    ({"version": 2}, "version"),
    ({"reporter": {"type_id": "u"}}, "id"),
    ({"stream_item_type_id": ""}, "stream_item_type_id"),
    ({"policies": {"by_evidence": {"hash_match": {"csam": True}}}}, "policy_id"),
    ({"policies": {"by_evidence": {"hashes": {"policy_id": "p"}}}}, "by_evidence"),
    ({"actions": {"a": {"verdict": "maybe"}}}, "verdict"),
    ({"reviewers": {"x@example.org": "has space"}}, "reviewers"),
    ({"callbacks": {"max_age_s": 0}}, "max_age_s"),
    ({"extra": 1}, "extra"),
])
def test_a_wrong_mapping_is_refused_naming_the_field(change, named):
    with pytest.raises(ConfigError, match=named):
        parse_mapping({**readme_mapping(), **change}, "coop.yaml")


def test_load_mapping_reads_yaml_and_names_the_file(tmp_path):
    good = tmp_path / "coop.yaml"
    good.write_text(yaml.safe_dump(readme_mapping()))
    assert load_mapping(good).stream_item_type_id == "live-stream"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_mapping(bad)


# -- the report body ----------------------------------------------------------------


def hash_escalation(example):
    return example(ESCALATIONS, rule="weak-hash", priority="P0", review_due_ms=NOW + 300_000, evidence=[
        {"kind": "hash_match", "ts_ms": NOW - 5000, "signal_type": "pdq", "bank": "ncmec", "entry_id": f"pdq:{PDQ}",
         "distance": 26, "frame_seq": 3, "transform": "rotate90"},
        {"kind": "classifier", "ts_ms": NOW - 4000, "classifier": "nudity", "score": 0.7},
        {"kind": "context", "ts_ms": NOW - 9000, "visibility": "private", "account_age_days": 3}])


def test_report_body_keeps_the_documented_contract(example, mapping, contract):
    escalation = hash_escalation(example)
    jsonschema.validate(escalation, contract[ESCALATIONS].schema)
    body = report_body(escalation, mapping)
    assert report_errors(body) == []
    assert body["reporter"] == {"kind": "user", "typeId": "streamsafe-reporter", "id": "streamsafe"}
    assert body["reportedAt"] == iso_utc(escalation["decided_at_ms"]) and body["reportedAt"].endswith("Z")
    assert body["reportedItem"]["id"] == escalation["stream_id"]
    assert body["reportedItem"]["typeId"] == "live-stream"
    data = body["reportedItem"]["data"]
    assert data["priority"] == "P0" and data["escalation_id"] == escalation["decision_id"]
    assert data["decision_ids"] == [escalation["decision_id"]] and data["review_due_ms"] == NOW + 300_000
    assert data["evidence"][0].startswith("hash_match pdq in bank ncmec at distance 26 (rotate90), frame 3")
    assert body["reportedForReason"]["policyId"] == "pol-csam" and body["reportedForReason"]["csam"] is True
    assert body["reportedForReason"]["reason"].startswith("StreamSafe P0: ")


def test_report_body_carries_no_hash_and_no_entry_id_and_is_deterministic(example, mapping):
    escalation = hash_escalation(example)
    text = orjson.dumps(report_body(escalation, mapping)).decode()
    assert PDQ not in text and "entry_id" not in text
    assert orjson.dumps(report_body(hash_escalation(example), mapping)).decode() == text


def test_the_contract_checker_of_the_fake_coop_refuses_what_coop_refuses(example, mapping):
    good = report_body(hash_escalation(example), mapping)
    assert report_errors({**good, "reporter": {**good["reporter"], "kind": "bot"}}) == [("/reporter/kind",
                                                                                          'must be "user"')]
    assert report_errors({k: v for k, v in good.items() if k != "reportedAt"})[0][0] == "/reportedAt"
    assert report_errors({**good, "reportedAt": "yesterday"})[0][0] == "/reportedAt"
    assert report_errors({**good, "reportedItem": {**good["reportedItem"], "data": "x"}})[0][0] == \
        "/reportedItem/data"
    assert report_errors({**good, "reportedForReason": {"csam": "yes"}})[0][0] == "/reportedForReason/csam"
    assert report_errors({**good, "priority": "P0"}) == [("/priority", "unknown field")]


# -- signatures, freshness, replays ---------------------------------------------------


def test_a_signature_over_the_raw_body_verifies(signer, public_key):
    body = b'{"item":{"id":"st-1","typeId":"live-stream"}}'
    verify_signature(public_key, body, signer.sign(body))


@pytest.mark.parametrize(("signature", "reason"), [
    (None, "unsigned"), ("", "unsigned"), ("not base64!!", "bad_signature"),
    (base64.b64encode(b"x" * 256).decode(), "bad_signature"),
])
def test_a_missing_or_garbled_signature_is_refused(public_key, signature, reason):
    with pytest.raises(CallbackRefused) as refused:
        verify_signature(public_key, b"{}", signature)
    assert (refused.value.reason, refused.value.status) == (reason, 401)


def test_a_tampered_body_or_another_key_is_refused(signer, public_key):
    body = b'{"custom":{"verdict":"benign"}}'
    with pytest.raises(CallbackRefused, match="does not verify"):
        verify_signature(public_key, body.replace(b"benign", b"confirmed"), signer.sign(body))
    with pytest.raises(CallbackRefused, match="does not verify"):
        verify_signature(public_key, body, CoopSigner().sign(body))


def test_load_public_key_refuses_what_is_not_an_rsa_pem(tmp_path):
    path = tmp_path / "key.pem"
    path.write_text("hello")
    with pytest.raises(ConfigError, match="PEM"):
        load_public_key(path)


@pytest.mark.parametrize(("value", "expected"), [
    ("2025-11-28T10:03:10.000Z", 1_764_324_190_000), ("2025-11-28T11:03:10+01:00", 1_764_324_190_000),
    (1_764_324_190_000, 1_764_324_190_000),
])
def test_callback_time_from_the_signed_body(mapping, value, expected):
    assert callback_time_ms({"custom": {"decidedAt": value}}, mapping, NOW) == expected


@pytest.mark.parametrize(("custom", "reason"), [
    ({}, "undated"), ({"decidedAt": "soon"}, "undated"), ({"decidedAt": "2025-11-28T10:03:10"}, "undated"),
    ({"decidedAt": 1_764_324_190}, "undated"), ({"decidedAt": True}, "undated"),
    ({"decidedAt": NOW - 3_600_001}, "stale"), ({"decidedAt": NOW + 300_001}, "stale"),
])
def test_undated_stale_and_future_callbacks_are_refused(mapping, custom, reason):
    with pytest.raises(CallbackRefused) as refused:
        callback_time_ms({"custom": custom}, mapping, NOW)
    assert refused.value.reason == reason


def test_replay_cache_remembers_within_its_window_and_its_size():
    cache = ReplayCache(ttl_s=10, max_entries=2)
    cache.remember("a", 100.0)
    assert cache.seen("a", 109.9) and not cache.seen("a", 110.0)
    for digest in "bcd":
        cache.remember(digest, 200.0)
    assert len(cache) == 2 and not cache.seen("b", 200.0) and cache.seen("d", 200.0)
    cache.forget("d")
    assert not cache.seen("d", 200.0)


def test_parse_body_refuses_what_is_not_a_json_object():
    for body in (b"nope", b"[1]"):
        with pytest.raises(CallbackRefused, match="not"):
            parse_body(body)


# -- callbacks -> verdict records -------------------------------------------------------


def callback(**custom):
    return {"item": {"id": "st-7f3a91", "typeId": "live-stream"}, "action": {"id": "act-x"},
            "policies": [{"id": "pol-csam", "name": "CSAM", "penalty": "SEVERE"}],
            "custom": custom, "actorEmail": "Someone@Example.org"}


def known(stream_id, at_ms):
    return ESCALATION_ID if stream_id == "st-7f3a91" and at_ms >= NOW else None


def test_a_confirmed_callback_becomes_a_valid_verdict_on_the_forwarded_escalation(mapping, contract):
    record = verdict_record(callback(verdict="confirmed", category="b2"), mapping, NOW, b"k", known)
    jsonschema.validate(record, contract[REVIEW_VERDICTS].schema)
    assert record["verdict"] == "confirmed" and record["category"] == "B2"
    assert record["escalation_id"] == ESCALATION_ID and record["ts_ms"] == NOW
    assert record["stream_id"] == "st-7f3a91"


def test_an_escalation_id_in_the_body_is_ignored_and_an_unknown_stream_gets_a_stream_verdict(mapping):
    document = {**callback(verdict="benign", escalation_id="dec-" + "f" * 32),
                "item": {"id": "st-other", "typeId": "live-stream"}}
    record = verdict_record(document, mapping, NOW, b"k", known)
    assert "escalation_id" not in record and record["verdict"] == "benign" and "category" not in record


def test_the_verdict_is_the_same_record_for_the_same_body(mapping):
    assert verdict_record(callback(verdict="benign"), mapping, NOW, b"k", known) == \
        verdict_record(callback(verdict="benign"), mapping, NOW, b"k", known)


def test_reviewers_are_mapped_or_pseudonymous(mapping):
    assert reviewer_id_for(" Lead.Reviewer@example.org", mapping, None) == "rev-0001"
    pseudonym = reviewer_id_for("Someone@Example.org", mapping, b"key")
    assert re.fullmatch(r"coop-[0-9a-f]{24}", pseudonym) and "someone" not in pseudonym
    assert pseudonym == reviewer_id_for("someone@example.org", mapping, b"key")
    assert pseudonym != reviewer_id_for("someone@example.org", mapping, b"another key")


def test_an_action_without_a_verdict_in_its_body_is_read_from_the_mapping(mapping):
    document = {**callback(), "action": {"id": "act-confirm-a1"}}
    record = verdict_record(document, mapping, NOW, None, known)
    assert (record["verdict"], record["category"]) == ("confirmed", "A1")


@pytest.mark.parametrize(("document", "reason"), [
    ({"item": "st-1"}, "malformed"),
    ({**callback(verdict="benign"), "item": {"id": "st-1", "typeId": "chat-message"}}, "unknown_item"),
    ({**callback(verdict="benign"), "item": {"id": "has space", "typeId": "live-stream"}}, "unknown_item"),
    (callback(verdict="looks fine"), "invalid_verdict"),
    (callback(verdict="confirmed"), "invalid_verdict"),
    (callback(verdict="confirmed", category="C3"), "invalid_verdict"),
    ({**callback(verdict="benign"), "actorEmail": None}, "no_reviewer"),
])
def test_unusable_callbacks_are_refused_by_reason(mapping, document, reason):
    with pytest.raises(CallbackRefused) as refused:
        verdict_record(document, mapping, NOW, None, known)
    assert refused.value.reason == reason


# -- Coop's answers, as the forwarder reads them (the fake Coop over local HTTP) ----------


async def test_the_client_reads_coops_answers(example, mapping):
    from streamsafe.brokers.base import free_port
    from streamsafe.integrations.coop.forwarder import CoopClient, CoopRejected, CoopUnavailable
    from tests.coop_fake import FakeCoop

    body = report_body(hash_escalation(example), mapping)
    coop = await FakeCoop("right-key").start()
    try:
        async with CoopClient(coop.url, "right-key") as client:
            report_id = await client.post_report(body)
            assert report_id == coop.reports[0]["reportId"]
            with pytest.raises(CoopRejected, match="400"):
                await client.post_report({**body, "reportedAt": "soon"})
        async with CoopClient(coop.url, "wrong-key") as client:
            with pytest.raises(CoopUnavailable, match="401"):  # a key can be fixed: retried, never dropped
                await client.post_report(body)
        async with CoopClient(f"http://127.0.0.1:{free_port()}", "right-key") as client:
            with pytest.raises(CoopUnavailable):
                await client.post_report(body)
    finally:
        await coop.stop()
    assert len(coop.reports) == 1
