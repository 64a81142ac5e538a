"""Signed control records without a broker: canonical encoding, sign/verify, trusted key files,
the control readers' refusals, the audit reader's records and the rollback's choice."""

from __future__ import annotations

import base64
import stat

import jsonschema
import orjson
import pytest
import yaml
from aiokafka import ConsumerRecord

from streamsafe.control.auditor import ControlAuditor
from streamsafe.control.banks import BankControl
from streamsafe.control.policies import PolicyControl
from streamsafe.control.rollback import applied_policies, choose
from streamsafe.control.signing import BAD_SIGNATURE, SigningKey, TrustedKeys, canonical, generate_key
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.errors import ConfigError, PolicyError, RejectedInput
from streamsafe.events.bank_entries import encode_bank_removal, entry_id_for
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY, REVIEW_VERDICTS
from streamsafe.matching.banks import HashBanks
from streamsafe.observability.metrics import StreamSafeMetrics
from streamsafe.policy.loader import default_policy_text, load_policy
from streamsafe.policy.policyset import PolicySet
from streamsafe.settings import Settings
from tests.signing_support import CONTROL_KEY, CONTROL_TRUST, REVIEW_KEY, new_key, trust, write_public

ENTRY = {"schema_version": 1, "bank": "ncmec", "signal_type": "md5", "hash": "a" * 32, "added_ms": 1}
ENTRY_ID = entry_id_for("ncmec", "md5", "a" * 32).encode()


def test_the_canonical_encoding_ignores_key_order_and_whitespace():
    assert canonical({"b": 1, "a": {"d": [1, 2], "c": None}}) == b'{"a":{"c":null,"d":[1,2]},"b":1}'
    assert canonical(orjson.loads(b'{ "a" : {"d":[1,2] , "c":null}, "b":1 }')) == canonical(
        {"b": 1, "a": {"c": None, "d": [1, 2]}})


def test_a_signed_record_verifies_and_names_its_key():
    signed = CONTROL_KEY.sign(HASHBANK_ENTRIES, ENTRY_ID, ENTRY)
    assert signed["signature"]["alg"] == "ed25519" and len(base64.b64decode(signed["signature"]["sig"])) == 64
    assert CONTROL_TRUST.verify(HASHBANK_ENTRIES, ENTRY_ID, signed) == CONTROL_KEY.key_id
    # the field order of the bytes on the wire does not matter
    reordered = orjson.loads(orjson.dumps(dict(reversed(list(signed.items())))))
    assert CONTROL_TRUST.verify(HASHBANK_ENTRIES, ENTRY_ID, reordered) == CONTROL_KEY.key_id


@pytest.mark.parametrize(("case", "detail"), [
    ("unsigned", "unsigned"),
    ("tampered", "does not verify"),
    ("another key", "does not verify"),
    ("another topic", "does not verify"),
    ("unknown key", "is not trusted"),
    ("wrong alg", "alg"),
])
def test_what_is_refused_as_bad_signature(case, detail):
    signed = CONTROL_KEY.sign(HASHBANK_ENTRIES, ENTRY_ID, ENTRY)
    topic, key = HASHBANK_ENTRIES, ENTRY_ID
    if case == "unsigned":
        signed = dict(ENTRY)
    elif case == "tampered":
        signed = {**signed, "bank": "platform-allow"}
    elif case == "another key":
        key = entry_id_for("ncmec", "md5", "b" * 32).encode()
    elif case == "another topic":
        topic = POLICY
    elif case == "unknown key":
        signed = new_key().sign(topic, key, ENTRY)
    elif case == "wrong alg":
        signed = {**signed, "signature": {**signed["signature"], "alg": "rsa"}}
    with pytest.raises(RejectedInput) as refused:
        CONTROL_TRUST.verify(topic, key, signed)
    assert refused.value.reason == BAD_SIGNATURE and detail in refused.value.detail


def test_a_record_verified_once_is_not_checked_again_while_its_key_is_trusted():
    keys = trust(CONTROL_KEY)  # its own memo
    value = CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, ENTRY_ID, ENTRY)
    for _ in range(3):  # the control reader, the audit reader, a redelivery
        assert keys.verify_bytes(HASHBANK_ENTRIES, ENTRY_ID, value)[1] == CONTROL_KEY.key_id
    assert keys.verifications == 1
    # the memo is by topic, key and bytes: anything else is checked, and refused if it does not hold
    tampered = value.replace(b'"md5"', b'"sha256"')
    other_key = entry_id_for("ncmec", "md5", "b" * 32).encode()
    for topic, key, changed in ((HASHBANK_ENTRIES, ENTRY_ID, tampered), (POLICY, ENTRY_ID, value),
                                (HASHBANK_ENTRIES, other_key, value)):
        with pytest.raises(RejectedInput) as refused:
            keys.verify_bytes(topic, key, changed)
        assert refused.value.reason == BAD_SIGNATURE
    assert keys.verifications == 4
    del keys.keys[CONTROL_KEY.key_id]  # a key no longer trusted is not trusted from memory either
    with pytest.raises(RejectedInput, match="not trusted"):
        keys.verify_bytes(HASHBANK_ENTRIES, ENTRY_ID, value)


