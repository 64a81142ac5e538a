"""Policy files: the default is valid; an invalid one is refused with every problem named."""

import pytest

from streamsafe.errors import PolicyError
from streamsafe.policy.loader import load_policy, parse_duration


def test_default_policy_expresses_the_required_rules():
    policy = load_policy()
    names = {r.name for r in policy.rules}
    assert {"authority-hash-strong", "minor-and-nudity", "grooming-private-young-account",
            "user-reports-burst", "weak-hash-repeated"} <= names
    assert policy.review_sla_s == {"P0": 300, "P1": 1800, "P2": 7200, "P3": 86400}
    assert policy.trust_of("ncmec") == "authority" and policy.trust_of("unknown") == "partner"


def test_invalid_policy_lists_every_problem():
    text = """
version: ""
review_sla: {P7: 5m, P0: soon}
rules:
  - name: a
    when: {score.nudity: {gtee: 0.8}, risk: {gte: 3}}
    then: [block, {escalate: P9}, explode]
  - name: a
    when: {colour: {eq: 1}}
    then: []
"""
    with pytest.raises(PolicyError) as info:
        load_policy(text)
    text = str(info.value)
    for fragment in ["version", "review_sla.P7", "review_sla.P0", "unknown operator 'gtee'",
                     "scores and risk are in [0, 1]", "escalate needs a priority", "unknown action 'explode'",
                     "unknown feature", "rules[1].then", "duplicate rule name 'a'"]:
        assert fragment in text, fragment
    assert len(info.value.problems) >= 9


@pytest.mark.parametrize("text", ["", "[1, 2]", "version: x\n", "version: x\nrules: 3\n", "{{{"])
def test_degenerate_documents_are_refused(text):
    with pytest.raises(PolicyError):
        load_policy(text)


@pytest.mark.parametrize(("value", "seconds"), [("5m", 300), ("2h", 7200), ("30s", 30), (90, 90),
                                                ("1d", 86400), ("250ms", 0.25)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_every_feature_in_the_table_loads_and_evaluates():
    from streamsafe.policy.engine import evaluate_rules
    from streamsafe.policy.features import FEATURES
    from streamsafe.scoring.state import StreamState

    names = [n + "nudity" if n == "score." else n for n in FEATURES]
    rules = "\n".join(f"  - name: r{i}\n    when: {{{name}: {{gte: 0}}}}\n    then: [monitor]"
                      for i, name in enumerate(names))
    policy = load_policy(f"version: t\nrules:\n{rules}\n")
    assert [p.feature for r in policy.rules for p in r.predicates] == names
    evaluate_rules(policy, StreamState(), 1_764_324_000_000)  # every row reads an empty state
    with pytest.raises(PolicyError, match="unknown feature"):
        load_policy("version: t\nrules:\n  - name: r\n    when: {score.: {gte: 0}}\n    then: [monitor]\n")


def test_default_policy_counts_every_dihedral_transform_for_authority_banks_only():
    from streamsafe.matching.dihedral import ALL, ONLY_IDENTITY

    policy = load_policy()
    assert policy.transforms_of("ncmec") == ALL and len(ALL) == 8
    for bank in ("internal-confirmed", "platform-allow", "partner-x"):
        assert policy.transforms_of(bank) == ONLY_IDENTITY, bank


def test_transforms_by_trust_with_per_bank_overrides():
    policy = load_policy("""
version: t
banks: {ncmec: authority, iwf: authority, internal-confirmed: internal}
matching:
  pdq_transforms: {authority: [identity, flipy], internal: all}
  bank_transforms: {iwf: [identity], partner-x: [identity, rotate90, rotate270]}
rules: [{name: r, when: {risk: {gte: 0.9}}, then: [monitor]}]
""")
    assert policy.transforms_of("ncmec") == {"identity", "flipy"}
    assert policy.transforms_of("iwf") == {"identity"}  # the bank's own setting wins over its trust's
    assert len(policy.transforms_of("internal-confirmed")) == 8
    assert policy.transforms_of("partner-x") == {"identity", "rotate90", "rotate270"}
    assert policy.transforms_of("partner-y") == {"identity"}  # a trust level not named: identity only


def test_invalid_transform_settings_are_each_named():
    with pytest.raises(PolicyError) as info:
        load_policy("""
version: t
matching:
  pdq_transforms: {authority: [flipy], trusted: all, partner: mirror}
  bank_transforms: {x: [identity, rotate45], y: [identity, {a: 1}], z: 3}
rules: [{name: r, when: {risk: {gte: 0.9}}, then: [monitor]}]
""")
    problems = "\n".join(info.value.problems)
    for where in ("pdq_transforms.authority", "pdq_transforms.trusted", "pdq_transforms.partner",
                  "bank_transforms.x", "bank_transforms.y", "bank_transforms.z"):
        assert f"matching.{where}:" in problems, where
    assert "with identity" in problems and "must be one of" in problems
