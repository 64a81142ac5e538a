"""The policy's ``accounts`` section: what an account's history across streams does.

    accounts:
      retention: 30d               # anything kept about an account is forgotten after this
      repeat_broadcaster:          # null: off
        window: 30d
        priority: {authority-hash-strong: P0, default: P1}
        restrict: [chat, gifting, discovery, new_viewers]
      viewer_grooming:             # null: off
        classifiers: [grooming_text]
        min_score: 0.8
        min_streams: 3
        window: 24h
        priority: P1
        restrict: [chat]
      rules:                       # the author's own rules over account features (absent: none)
        - name: reported-repeat-broadcaster
          when: {account.prior_blocks: {gte: 1, window: 30d}, account.user_reports: {gte: 3, window: 7d}}
          then: [{escalate: P1}, {restrict: [gifting]}]

A rule's features are those of :data:`~streamsafe.policy.account_features.ACCOUNT_FEATURES`;
an unknown one, an operator other than gte/gt/lte/lt/eq, a window longer than the retention,
an action other than escalate/restrict, or a name taken by another rule refuses the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streamsafe.policy.account_features import ACCOUNT_FEATURES, MAX_COUNT
from streamsafe.policy.model import (
    PRIORITIES,
    RESTRICTIONS,
    AccountPolicy,
    Action,
    Predicate,
    RepeatBroadcaster,
    Rule,
    ViewerGrooming,
)
from streamsafe.policy.problems import OPERATORS, Problems

__all__ = ["account_policy"]

MAX_RETENTION_S = 365 * 86400.0
BUILT_IN = ("repeat-broadcaster", "viewer-grooming-across-streams")  # the names of the two fixed rules


def account_policy(p: Problems, doc: Any) -> AccountPolicy:
    """The section (absent: the defaults of :class:`AccountPolicy`)."""
    if doc is None:
        return AccountPolicy()
    if not isinstance(doc, Mapping) or set(doc) - {"retention", "repeat_broadcaster", "viewer_grooming", "rules"}:
        p.add("accounts", "must be a mapping of retention, repeat_broadcaster, viewer_grooming, rules")
        return AccountPolicy()
    retention = p.duration("accounts.retention", doc.get("retention"), AccountPolicy().retention_s, MAX_RETENTION_S)
    repeat = _repeat(p, doc["repeat_broadcaster"]) if "repeat_broadcaster" in doc else RepeatBroadcaster()
    grooming = _grooming(p, doc["viewer_grooming"]) if "viewer_grooming" in doc else ViewerGrooming()
    for where, window in (("repeat_broadcaster", repeat and repeat.window_s),
                          ("viewer_grooming", grooming and grooming.window_s)):
        if window and window > retention:
            p.add(f"accounts.{where}.window", "must not be longer than accounts.retention (state is gone by then)")
    return AccountPolicy(retention, repeat, grooming, _rules(p, doc.get("rules"), retention))


def _rules(p: Problems, doc: Any, retention_s: float) -> tuple[Rule, ...]:
    if doc is None:
        return ()
    if not isinstance(doc, list):
        p.add("accounts.rules", "must be a list of rules (name, when, then)")
        return ()
    rules: list[Rule] = []
    names: set[str] = set(BUILT_IN)
    for i, rule_doc in enumerate(doc):
        where = f"accounts.rules[{i}]"
        if not isinstance(rule_doc, Mapping) or set(rule_doc) - {"name", "description", "when", "then"}:
            p.add(where, "must be a mapping of name, description, when, then")
            continue
        name = rule_doc.get("name")
        if not isinstance(name, str) or not name.strip():
            p.add(f"{where}.name", "must be a non-empty string")
            continue
        if name in names:
            p.add(f"{where}.name", f"{name!r} is already a rule's name")
        names.add(name)
        when, then = rule_doc.get("when"), rule_doc.get("then")
        predicates: list[Predicate] = []
        if not isinstance(when, Mapping) or not when:
            p.add(f"{where}.when", "must map at least one account feature to a condition")
        else:
            for feature, condition in when.items():
                predicates.extend(_predicates(p, f"{where}.when.{feature}", str(feature), condition, retention_s))
        actions: list[Action] = []
        if not isinstance(then, list) or not then:
            p.add(f"{where}.then", "must be a non-empty list of actions (escalate, restrict)")
        else:
            parsed = (_action(p, f"{where}.then[{j}]", action) for j, action in enumerate(then))
            actions = [a for a in parsed if a is not None]
        rules.append(Rule(name, tuple(predicates), tuple(actions), str(rule_doc.get("description", ""))))
    return tuple(rules)


def _predicates(p: Problems, where: str, feature: str, condition: Any, retention_s: float) -> list[Predicate]:
    if feature not in ACCOUNT_FEATURES:
        p.add(where, f"unknown account feature; one of {', '.join(ACCOUNT_FEATURES)}")
        return []
    if not isinstance(condition, Mapping):
        p.add(where, f"must map an operator ({', '.join(OPERATORS)}) to a count, and optionally a window")
        return []
    window_s = None
    if "window" in condition:
        window_s = p.duration(f"{where}.window", condition["window"], retention_s, MAX_RETENTION_S)
        if window_s > retention_s:
            p.add(f"{where}.window", "must not be longer than accounts.retention (state is gone by then)")
    out = []
    for op, value in condition.items():
        if op == "window":
            continue
        if op not in OPERATORS:
            p.add(where, f"unknown operator {op!r}; use one of {OPERATORS}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= MAX_COUNT:
            p.add(f"{where}.{op}", f"must be a count in 0..{MAX_COUNT}, got {value!r}")
        else:
            out.append(Predicate(feature, op, value, (), window_s))
    if not out:
        p.add(where, "has no condition")
    return out


def _action(p: Problems, where: str, doc: Any) -> Action | None:
    if isinstance(doc, Mapping) and len(doc) == 1:
        kind, value = next(iter(doc.items()))
        if kind == "escalate" and value in PRIORITIES:
            return Action("escalate", priority=str(value))
        values = [value] if isinstance(value, str) else value
        if kind == "restrict" and isinstance(values, list) and values and all(v in RESTRICTIONS for v in values):
            return Action("restrict", restrictions=tuple(sorted(set(values))))
    p.add(where, f"an account rule may {{escalate: <one of {PRIORITIES}>}} or {{restrict: [{', '.join(RESTRICTIONS)}]}}"
                 f", got {doc!r}")
    return None


def _restrictions(p: Problems, where: str, value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(r in RESTRICTIONS for r in value):
        p.add(where, f"must list restrictions of {RESTRICTIONS}")
        return default
    return tuple(value)


def _priority(p: Problems, where: str, value: Any, default: str) -> str:
    if value is None:
        return default
    if value not in PRIORITIES:
        p.add(where, f"must be one of {PRIORITIES}")
        return default
    return str(value)


def _repeat(p: Problems, doc: Any) -> RepeatBroadcaster | None:
    if doc is None:
        return None
    where = "accounts.repeat_broadcaster"
    if not isinstance(doc, Mapping) or set(doc) - {"window", "priority", "restrict"}:
        p.add(where, "must be a mapping of window, priority, restrict (or null: off)")
        return RepeatBroadcaster()
    priorities = doc.get("priority", {"default": "P1"})
    if isinstance(priorities, str):
        priorities = {"default": priorities}
    if not isinstance(priorities, Mapping):
        p.add(f"{where}.priority", "must be a priority or map rule names (and default) to priorities")
        priorities = {"default": "P1"}
    by_rule = {str(rule): _priority(p, f"{where}.priority.{rule}", value, "P1") for rule, value in priorities.items()}
    return RepeatBroadcaster(p.duration(f"{where}.window", doc.get("window"), RepeatBroadcaster().window_s,
                                        MAX_RETENTION_S), by_rule,
                             _restrictions(p, f"{where}.restrict", doc.get("restrict"),
                                           RepeatBroadcaster().restrictions))


def _grooming(p: Problems, doc: Any) -> ViewerGrooming | None:
    if doc is None:
        return None
    where = "accounts.viewer_grooming"
    known = {"classifiers", "min_score", "min_streams", "window", "priority", "restrict"}
    if not isinstance(doc, Mapping) or set(doc) - known:
        p.add(where, f"must be a mapping of {sorted(known)} (or null: off)")
        return ViewerGrooming()
    classifiers = doc.get("classifiers", ["grooming_text"])
    if not isinstance(classifiers, list) or not classifiers or not all(isinstance(c, str) for c in classifiers):
        p.add(f"{where}.classifiers", "must list classifier names")
        classifiers = ["grooming_text"]
    return ViewerGrooming(
        frozenset(classifiers),
        p.number(f"{where}.min_score", doc.get("min_score"), ViewerGrooming().min_score, 0, 1),
        p.integer(f"{where}.min_streams", doc.get("min_streams"), ViewerGrooming().min_streams, 2, 1000),
        p.duration(f"{where}.window", doc.get("window"), ViewerGrooming().window_s, MAX_RETENTION_S),
        _priority(p, f"{where}.priority", doc.get("priority"), ViewerGrooming().priority),
        _restrictions(p, f"{where}.restrict", doc.get("restrict"), ViewerGrooming().restrictions),
    )