def test_the_verification_memo_is_bounded_oldest_first():
    keys = TrustedKeys({CONTROL_KEY.key_id: CONTROL_KEY.private.public_key()}, memo_size=2)
    values = [CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, ENTRY_ID, {**ENTRY, "added_ms": i}) for i in range(3)]
    for value in values:
        keys.verify_bytes(HASHBANK_ENTRIES, ENTRY_ID, value)
    keys.verify_bytes(HASHBANK_ENTRIES, ENTRY_ID, values[2])  # remembered
    assert keys.verifications == 3
    keys.verify_bytes(HASHBANK_ENTRIES, ENTRY_ID, values[0])  # forgotten: checked again
    assert keys.verifications == 4


def test_trusted_keys_load_from_a_directory_or_one_file_of_several(tmp_path):
    a, b = new_key(), new_key()
    write_public([a], (tmp_path / "dir").mkdir() or tmp_path / "dir" / "a.pem")
    write_public([b], tmp_path / "dir" / "b.pub")
    (tmp_path / "dir" / "README").write_text("not a key")
    assert set(TrustedKeys.load(tmp_path / "dir").keys) == {a.key_id, b.key_id}
    assert set(TrustedKeys.load(write_public([a, b], tmp_path / "both.pem")).keys) == {a.key_id, b.key_id}
    (tmp_path / "bad.pem").write_text("nothing here")
    with pytest.raises(ConfigError):
        TrustedKeys.load(tmp_path / "bad.pem")
    assert len(TrustedKeys.load(None)) == 0


def test_generated_keys_are_private_and_their_ids_match(tmp_path):
    private, public, key_id = generate_key(tmp_path / "k", "admin")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert SigningKey.load(private).key_id == key_id and list(TrustedKeys.load(public).keys) == [key_id]
    with pytest.raises(ConfigError, match="exists"):
        generate_key(tmp_path / "k", "admin")
    with pytest.raises(ConfigError, match="key name"):
        generate_key(tmp_path / "k", "../elsewhere")


def record(topic, offset, key, value, ts=1_764_324_000_000):
    return ConsumerRecord(topic, 0, offset, ts, 0, key, value, None, len(value or b""), len(key or b""), [])


async def test_bank_entries_apply_only_when_signed_by_a_trusted_key_and_removals_are_signed_records():
    banks, publisher, metrics = HashBanks(), InMemoryPublisher(), StreamSafeMetrics.create()
    control = BankControl(banks, publisher, metrics, CONTROL_TRUST)
    other = {**ENTRY, "hash": "b" * 32}
    other_id = entry_id_for("ncmec", "md5", "b" * 32).encode()
    await control.apply([
        record(HASHBANK_ENTRIES, 0, ENTRY_ID, CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, ENTRY_ID, ENTRY)),
        record(HASHBANK_ENTRIES, 1, other_id, orjson.dumps(other)),  # unsigned (kcat)
        record(HASHBANK_ENTRIES, 2, other_id, new_key().sign_bytes(HASHBANK_ENTRIES, other_id, other)),
        record(HASHBANK_ENTRIES, 3, ENTRY_ID, None),  # a tombstone: cannot be signed
    ])
    assert len(banks) == 1
    assert [d.reason for d in publisher.dead_letters] == [BAD_SIGNATURE] * 3
    assert metrics.control_refused.labels(HASHBANK_ENTRIES, BAD_SIGNATURE)._value.get() == 3
    removal = CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, ENTRY_ID, encode_bank_removal(2))
    await control.apply([record(HASHBANK_ENTRIES, 4, ENTRY_ID, removal)])
    assert len(banks) == 0
    # a signed removal of one entry cannot be replayed on another entry's key
    await control.apply([
        record(HASHBANK_ENTRIES, 5, ENTRY_ID, CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, ENTRY_ID, ENTRY)),
        record(HASHBANK_ENTRIES, 6, other_id, removal)])
    assert len(banks) == 1 and publisher.dead_letters[-1].reason == BAD_SIGNATURE


def policy_value(version: str, key: bytes = b"live", signer: SigningKey = CONTROL_KEY, **extra) -> bytes:
    document = yaml.safe_load(default_policy_text()) | {"version": version}
    return signer.sign_bytes(POLICY, key, {"schema_version": 1, "policy": document, "published_at_ms": 1, **extra})


