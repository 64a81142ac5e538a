"""DSA statements of reasons: the builder, the schema's field rules, and the worker's path."""

from __future__ import annotations

import copy

import jsonschema
import orjson
import pytest
import yaml

from streamsafe.agents.clock import RecordClock
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.errors import PolicyError
from streamsafe.events.contract import CLASSIFIER_SIGNALS, FRAME_HASHES, METADATA, REVIEW_VERDICTS, STATEMENTS
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.events.decode import InputDecoder
from streamsafe.events.models import BankEntry
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.decisions import Decision
from streamsafe.policy.loader import default_policy_text, load_policy, policy_from_mapping
from streamsafe.policy.model import Action
from streamsafe.policy.policyset import PolicySet
from streamsafe.review.statements import StatementContext, build_statement, puid_of
from streamsafe.scoring.evidence import Evidence
from tests.signing_support import VERDICT_TRUST, encoded

T0 = 1_764_324_000_000
KNOWN = "cd" * 32
POLICY = load_policy()


@pytest.fixture
def validator(contract):
    return jsonschema.Draft7Validator(contract[STATEMENTS].schema)


def decision(action="block", rule="authority-hash-strong", evidence=None, restrictions=(), **extra):
    evidence = evidence or (Evidence("hash_match", T0, (("signal_type", "pdq"), ("bank", "ncmec"),
                                                      ("entry_id", "ncmec:000417"), ("distance", 2),
                                                      ("frame_seq", 7))),)
    return Decision.create("st-1", Action(action, restrictions=restrictions), ("why",), tuple(evidence),
                           POLICY.version, decided_at_ms=T0 + 5, event_ts_ms=T0, rule=rule, **extra)


def valid(validator, record):
    errors = [e.message for e in validator.iter_errors(record)]
    assert not errors, errors
    return record["statement"]


def test_a_policy_block_is_illegal_csam_fully_automated_and_cites_the_policys_ground(validator):
    s = valid(validator, build_statement(decision(), POLICY, StatementContext(content_ms=T0 - 86_400_000)).record)
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_DISABLED"]
    assert s["decision_ground"] == "DECISION_GROUND_ILLEGAL_CONTENT"
    assert s["illegal_content_legal_ground"] == POLICY.statements.legal_grounds["csam"].ground
    assert s["category_specification"] == ["KEYWORD_CHILD_SEXUAL_ABUSE_MATERIAL"]
    assert (s["automated_detection"], s["automated_decision"]) == ("Yes", "AUTOMATED_DECISION_FULLY")
    assert s["source_type"] == "SOURCE_VOLUNTARY"
    assert (s["content_date"], s["application_date"]) == ("2025-11-27", "2025-11-28")


def test_the_legal_ground_text_is_the_policys_not_the_codes(validator):
    doc = yaml.safe_load(default_policy_text())
    doc["statements"]["legal_grounds"]["csam"]["legal_ground"] = "Section 184b StGB (example)"
    s = valid(validator, build_statement(decision(), policy_from_mapping(doc)).record)
    assert s["illegal_content_legal_ground"] == "Section 184b StGB (example)"
    del doc["statements"]  # a policy without the section takes the packaged default's texts
    assert policy_from_mapping(doc).statements == POLICY.statements


def test_a_policy_with_a_ground_over_the_databases_limit_is_refused():
    doc = yaml.safe_load(default_policy_text())
    doc["statements"]["legal_grounds"]["grooming"]["legal_ground"] = "x" * 501
    with pytest.raises(PolicyError, match="at most 500"):
        policy_from_mapping(doc)
    del doc["statements"]["legal_grounds"]["grooming"]
    with pytest.raises(PolicyError, match="lacks 'grooming'"):
        policy_from_mapping(doc)


def test_a_grooming_restriction_restricts_interaction_and_names_grooming(validator):
    evidence = (Evidence("classifier", T0, (("classifier", "grooming_text"), ("score", 0.91),
                                            ("chat_message_id", "msg-1"))),)
    s = valid(validator, build_statement(decision("restrict", "grooming-private-young-account", evidence,
                                                  ("chat",)), POLICY).record)
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED"]
    assert s["category_specification"] == ["KEYWORD_GROOMING_SEXUAL_ENTICEMENT_MINORS"]
    assert s["illegal_content_legal_ground"] == POLICY.statements.legal_grounds["grooming"].ground
    assert s["content_type"] == ["CONTENT_TYPE_VIDEO", "CONTENT_TYPE_TEXT"]


