"""One result type for every record: what it changed, what to publish, what to count.

Inputs, reviewer verdicts and timer ticks all return an :class:`Outcome`; the agent
writes the state and incident it names, publishes its decisions and their statements of
reasons, report packets,
bank proposals and dead letters in that order, and counts the rest. Nothing travels
beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamsafe.accounts.signals import AccountSignal
from streamsafe.events.dead_letter import DeadLetter
from streamsafe.events.models import BankEntry, Match
from streamsafe.policy.decisions import Decision
from streamsafe.review.incident import Incident
from streamsafe.review.reports import PreservationRequest, ReportPacket
from streamsafe.review.statements import Statement
from streamsafe.scoring.state import StreamState

__all__ = ["EMPTY", "NO_OPEN_ESCALATION", "Outcome"]

#: the review outcome of a verdict that names no open escalation of its stream (it is refused)
NO_OPEN_ESCALATION = "no_open_escalation"


@dataclass(frozen=True, slots=True)
class Outcome:
    state: StreamState | None = None  # the stream's state to write (None: leave it as it is)
    incident: Incident | None = None  # the stream's incident to write (None: leave it as it is)
    release: bool = False  # delete the stream's state and incident (an ended or idle stream)
    decisions: tuple[Decision, ...] = ()  # live and shadow
    statements: tuple[Statement, ...] = ()  # DSA statements of reasons of the live blocks/restricts/reinstates
    reports: tuple[tuple[ReportPacket, PreservationRequest], ...] = ()
    proposals: tuple[BankEntry, ...] = ()  # hashes a reviewer confirmed, for the internal bank
    dead_letters: tuple[DeadLetter, ...] = ()
    matches: tuple[Match, ...] = ()  # bank matches that were observed (for metrics)
    review: str | None = None  # what a verdict or deadline did: confirmed, benign, ..., sla_breach
    false_positive: str | None = None  # the signal charged with a false positive
    sla_breach: str | None = None  # the priority of a missed review deadline
    audit: tuple[dict[str, Any], ...] = ()  # streamsafe.audit records (a verdict applied or refused)
    account_signals: tuple[AccountSignal, ...] = ()  # to the accounts' partitions (sent first)


#: the outcome of a record that changed nothing (most of them): nothing to write or publish
EMPTY = Outcome()
