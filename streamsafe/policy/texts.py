"""The policy's ``statements`` and ``appeals`` sections: the texts a DSA statement of reasons
cites, and how appeals are reviewed.

```yaml
statements:
  legal_grounds:             # illegal content, by kind of harm (csam and grooming at least)
    csam: {legal_ground: "...", explanation: "..."}
    grooming: {legal_ground: "...", explanation: "..."}
  terms: {ground: "...", explanation: "...", illegal: "No"}          # incompatible content
  reinstatement: {ground: "...", explanation: "...", illegal: "No"}  # a reversal on appeal
  harm_of_rules: {grooming-private-young-account: grooming}          # rules not named: csam
appeals:
  priority: P2               # an appeal's review item; its deadline is review_sla of that priority
```

A policy without a ``statements`` section takes the packaged default policy's, so a statement
never cites a ground no policy states. Lengths are the DSA Transparency Database's limits
(grounds 500 characters, explanations 2000).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamsafe.policy.model import PRIORITIES, TRUST_LEVELS, Ground, StatementTexts, VerdictEffects
from streamsafe.policy.problems import Problems

__all__ = ["HARMS", "appeal_priority", "statement_texts", "verdict_effects"]

HARMS = ("csam", "grooming")  # kinds of harm with a legal ground; "terms" names the terms of service
MAX_GROUND = 500
MAX_EXPLANATION = 2000


def _text(p: Problems, where: str, value: Any, most: int) -> str:
    if not isinstance(value, str) or not value.strip():
        p.add(where, "must be a non-empty string")
        return ""
    if len(value) > most:
        p.add(where, f"must be at most {most} characters, got {len(value)}")
    return value.strip()


def _ground(p: Problems, where: str, doc: Any, ground_key: str) -> Ground | None:
    if not isinstance(doc, Mapping):
        p.add(where, "must be a mapping")
        return None
    p.known_keys(where, doc, {ground_key, "explanation", "illegal"})
    illegal = doc.get("illegal", "Yes" if ground_key == "legal_ground" else "No")
    if illegal not in ("Yes", "No"):
        p.add(f"{where}.illegal", 'must be "Yes" or "No"')
    return Ground(_text(p, f"{where}.{ground_key}", doc.get(ground_key), MAX_GROUND),
                  _text(p, f"{where}.explanation", doc.get("explanation"), MAX_EXPLANATION), str(illegal))


def statement_texts(p: Problems, doc: Any) -> StatementTexts:
    """The ``statements`` section, checked (problems added to ``p``). ``harm_of_rules`` may name
    rules the policy lacks (a policy taking the default's texts): they are simply never used."""
    if not isinstance(doc, Mapping):
        p.add("statements", "must be a mapping")
        return StatementTexts()
    p.known_keys("statements", doc, {"legal_grounds", "terms", "reinstatement", "harm_of_rules"})
    legal_doc = doc.get("legal_grounds")
    legal: dict[str, Ground] = {}
    if not isinstance(legal_doc, Mapping):
        p.add("statements.legal_grounds", "must be a mapping of kinds of harm")
    else:
        for harm in HARMS:
            if harm not in legal_doc:
                p.add("statements.legal_grounds", f"lacks {harm!r}")
        for harm, ground_doc in legal_doc.items():
            ground = _ground(p, f"statements.legal_grounds.{harm}", ground_doc, "legal_ground")
            if ground is not None:
                legal[str(harm)] = ground
    terms = _ground(p, "statements.terms", doc.get("terms"), "ground")
    reinstatement = _ground(p, "statements.reinstatement", doc.get("reinstatement"), "ground")
    harms = doc.get("harm_of_rules") or {}
    if not isinstance(harms, Mapping):
        p.add("statements.harm_of_rules", "must map rule names to kinds of harm")
        harms = {}
    for rule, harm in harms.items():
        if harm not in (*legal, "terms"):
            p.add(f"statements.harm_of_rules.{rule}", f"{harm!r} is not one of {sorted(legal)} or 'terms'")
    return StatementTexts(legal, terms, reinstatement, {str(k): str(v) for k, v in harms.items()})


def appeal_priority(p: Problems, doc: Any) -> str:
    """The ``appeals`` section's priority (default P2)."""
    if doc is None:
        return "P2"
    if not isinstance(doc, Mapping) or set(doc) - {"priority"}:
        p.add("appeals", "must be a mapping with priority")
        return "P2"
    priority = doc.get("priority", "P2")
    if priority not in PRIORITIES:
        p.add("appeals.priority", f"must be one of {PRIORITIES}")
        return "P2"
    return str(priority)


def verdict_effects(p: Problems, doc: Any) -> VerdictEffects:
    """The ``verdicts`` section: ``report`` (bool) and ``bank_from`` (trust levels) of a confirmed verdict."""
    if doc is None:
        return VerdictEffects()
    if not isinstance(doc, Mapping) or set(doc) - {"report", "bank_from"}:
        p.add("verdicts", "must be a mapping with report and bank_from")
        return VerdictEffects()
    report = doc.get("report", True)
    if not isinstance(report, bool):
        p.add("verdicts.report", "must be true or false")
        report = True
    levels = doc.get("bank_from", sorted(VerdictEffects().bank_from))
    if not isinstance(levels, list) or not all(level in TRUST_LEVELS and level != "allow" for level in levels):
        p.add("verdicts.bank_from", "must list trust levels (authority, internal, partner)")
        levels = sorted(VerdictEffects().bank_from)
    return VerdictEffects(report, frozenset(levels))
