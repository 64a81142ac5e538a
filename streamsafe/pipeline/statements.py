"""The statements of reasons an outcome's decisions need: one per live block, restrict and
reinstate decision (:mod:`streamsafe.review.statements`), built after the step from what the
stream's state and incident know. Most outcomes carry no such decision and cost one scan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from streamsafe.pipeline.outcome import Outcome
from streamsafe.policy.model import Policy
from streamsafe.review.incident import Incident
from streamsafe.review.statements import STATEMENT_ACTIONS, StatementContext, build_statement
from streamsafe.scoring.state import StreamState

__all__ = ["with_statements"]


def with_statements(outcome: Outcome, policy: Policy, state: StreamState | None,
                    incident: Callable[[], Incident | None]) -> Outcome:
    """``outcome`` with the statements of its live block/restrict/reinstate decisions (``incident``
    reads the stream's stored incident, only for a reinstatement the outcome's incident lacks)."""
    due = [d for d in outcome.decisions if d.action in STATEMENT_ACTIONS and not d.shadow]
    if not due:
        return outcome
    stream = outcome.state or state
    started = stream.started_at_ms if stream is not None else None
    statements = []
    for decision in due:
        context = StatementContext(content_ms=started)
        if decision.reverses:
            log = (outcome.incident or incident() or Incident()).decisions
            reversed_entry = next((entry for entry in log if entry["id"] == decision.reverses), {})
            context = StatementContext(
                content_ms=started, reversed_action=reversed_entry.get("action"),
                reversed_harm=policy.statements.harm_of(reversed_entry.get("rule"), reversed_entry.get("cat")))
        statements.append(build_statement(decision, policy, context))
    return replace(outcome, statements=tuple(statements))