def test_restrictions_map_to_demotion_and_payment_suspension(validator):
    s = valid(validator, build_statement(decision("restrict", "weak-hash-repeated",
                                                  restrictions=("chat", "discovery", "gifting")), POLICY).record)
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_CONTENT_INTERACTION_RESTRICTED",
                                        "DECISION_VISIBILITY_CONTENT_DEMOTED"]
    assert s["decision_monetary"] == "DECISION_MONETARY_SUSPENSION"
    only_gifts = valid(validator, build_statement(decision("restrict", "x", restrictions=("gifting",)), POLICY).record)
    assert "decision_visibility" not in only_gifts and only_gifts["decision_monetary"]


def test_user_reports_make_an_article_16_notice_and_a_reviewer_makes_it_partly_automated(validator):
    evidence = (Evidence("user_report", T0, (("count", 3),)),
                Evidence("classifier", T0, (("classifier", "csam"), ("score", 0.95))),
                Evidence("review", T0 + 9, (("verdict", "confirmed"), ("category", "grooming"))))
    s = valid(validator, build_statement(decision(rule="reviewer-confirmed", evidence=evidence), POLICY).record)
    assert s["source_type"] == "SOURCE_ARTICLE_16"
    assert s["automated_decision"] == "AUTOMATED_DECISION_PARTIALLY"
    assert s["category_specification"] == ["KEYWORD_GROOMING_SEXUAL_ENTICEMENT_MINORS"]
    human_only = (Evidence("user_report", T0, (("count", 1),)),
                  Evidence("review", T0 + 9, (("verdict", "confirmed"), ("category", "A2"))))
    s = valid(validator, build_statement(decision(rule="reviewer-confirmed", evidence=human_only), POLICY).record)
    assert (s["automated_detection"], s["automated_decision"]) == ("No", "AUTOMATED_DECISION_NOT_AUTOMATED")


def test_a_terms_rule_is_incompatible_content(validator):
    doc = yaml.safe_load(default_policy_text())
    doc["statements"]["harm_of_rules"]["csam-classifier"] = "terms"
    s = valid(validator, build_statement(decision("restrict", "csam-classifier", restrictions=("discovery",)),
                                         policy_from_mapping(doc)).record)
    assert s["decision_ground"] == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    assert s["incompatible_content_illegal"] == "No" and "illegal_content_legal_ground" not in s


