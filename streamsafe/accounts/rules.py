"""The policy author's account rules (``accounts.rules``), evaluated on the account's worker
whenever an account signal arrives: a rule whose conditions all hold over the account's
state makes its decisions about the account (subject: the account, schema version 2), at
most once while its action is in force (as the fixed account rules). Pure, like
:func:`~streamsafe.accounts.step.account_step`, which calls it.
"""

from __future__ import annotations

from streamsafe.accounts.signals import AccountSignal
from streamsafe.accounts.state import AccountState
from streamsafe.policy.account_features import ACCOUNT_FEATURES, Entry
from streamsafe.policy.decisions import Decision
from streamsafe.policy.model import Policy, Predicate, Rule
from streamsafe.scoring.evidence import Evidence

__all__ = ["account_rule_decisions"]

MAX_EVIDENCE = 10
_OPS = {"gte": float.__ge__, "gt": float.__gt__, "lte": float.__le__, "lt": float.__lt__, "eq": float.__eq__}


def _window(seconds: float) -> str:
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds / 3600:g}h"


def _observed(predicate: Predicate, state: AccountState, signal: AccountSignal,
              retention_s: float) -> tuple[bool, str, list[Entry]]:
    feature = ACCOUNT_FEATURES[predicate.feature]
    window_s = predicate.window_s or retention_s
    entries = feature.within(state, signal.ts_ms - int(window_s * 1000))
    held = _OPS[predicate.op](float(len(entries)), float(predicate.value))
    return held, f"{predicate.feature} {len(entries)} {predicate.op} {predicate.value:g} within {_window(window_s)}", \
        entries


def account_rule_decisions(signal: AccountSignal, state: AccountState, policy: Policy,
                           ) -> tuple[AccountState, tuple[Decision, ...]]:
    """The decisions of the rules that hold now and are not in force yet, and the state noting them."""
    assert signal.stream_id is not None
    decisions: list[Decision] = []
    for rule in policy.accounts.rules:
        if state.active(rule.name) or not rule.predicates:
            continue
        observed = [_observed(p, state, signal, policy.accounts.retention_s) for p in rule.predicates]
        if not all(held for held, _, _ in observed):
            continue
        decisions.extend(_decide(rule, signal, policy, observed))
        state = state.with_action(rule.name, signal.ts_ms)
    return state, tuple(decisions)


def _decide(rule: Rule, signal: AccountSignal, policy: Policy,
            observed: list[tuple[bool, str, list[Entry]]]) -> list[Decision]:
    assert signal.stream_id is not None
    reason = f"rule '{rule.name}': " + ", ".join(text for _, text, _ in observed)
    seen: dict[tuple[str, int, str], Evidence] = {}
    for predicate, (_, _, entries) in zip(rule.predicates, observed, strict=True):
        role = ACCOUNT_FEATURES[predicate.feature].role
        for e in entries:
            seen.setdefault((predicate.feature, e.ts_ms, e.stream_id), Evidence(
                "account", e.ts_ms, (("role", role), ("account_id", signal.account_id), *e.detail,
                                     ("stream_id", e.stream_id))))
    evidence = tuple(sorted(seen.values(), key=lambda e: e.ts_ms)[-MAX_EVIDENCE:])
    if not evidence:  # a rule that holds on absence (lt, eq 0) still cites the account
        evidence = (Evidence("account", signal.ts_ms, (("account_id", signal.account_id),
                                                       ("stream_id", signal.stream_id))),)
    streams = tuple(dict.fromkeys(e.stream_id for _, _, entries in observed for e in entries))
    return [Decision.create(signal.stream_id, action, (reason,), evidence, policy.version,
                            decided_at_ms=signal.decided_at_ms, event_ts_ms=signal.ts_ms, rule=rule.name,
                            review_sla_s=policy.review_sla_s.get(action.priority or ""),
                            subject=("account", signal.account_id), streams=streams or (signal.stream_id,))
            for action in rule.actions]
