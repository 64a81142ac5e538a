"""A policy's rules: ``when`` (features and their conditions) and ``then`` (actions),
checked as :mod:`streamsafe.policy.loader` checks every section."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streamsafe.policy.features import FEATURES, feature_named
from streamsafe.policy.model import ACTION_KINDS, PRIORITIES, RESTRICTIONS, TRUST_LEVELS, Action, Predicate, Rule
from streamsafe.policy.problems import OPERATORS, Problems

__all__ = ["rule_from_mapping"]


def rule_from_mapping(p: Problems, where: str, doc: Any) -> Rule | None:
    if not isinstance(doc, Mapping):
        p.add(where, "must be a mapping with name, when and then")
        return None
    p.known_keys(where, doc, {"name", "description", "when", "then"})
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        p.add(f"{where}.name", "must be a non-empty string")
        name = where
    when = doc.get("when")
    predicates: list[Predicate] = []
    if not isinstance(when, Mapping) or not when:
        p.add(f"{where}.when", "must map at least one feature to a condition")
    else:
        for feature, condition in when.items():
            predicates.extend(_predicates(p, f"{where}.when.{feature}", str(feature), condition))
    then = doc.get("then")
    actions: list[Action] = []
    if not isinstance(then, list) or not then:
        p.add(f"{where}.then", "must be a non-empty list of actions")
    else:
        for j, action in enumerate(then):
            parsed = _action(p, f"{where}.then[{j}]", action)
            if parsed is not None:
                actions.append(parsed)
    return Rule(name, tuple(predicates), tuple(actions), str(doc.get("description", "")))


def _predicates(p: Problems, where: str, feature: str, condition: Any) -> list[Predicate]:
    row = feature_named(feature)
    if row is None:
        names = ", ".join(n + "<classifier>" if n == "score." else n for n in FEATURES)
        p.add(where, f"unknown feature; one of {names}")
        return []
    if not isinstance(condition, Mapping):
        p.add(where, "must map an operator (gte, gt, lte, lt, eq) to a value")
        return []
    trust = condition.get("trust", ())
    if isinstance(trust, str):
        trust = (trust,)
    if not isinstance(trust, list | tuple):
        p.add(f"{where}.trust", f"must be a trust level or a list of them, got {trust!r}")
        trust = ()
    for level in trust:
        if level not in TRUST_LEVELS:
            p.add(f"{where}.trust", f"{level!r} is not one of {TRUST_LEVELS}")
    window = condition.get("window")
    window_s = p.duration(f"{where}.window", window, 0) if window is not None else None
    out = []
    for op, value in condition.items():
        if op in ("trust", "window"):
            continue
        if op not in OPERATORS:
            p.add(where, f"unknown operator {op!r}; use one of {OPERATORS}")
            continue
        if not isinstance(value, int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            p.add(f"{where}.{op}", f"must be a number or boolean, got {value!r}")
            continue
        unit = row.high == 1 and row.name in ("risk", "score.")
        if unit and (isinstance(value, bool) or not 0 <= value <= 1):
            p.add(f"{where}.{op}", "scores and risk are in [0, 1]")
        elif not isinstance(value, bool) and not row.low <= value <= row.high:
            p.add(f"{where}.{op}", f"must be in {row.low:g}..{row.high:g}")
        out.append(Predicate(feature, op, value, tuple(trust), window_s))
    if not out:
        p.add(where, "has no condition")
    return out


def _action(p: Problems, where: str, doc: Any) -> Action | None:
    if isinstance(doc, str):
        if doc in ("escalate", "restrict"):
            p.add(where, f"{doc} needs a value: {{{doc}: ...}}")
            return None
        if doc not in ACTION_KINDS:
            p.add(where, f"unknown action {doc!r}; use one of {ACTION_KINDS}")
            return None
        return Action(doc)
    if isinstance(doc, Mapping) and len(doc) == 1:
        kind, value = next(iter(doc.items()))
        if kind == "escalate":
            if value not in PRIORITIES:
                p.add(where, f"escalate needs a priority in {PRIORITIES}")
                return None
            return Action("escalate", priority=value)
        if kind == "restrict":
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or any(v not in RESTRICTIONS for v in values):
                p.add(where, f"restrict needs a list drawn from {RESTRICTIONS}")
                return None
            return Action("restrict", restrictions=tuple(sorted(set(values))))
    p.add(where, f"not an action: {doc!r}")
    return None