async def test_policies_apply_only_when_signed_and_a_shadow_cannot_be_replayed_as_live(contract):
    held = {"p": PolicySet(load_policy())}
    publisher = InMemoryPublisher()
    control = PolicyControl(contract[POLICY], lambda: held["p"], lambda p: held.update(p=p), publisher,
                            trusted=CONTROL_TRUST)
    shadow = policy_value("shadow-1", b"shadow/a")
    unsigned = orjson.dumps({"schema_version": 1, "published_at_ms": 1,
                             "policy": yaml.safe_load(default_policy_text()) | {"version": "kcat"}})
    await control.apply([record(POLICY, 0, b"live", unsigned), record(POLICY, 1, b"shadow/a", shadow),
                         record(POLICY, 2, b"live", shadow), record(POLICY, 3, b"live", policy_value("v2"))])
    assert held["p"].live.version == "v2" and held["p"].shadows["a"].version == "shadow-1"
    assert [d.reason for d in publisher.dead_letters] == [BAD_SIGNATURE, BAD_SIGNATURE]
    retire = CONTROL_KEY.sign_bytes(POLICY, b"shadow/a", {"schema_version": 1, "retired": True,
                                                          "published_at_ms": 2})
    await control.apply([record(POLICY, 4, b"shadow/a", None), record(POLICY, 5, b"shadow/a", retire)])
    assert "a" not in held["p"].shadows and publisher.dead_letters[-1].reason == BAD_SIGNATURE


def test_the_audit_reader_writes_one_record_per_policy_and_bank_run_and_refusal(contract):
    auditor = ControlAuditor(Settings(), contract[POLICY], InMemoryPublisher(), CONTROL_TRUST, "w@test")
    first = auditor.audit_batch(POLICY, [record(POLICY, 0, b"live", policy_value("v1")),
                                         record(POLICY, 1, b"live", policy_value("v2", signer=new_key())),
                                         record(POLICY, 2, b"live", policy_value("v3"))])
    assert [(a["outcome"], a.get("previous_version"), a.get("new_version")) for a in first] == [
        ("applied", None, "v1"), ("refused", None, None), ("applied", "v1", "v3")]
    assert first[0]["key_id"] == CONTROL_KEY.key_id and first[1]["reason"] == BAD_SIGNATURE
    assert first[1]["key_id"] not in (None, CONTROL_KEY.key_id)  # the key it claimed
    assert first[2]["policy"]["version"] == "v3"
    entries = [({**ENTRY, "hash": f"{i:032x}"}, entry_id_for("ncmec", "md5", f"{i:032x}").encode()) for i in range(30)]
    records = [record(HASHBANK_ENTRIES, i, k, CONTROL_KEY.sign_bytes(HASHBANK_ENTRIES, k, e))
               for i, (e, k) in enumerate(entries)]
    records.insert(10, record(HASHBANK_ENTRIES, 99, b"ncmec:x", orjson.dumps(ENTRY)))
    audits = auditor.audit_batch(HASHBANK_ENTRIES, records)
    assert [(a["outcome"], a.get("count")) for a in audits] == [("applied", 10), ("refused", None), ("applied", 20)]
    assert audits[1]["key_id"] is None and audits[1]["detail"] == "unsigned"
    assert len(audits[2]["entry_ids"]) == 20 and all("a" * 32 not in str(a) for a in audits)  # ids, never hashes
    again = auditor.audit_batch(HASHBANK_ENTRIES, records)
    assert [a["audit_id"] for a in again] == [a["audit_id"] for a in audits]  # a redelivery: same ids
    for audit in [*first, *audits]:
        jsonschema.validate(audit, contract["streamsafe.audit"].schema)


def test_a_rollback_goes_back_to_the_version_before_the_live_one_or_the_one_named():
    def applied(version, key="live"):
        return {"topic": POLICY, "key": key, "change": "policy_published", "outcome": "applied",
                "new_version": version, "policy": {"version": version}}
    trail = [applied("v1"), applied("s1", "shadow/a"), applied("v2"), {**applied("v9"), "outcome": "refused"},
             applied("v3")]
    history = applied_policies(trail, "live")
    assert [r["new_version"] for r in history] == ["v1", "v2", "v3"]
    assert choose(history, None)[1]["new_version"] == "v2"
    assert choose(history, "v1") == ("v3", history[0])
    with pytest.raises(PolicyError):
        choose(history, "v9")
    with pytest.raises(PolicyError):
        choose(history[:1], None)


def test_verdict_trust_is_separate_from_control_trust():
    verdict = {"schema_version": 1, "stream_id": "s1", "verdict": "benign", "reviewer_id": "r", "ts_ms": 1}
    signed = CONTROL_KEY.sign(REVIEW_VERDICTS, b"s1", verdict)  # a bank admin's key is not the review tool's
    with pytest.raises(RejectedInput):
        trust(REVIEW_KEY).verify(REVIEW_VERDICTS, b"s1", signed)
    assert trust(REVIEW_KEY).verify(REVIEW_VERDICTS, b"s1", REVIEW_KEY.sign(REVIEW_VERDICTS, b"s1", verdict))
