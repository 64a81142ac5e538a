"""Load and validate a policy from YAML text (files) or a mapping (the control topic).

The whole document is checked and every problem reported at once; an invalid
policy raises :class:`PolicyError` and never replaces the one in force. Every
section must have its type (a mapping, a list) and every number its range:

==================================  =========================
what                                range
==================================  =========================
durations (SLAs, half-lives)        > 0 and at most 30 days
windows (weak matches, reports)     > 0 and at most 1 day
fusion.prior_log_odds               -20 .. 20
classifier slope / midpoint         0.1 .. 100 / 0 .. 1
classifier weight, reports.weight   0 .. 10
strong_match.log_odds               0 .. 50
weak_match.log_odds / max_frames    0 .. 20 / 1 .. 64
context log-odds, corroboration     -10 .. 10
context.new_account_days            0 .. 3650
rule values: counts / age in days   0 .. 10000 / 0 .. 36500
rule values: risk and scores        0 .. 1
==================================  =========================

``matching.pdq_transforms`` (by trust level) and ``matching.bank_transforms`` (by bank)
map to ``all`` or a list of dihedral transform names that includes ``identity``.

Non-finite numbers (``.nan``, ``.inf``) are refused everywhere.

The checks every section shares are :class:`~streamsafe.policy.problems.Problems`; the
rules are parsed in :mod:`~streamsafe.policy.rules`, the statements, appeals and verdicts
in :mod:`~streamsafe.policy.texts`, the account rules in :mod:`~streamsafe.policy.accounts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from streamsafe.errors import PolicyError
from streamsafe.matching.dihedral import ALL, IDENTITY, TRANSFORMS
from streamsafe.matching.signal_types import PDQ
from streamsafe.policy.accounts import account_policy
from streamsafe.policy.model import PRIORITIES, TRUST_LEVELS, Policy, Rule
from streamsafe.policy.problems import MAX_WINDOW_S, Problems, parse_duration
from streamsafe.policy.rules import rule_from_mapping
from streamsafe.policy.texts import appeal_priority, statement_texts, verdict_effects
from streamsafe.scoring.fusion import (
    Calibration,
    ClassifierModel,
    CorroborationGroup,
    FusionModel,
)

__all__ = ["default_policy_text", "load_policy", "parse_duration", "policy_from_mapping"]


def default_policy_text() -> str:
    return resources.files("streamsafe.policy").joinpath("default.yaml").read_text()


def load_policy(source: str | Path | None = None) -> Policy:
    """A policy from a file path, YAML text, or the packaged default (``None``)."""
    if source is None:
        text = default_policy_text()
    elif isinstance(source, Path):
        try:
            text = source.read_text()
        except OSError as exc:
            raise PolicyError([f"cannot read {source}: {exc}"]) from exc
    else:
        text = source
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([f"not valid YAML: {exc}"]) from exc
    return policy_from_mapping(document)


def policy_from_mapping(document: Any) -> Policy:
    p = Problems()
    if not isinstance(document, Mapping):
        raise PolicyError(["a policy must be a mapping with version and rules"])
    unknown = set(document) - {"version", "review_sla", "matching", "banks", "fusion", "rules", "statements",
                               "appeals", "verdicts", "accounts"}
    if unknown:
        p.add("policy", f"unknown sections {sorted(unknown)}")
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        p.add("version", "must be a non-empty string")
        version = "?"
    sla_doc = p.mapping("review_sla", document.get("review_sla"))
    review_sla = {}
    for priority, value in sla_doc.items():
        if priority not in PRIORITIES:
            p.add(f"review_sla.{priority}", f"priority must be one of {PRIORITIES}")
        review_sla[priority] = p.duration(f"review_sla.{priority}", value, 0)
    matching = p.mapping("matching", document.get("matching"))
    strong = matching.get("strong_max_distance", 10)
    if not isinstance(strong, int) or not 0 <= strong <= 31:
        p.add("matching.strong_max_distance", "must be an integer in 0..31")
        strong = 10
    weak_window = p.duration("matching.weak_window", matching.get("weak_window"), 600.0, MAX_WINDOW_S)
    pdq_radius = matching.get("pdq_radius", PDQ.threshold)
    if not isinstance(pdq_radius, int) or not 0 <= pdq_radius <= 31:
        p.add("matching.pdq_radius", "must be an integer in 0..31 (31 is PDQ's confident-match threshold)")
        pdq_radius = PDQ.threshold
    min_quality = matching.get("pdq_min_quality", PDQ.min_quality)
    if not isinstance(min_quality, int) or not 0 <= min_quality <= 100:
        p.add("matching.pdq_min_quality", "must be an integer in 0..100")
        min_quality = PDQ.min_quality
    bank_radius = matching.get("bank_radius") or {}
    if not isinstance(bank_radius, Mapping) or not all(
            isinstance(r, int) and 0 <= r <= 31 for r in bank_radius.values()):
        p.add("matching.bank_radius", "must map bank names to radii in 0..31")
        bank_radius = {}
    pdq_transforms = _transforms(p, "matching.pdq_transforms", matching.get("pdq_transforms", {"authority": "all"}),
                                 TRUST_LEVELS)
    bank_transforms = _transforms(p, "matching.bank_transforms", matching.get("bank_transforms"))
    banks = p.mapping("banks", document.get("banks"))
    for bank, trust in banks.items():
        if trust not in TRUST_LEVELS:
            p.add(f"banks.{bank}", f"trust must be one of {TRUST_LEVELS}")
    clears = matching.get("allow_clears_authority") or []
    if not isinstance(clears, list) or not all(isinstance(b, str) and banks.get(b) == "allow" for b in clears):
        p.add("matching.allow_clears_authority", "must list banks whose trust (under banks:) is allow")
        clears = []
    fusion = _fusion(p, p.mapping("fusion", document.get("fusion")))
    rules_doc = document.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_doc, list) or not rules_doc:
        p.add("rules", "must be a non-empty list")
    else:
        names: set[str] = set()
        for i, rule_doc in enumerate(rules_doc):
            rule = rule_from_mapping(p, f"rules[{i}]", rule_doc)
            if rule is not None:
                if rule.name in names:
                    p.add(f"rules[{i}].name", f"duplicate rule name {rule.name!r}")
                names.add(rule.name)
                rules.append(rule)
    statements_doc = document.get("statements")
    if statements_doc is None:  # the packaged default's texts: a statement cites only what a policy states
        statements_doc = yaml.safe_load(default_policy_text())["statements"]
    statements = statement_texts(p, statements_doc)
    appeals = appeal_priority(p, document.get("appeals"))
    effects = verdict_effects(p, document.get("verdicts"))
    accounts = account_policy(p, document.get("accounts"))
    if p.items:
        raise PolicyError(p.items)
    return Policy(version=version, rules=tuple(rules), fusion=fusion, review_sla_s=review_sla,
                  statements=statements, appeal_priority=appeals, verdict_effects=effects, accounts=accounts,
                  strong_max_distance=strong, weak_window_s=weak_window, bank_trust=dict(banks),
                  pdq_radius=pdq_radius, pdq_min_quality=min_quality, bank_radius=dict(bank_radius),
                  pdq_transforms=pdq_transforms, bank_transforms=bank_transforms,
                  allow_clears_authority=frozenset(clears))


def _transforms(p: Problems, where: str, doc: Any, names: tuple[str, ...] | None = None) -> dict[str, frozenset[str]]:
    """``{bank or trust: all | [transform, ...]}``; ``identity`` must be among them: it is
    how every frame without variants matches."""
    out: dict[str, frozenset[str]] = {}
    for name, chosen in p.mapping(where, doc).items():
        listed = chosen if isinstance(chosen, list) and all(isinstance(t, str) for t in chosen) else []
        if names is not None and name not in names:
            p.add(f"{where}.{name}", f"must be one of {names}")
        elif chosen == "all":
            out[str(name)] = ALL
        elif IDENTITY in listed and set(listed) <= ALL:
            out[str(name)] = frozenset(listed)
        else:
            p.add(f"{where}.{name}", f"must be 'all' or a list of {TRANSFORMS} with identity (the frame as shown)")
    return out


def _classifier(p: Problems, where: str, doc: Any, default: ClassifierModel) -> ClassifierModel:
    if not isinstance(doc, Mapping):
        p.add(where, "must be a mapping of slope, midpoint, weight, half_life")
        return default
    p.known_keys(where, doc, {"slope", "midpoint", "weight", "half_life"})
    weight = p.number(f"{where}.weight", doc.get("weight"), default.weight, 0, 10)
    return ClassifierModel(
        Calibration(p.number(f"{where}.slope", doc.get("slope"), default.calibration.slope, 0.1, 100),
                    p.number(f"{where}.midpoint", doc.get("midpoint"), default.calibration.midpoint, 0, 1)),
        weight,
        p.duration(f"{where}.half_life", doc.get("half_life"), default.half_life_s),
    )


def _fusion(p: Problems, doc: Mapping[str, Any]) -> FusionModel:
    base = FusionModel()
    default = _classifier(p, "fusion.default_classifier", doc.get("default_classifier") or {},
                          base.default_classifier)
    classifiers = {str(name): _classifier(p, f"fusion.classifiers.{name}", c, default)
                   for name, c in p.mapping("fusion.classifiers", doc.get("classifiers")).items()}
    strong = p.mapping("fusion.strong_match", doc.get("strong_match"))
    weak = p.mapping("fusion.weak_match", doc.get("weak_match"))
    reports = p.mapping("fusion.reports", doc.get("reports"))
    context = p.mapping("fusion.context", doc.get("context"))
    groups = []
    corroboration = doc.get("corroboration") or []
    if not isinstance(corroboration, list):
        p.add("fusion.corroboration", f"must be a list, got {type(corroboration).__name__}")
        corroboration = []
    for i, g in enumerate(corroboration):
        where = f"fusion.corroboration[{i}]"
        if not isinstance(g, Mapping) or not g.get("name") or not isinstance(g.get("members"), list) \
                or len(g["members"]) < 2 or not all(isinstance(m, str) for m in g["members"]):
            p.add(where, "needs a name and at least two members (classifier names or context.* flags)")
            continue
        groups.append(CorroborationGroup(str(g["name"]), tuple(g["members"]),
                                         p.number(f"{where}.bonus", g.get("bonus"), 1.0, -10, 10)))

    def context_odds(name: str, default: float) -> float:
        return p.number(f"fusion.context.{name}", context.get(name), default, -10, 10)

    return FusionModel(
        prior_log_odds=p.number("fusion.prior_log_odds", doc.get("prior_log_odds"), base.prior_log_odds, -20, 20),
        classifiers=classifiers,
        default_classifier=default,
        strong_match_log_odds=p.number("fusion.strong_match.log_odds", strong.get("log_odds"),
                                       base.strong_match_log_odds, 0, 50),
        strong_match_half_life_s=p.duration("fusion.strong_match.half_life", strong.get("half_life"),
                                            base.strong_match_half_life_s),
        weak_match_log_odds=p.number("fusion.weak_match.log_odds", weak.get("log_odds"),
                                     base.weak_match_log_odds, 0, 20),
        weak_match_max_frames=p.integer("fusion.weak_match.max_frames", weak.get("max_frames"),
                                        base.weak_match_max_frames, 1, 64),
        weak_match_half_life_s=p.duration("fusion.weak_match.half_life", weak.get("half_life"),
                                          base.weak_match_half_life_s),
        report_weight=p.number("fusion.reports.weight", reports.get("weight"), base.report_weight, 0, 10),
        report_window_s=p.duration("fusion.reports.window", reports.get("window"), base.report_window_s,
                                   MAX_WINDOW_S),
        private_log_odds=context_odds("private", base.private_log_odds),
        new_account_days=p.integer("fusion.context.new_account_days", context.get("new_account_days"),
                                   base.new_account_days, 0, 3650),
        new_account_log_odds=context_odds("new_account", base.new_account_log_odds),
        unverified_age_log_odds=context_odds("unverified_age", base.unverified_age_log_odds),
        corroboration=tuple(groups),
    )


