"""Control records are validated whole: every malformed policy in the corpus is refused and
dead-lettered, the one in force stays, and the records after it still apply (no broker)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from aiokafka import ConsumerRecord

from streamsafe.control.banks import BankControl
from streamsafe.control.policies import PolicyControl
from streamsafe.enforcement.publisher import InMemoryPublisher
from streamsafe.events.contract import HASHBANK_ENTRIES, POLICY
from streamsafe.matching.banks import HashBanks
from streamsafe.policy.loader import default_policy_text, load_policy
from streamsafe.policy.policyset import PolicySet
from tests.signing_support import CONTROL_KEY, CONTROL_TRUST, encoded

GOOD = yaml.safe_load(default_policy_text())


def policy(**changes):
    """The default policy with top-level sections replaced (None deletes one)."""
    doc = {**GOOD, **changes}
    return {k: v for k, v in doc.items() if v is not None}


def fused(**changes):
    return policy(fusion={**GOOD["fusion"], **changes})


def context(**changes):
    return fused(context={**GOOD["fusion"]["context"], **changes})


MALFORMED = {
    "matching is a list": policy(matching=[1]),
    "corroboration is a number": fused(corroboration=5),
    "corroboration member not a string": fused(corroboration=[{"name": "x", "members": [1, {"a": 2}]}]),
    "fusion is a string": policy(fusion="high"),
    "classifiers is a list": fused(classifiers=["nudity"]),
    "classifier is a number": fused(classifiers={"nudity": 3}),
    "strong_match is a list": fused(strong_match=[12]),
    "context is a string": fused(context="private"),
    "new_account_days 1e308": context(new_account_days=1e308),
    "new_account_days a float": context(new_account_days=7.5),
    "prior_log_odds 1e308": fused(prior_log_odds=1e308),
    "prior_log_odds nan": fused(prior_log_odds=math.nan),
    "weight inf": fused(default_classifier={"slope": 10, "midpoint": 0.7, "weight": math.inf, "half_life": "10m"}),
    "negative weight": fused(default_classifier={"slope": 10, "midpoint": 0.7, "weight": -1, "half_life": "10m"}),
    "midpoint above one": fused(default_classifier={"slope": 10, "midpoint": 7, "weight": 1, "half_life": "10m"}),
    "max_frames zero": fused(weak_match={"log_odds": 1.5, "max_frames": 0, "half_life": "30m"}),
    "half-life of a century": fused(strong_match={"log_odds": 12, "half_life": 3_153_600_000}),
    "report window a week": fused(reports={"weight": 0.8, "window": "7d"}),
    "review_sla a list": policy(review_sla=["P0"]),
    "sla of zero": policy(review_sla={"P0": 0}),
    "banks a list": policy(banks=["ncmec"]),
    "trust a number": policy(rules=[{"name": "r", "when": {"strong_matches": {"gte": 1, "trust": 5}},
                                     "then": ["block"]}]),
    "count threshold absurd": policy(rules=[{"name": "r", "when": {"strong_matches": {"gte": 1e12}},
                                             "then": ["block"]}]),
    "rule value nan": policy(rules=[{"name": "r", "when": {"risk": {"gte": math.nan}}, "then": ["block"]}]),
    "rules a mapping": policy(rules={"r": 1}),
    "no version": policy(version=None),
    "pdq radius 64": policy(matching={"pdq_radius": 64}),
    "transforms without identity": policy(matching={"pdq_transforms": {"authority": ["flipy"]}}),
    "transforms a string": policy(matching={"bank_transforms": {"ncmec": "mirror"}}),
    "transforms of an unknown trust": policy(matching={"pdq_transforms": {"trusted": "all"}}),
}


def record(offset: int, value: bytes | None, key: bytes = b"live") -> ConsumerRecord:
    return ConsumerRecord(POLICY, 0, offset, 1764324061000, 0, key, value, None, len(value or b""), len(key), [])


def message(doc, key: bytes = b"live") -> bytes:
    # the standard library writes NaN and Infinity tokens, as a careless producer might (signed by
    # a trusted key: what is refused here is the policy, not who published it)
    value = {"schema_version": 1, "policy": doc, "published_at_ms": 1764324061000}
    return json.dumps({**value, "signature": CONTROL_KEY.sign(POLICY, key, value)["signature"]}).encode()


@pytest.fixture
def control(contract):
    held = {"policies": PolicySet(load_policy())}
    publisher = InMemoryPublisher()
    ctl = PolicyControl(contract[POLICY], lambda: held["policies"], lambda p: held.update(policies=p), publisher,
                        trusted=CONTROL_TRUST)
    return ctl, held, publisher


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_each_malformed_policy_is_dead_lettered_and_the_next_applies(control, name):
    ctl, held, publisher = control
    v2 = policy(version="v2")
    await ctl.apply([record(0, message(MALFORMED[name])), record(1, message(v2))])
    assert [d.reason for d in publisher.dead_letters] == ["invalid_policy"], name
    assert held["policies"].live.version == "v2"


async def test_an_oversized_policy_record_is_dead_lettered(control):
    ctl, held, publisher = control
    huge = message(policy(version="huge", padding=None) | {"description": "x" * 1_000_000})
    await ctl.apply([record(0, huge), record(1, message(policy(version="v3")))])
    assert [d.reason for d in publisher.dead_letters] == ["oversized"]
    assert len(publisher.dead_letters[0].encode()) < 200_000 and held["policies"].live.version == "v3"


async def test_a_bank_entry_that_fails_to_apply_is_dead_lettered_and_the_batch_goes_on(monkeypatch):
    banks = HashBanks()
    publisher = InMemoryPublisher()
    control = BankControl(banks, publisher, trusted=CONTROL_TRUST)
    entry = {"schema_version": 1, "bank": "ncmec", "signal_type": "md5", "hash": "a" * 32}
    other = entry | {"hash": "b" * 32}
    original = banks.add_many

    def picky(entries):
        if any(e.hash == "a" * 32 for e in entries):
            raise ValueError("index refused the entry")
        original(entries)

    monkeypatch.setattr(banks, "add_many", picky)
    records = [ConsumerRecord("hashbank.entries", 0, i, 0, 0, k, encoded(HASHBANK_ENTRIES, k, v), None, 0, 0, [])
               for i, (k, v) in enumerate(((b"ncmec:a", entry), (b"ncmec:b", other)))]
    records.append(ConsumerRecord("hashbank.entries", 0, 2, 0, 0, b"ncmec:c", b"x" * 990_000, None, 0, 0, []))
    await control.apply(records)
    assert sorted(d.reason for d in publisher.dead_letters) == ["invalid_bank_entry", "oversized"]
    assert len(banks) == 1


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e308"])
def test_non_finite_and_absurd_numbers_in_policy_files_are_refused(value):
    from streamsafe.errors import PolicyError

    text = default_policy_text().replace("prior_log_odds: -6.0", f"prior_log_odds: {value}")
    with pytest.raises(PolicyError, match=r"fusion\.prior_log_odds"):
        load_policy(text)