def test_a_reinstatement_names_what_it_reverses(validator):
    blocked = decision()
    reinstate = decision("reinstate", "appeal-reversed", (Evidence("review", T0 + 99, (("verdict", "reversed"),)),),
                         appeal_id="apl-1", reverses=blocked.decision_id)
    record = build_statement(reinstate, POLICY, StatementContext(reversed_action="block",
                                                                 reversed_harm="csam")).record
    s = valid(validator, record)
    assert record["reverses"] == blocked.decision_id and record["appeal_id"] == "apl-1"
    assert s["decision_visibility"] == ["DECISION_VISIBILITY_OTHER"] and "block" in s["decision_visibility_other"]
    assert s["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"


def test_no_statement_for_escalations_reports_or_shadows():
    for d in (decision("escalate"), decision("report")):
        with pytest.raises(ValueError):
            build_statement(d, POLICY)
    shadow = Decision.create("st-1", Action("block"), ("why",), (Evidence("risk", T0, ()),), "v", decided_at_ms=T0,
                             event_ts_ms=T0, shadow=True)
    with pytest.raises(ValueError):
        build_statement(shadow, POLICY)


def test_puid_keeps_to_the_databases_characters_and_stays_unique():
    a, b = puid_of("st.1:x@y", "dec-" + "a" * 32), puid_of("st_1_x_y", "dec-" + "a" * 32)
    assert a != b and all(c.isalnum() or c in "-_" for c in a)
    assert len(puid_of("s" * 128, "dec-" + "b" * 32)) <= 500


def test_statements_carry_no_hash_values_entry_ids_or_person_ids(validator):
    evidence = (Evidence("hash_match", T0, (("bank", "ncmec"), ("entry_id", "ncmec:000417"), ("frame_seq", 7))),
                Evidence("review", T0, (("verdict", "confirmed"), ("category", "B2"), ("escalation_id", "dec-1"))))
    d = Decision.create("st-1", Action("block"), ("reviewer rev-0193 confirmed (B2)",), evidence, POLICY.version,
                        decided_at_ms=T0, event_ts_ms=T0, rule="reviewer-confirmed")
    text = orjson.dumps(build_statement(d, POLICY).record).decode()
    assert "ncmec:000417" not in text and "rev-0193" not in text and KNOWN not in text
    assert "ncmec" not in orjson.dumps(build_statement(d, POLICY).record["statement"]).decode()  # nor the list


# -- the schema's field rules: each violated once must fail ------------------------------------

def _base():
    return copy.deepcopy(build_statement(decision(), POLICY).record)


def _incompatible():
    record = _base()
    s = record["statement"]
    del s["illegal_content_legal_ground"], s["illegal_content_explanation"]
    s.update(decision_ground="DECISION_GROUND_INCOMPATIBLE_CONTENT", incompatible_content_ground="ToS 4.2",
             incompatible_content_explanation="why", incompatible_content_illegal="No")
    return record


def _drop(record, *names):
    for name in names:
        record["statement"].pop(name, None)
    return record


def _set(record, **fields):
    record["statement"].update(fields)
    return record


VIOLATIONS = {
    "no decision of any kind": lambda: _drop(_base(), "decision_visibility"),
    "illegal without legal ground": lambda: _drop(_base(), "illegal_content_legal_ground"),
    "illegal without explanation": lambda: _drop(_base(), "illegal_content_explanation"),
    "illegal with an incompatible field": lambda: _set(_base(), incompatible_content_ground="ToS"),
    "incompatible without ground": lambda: _drop(_incompatible(), "incompatible_content_ground"),
    "incompatible without explanation": lambda: _drop(_incompatible(), "incompatible_content_explanation"),
    "incompatible without illegal": lambda: _drop(_incompatible(), "incompatible_content_illegal"),
    "incompatible with a legal ground": lambda: _set(_incompatible(), illegal_content_legal_ground="x"),
    "incompatible illegal not Yes/No": lambda: _set(_incompatible(), incompatible_content_illegal="yes"),
    "visibility other unexplained": lambda: _set(_base(), decision_visibility=["DECISION_VISIBILITY_OTHER"]),
    "visibility other text without other": lambda: _set(_base(), decision_visibility_other="x"),
    "monetary other unexplained": lambda: _set(_base(), decision_monetary="DECISION_MONETARY_OTHER"),
    "content type other unexplained": lambda: _set(_base(), content_type=["CONTENT_TYPE_OTHER"]),
    "unknown visibility": lambda: _set(_base(), decision_visibility=["DECISION_VISIBILITY_GONE"]),
    "unknown account decision": lambda: _set(_base(), decision_account="DECISION_ACCOUNT_BANNED"),
    "unknown ground": lambda: _set(_base(), decision_ground="DECISION_GROUND_OTHER"),
    "legal ground over 500": lambda: _set(_base(), illegal_content_legal_ground="x" * 501),
    "illegal explanation over 2000": lambda: _set(_base(), illegal_content_explanation="x" * 2001),
    "incompatible explanation over 2000": lambda: _set(_incompatible(), incompatible_content_explanation="x" * 2001),
    "facts over 5000": lambda: _set(_base(), decision_facts="x" * 5001),
    "facts missing": lambda: _drop(_base(), "decision_facts"),
    "content date not YYYY-MM-DD": lambda: _set(_base(), content_date="28/11/2025"),
    "application date with time": lambda: _set(_base(), application_date="2025-11-28T10:00:00Z"),
    "content type missing": lambda: _drop(_base(), "content_type"),
    "content type empty": lambda: _set(_base(), content_type=[]),
    "unknown source type": lambda: _set(_base(), source_type="SOURCE_USER"),
    "automated detection not Yes/No": lambda: _set(_base(), automated_detection=True),
    "unknown automated decision": lambda: _set(_base(), automated_decision="AUTOMATED_DECISION_MOSTLY"),
    "puid with a dot": lambda: _set(_base(), puid="st.1"),
    "puid over 500": lambda: _set(_base(), puid="a" * 501),
    "unknown keyword": lambda: _set(_base(), category_specification=["KEYWORD_SOMETHING"]),
    "category missing": lambda: _drop(_base(), "category"),
    "unknown category": lambda: _set(_base(), category="STATEMENT_CATEGORY_CHILDREN"),
    "unknown provision decision": lambda: _set(_base(), decision_provision="DECISION_PROVISION_GONE"),
    "unknown content type": lambda: _set(_base(), content_type=["CONTENT_TYPE_STREAM"]),
    "a field the database does not take": lambda: _set(_base(), hash="ab" * 32),
    "reinstate without reverses": lambda: {**_base(), "action": "reinstate", "appeal_id": "apl-1"},
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_each_field_rule_violated_once_fails(validator, name):
    assert not list(validator.iter_errors(_base())), "the base statement must be valid"
    assert list(validator.iter_errors(VIOLATIONS[name]())), f"{name} passed the schema"


# -- the worker's path ---------------------------------------------------------------------------

def src(topic, offset):
    return SourceRecord(topic, 3, offset, T0 + offset)


@pytest.fixture
def handler(contract):
    banks = HashBanks()
    banks.add(BankEntry("ncmec:1", "ncmec", "pdq", KNOWN))
    policies = PolicySet(load_policy(), {"shadow-a": load_policy()})
    return RecordHandler(InputDecoder(contract, 65536), banks, policies, {}, InMemoryPublisher(), incidents={},
                         trusted_verdicts=VERDICT_TRUST,
                         clock=RecordClock())


async def _send(handler, topic, value, offset):
    key = value["stream_id"].encode()
    await handler.handle(topic, key, encoded(topic, key, value), src(topic, offset))


async def test_every_live_block_and_restrict_gets_one_valid_statement(handler, validator):
    await _send(handler, METADATA, {"schema_version": 1, "event": "stream.started", "stream_id": "s1", "ts_ms": T0,
                                    "broadcaster_id": "acct-9", "visibility": "public"}, 0)
    for seq in range(2):  # the second match changes nothing that is emitted
        await _send(handler, FRAME_HASHES, {"schema_version": 1, "stream_id": "s1", "frames": [
            {"seq": seq, "ts_ms": T0 + seq, "pdq": KNOWN, "pdq_quality": 90}]}, seq + 1)
    await _send(handler, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s2", "classifier": "csam",
                                              "model_version": "m1", "score": 0.95, "ts_ms": T0 + 5}, 5)
    published = handler.publisher
    enforced = [d for d in published.decisions if d.action in ("block", "restrict") and not d.shadow]
    assert {d.action for d in enforced} == {"block", "restrict"}
    assert any(d.shadow and d.action == "block" for d in published.decisions)  # shadows: no statement
    by_decision = {s.record["decision_id"]: s.record for s in published.statements}
    assert sorted(by_decision) == sorted(d.decision_id for d in enforced)
    assert len(published.statements) == len(by_decision)
    for record in by_decision.values():
        valid(validator, record)
    block = next(r for r in by_decision.values() if r["action"] == "block")
    assert block["statement"]["content_date"] == "2025-11-28"


async def test_a_redelivered_record_yields_the_same_statement(handler):
    value = {"schema_version": 1, "stream_id": "s3", "frames": [{"seq": 1, "ts_ms": T0, "pdq": KNOWN,
                                                                "pdq_quality": 90}]}
    await _send(handler, FRAME_HASHES, value, 1)
    first = [s.encode() for s in handler.publisher.statements]
    handler.states.clear(), handler.incidents.clear()  # a crash before the commit: state and offsets lost
    await _send(handler, FRAME_HASHES, value, 1)
    assert [s.encode() for s in handler.publisher.statements] == first * 2  # byte-identical: consumers de-duplicate


async def test_a_reviewer_confirmed_block_is_partly_automated(handler, validator):
    await _send(handler, CLASSIFIER_SIGNALS, {"schema_version": 1, "stream_id": "s4", "classifier": "csam",
                                              "model_version": "m1", "score": 0.95, "ts_ms": T0 + 5}, 5)
    escalation = next(d for d in handler.publisher.decisions if d.action == "escalate" and not d.shadow)
    await _send(handler, REVIEW_VERDICTS, {"schema_version": 1, "stream_id": "s4", "verdict": "confirmed",
                                           "category": "A2", "reviewer_id": "rev-1", "ts_ms": T0 + 60_000,
                                           "escalation_id": escalation.decision_id}, 9)
    record = next(s.record for s in handler.publisher.statements if s.record["action"] == "block")
    s = valid(validator, record)
    assert s["automated_decision"] == "AUTOMATED_DECISION_PARTIALLY"
