"""Where decisions go. Agents depend on :class:`DecisionPublisher`; the Kafka
implementation lives in :mod:`streamsafe.enforcement.kafka`, and
:class:`InMemoryPublisher` ships in the package for tests of the logic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamsafe.accounts.signals import AccountSignal
from streamsafe.events.dead_letter import DeadLetter
from streamsafe.events.models import AccountFinding, BankEntry, TimerTick
from streamsafe.policy.decisions import Decision
from streamsafe.review.reports import PreservationRequest, ReportPacket
from streamsafe.review.statements import Statement

__all__ = ["DecisionPublisher", "InMemoryPublisher"]


class DecisionPublisher(Protocol):
    async def publish(self, decision: Decision) -> None:
        """Deliver one decision to its enforcement topic (returns once sent; see :meth:`settled`)."""
        ...

    async def publish_many(self, decisions: Sequence[Decision]) -> None:
        """Deliver several decisions in order (returns once sent; see :meth:`settled`)."""
        ...

    async def publish_report(self, report: ReportPacket, preservation: PreservationRequest) -> None:
        """Deliver an authority report and its preservation request."""
        ...

    async def publish_statements(self, statements: Sequence[Statement]) -> None:
        """Deliver DSA statements of reasons (enforcement.statements)."""
        ...

    async def propose_entries(self, entries: Sequence[BankEntry]) -> None:
        """Propose hashes to a bank (entries on hashbank.entries, marked reviewer-sourced)."""
        ...

    async def send_tick(self, tick: TimerTick, partition: int) -> None:
        """Schedule work on the partition that holds the stream's state."""
        ...

    async def send_account_signals(self, signals: Sequence[AccountSignal]) -> None:
        """Send account signals to the partitions of their accounts (keyed by account id)."""
        ...

    async def send_account_findings(self, findings: Sequence[AccountFinding]) -> None:
        """Send what an account's history says about its streams to the streams' partitions."""
        ...

    async def dead_letter(self, rejected: DeadLetter) -> None:
        """Deliver one rejected input to the dead-letter topic."""
        ...

    async def audit(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Deliver audit records (streamsafe.audit), keyed by their audit id."""
        ...

    async def settled(self) -> None:
        """Returns once everything delivered before the call is acknowledged by the broker."""
        ...

    def oldest_delivery(self) -> float | None:
        """When (monotonic) the oldest delivery not yet acknowledged was sent, if any."""
        ...


class InMemoryPublisher:
    """Keeps what would have been published, in order."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.dead_letters: list[DeadLetter] = []
        self.reports: list[ReportPacket] = []
        self.preservations: list[PreservationRequest] = []
        self.proposals: list[BankEntry] = []
        self.ticks: list[tuple[TimerTick, int]] = []
        self.statements: list[Statement] = []
        self.audits: list[Mapping[str, Any]] = []
        self.account_signals: list[AccountSignal] = []
        self.account_findings: list[AccountFinding] = []

    async def publish(self, decision: Decision) -> None:
        self.decisions.append(decision)

    async def publish_many(self, decisions: Sequence[Decision]) -> None:
        self.decisions.extend(decisions)

    async def publish_report(self, report: ReportPacket, preservation: PreservationRequest) -> None:
        self.reports.append(report)
        self.preservations.append(preservation)

    async def publish_statements(self, statements: Sequence[Statement]) -> None:
        self.statements.extend(statements)

    async def propose_entries(self, entries: Sequence[BankEntry]) -> None:
        self.proposals.extend(entries)

    async def send_tick(self, tick: TimerTick, partition: int) -> None:
        self.ticks.append((tick, partition))

    async def send_account_signals(self, signals: Sequence[AccountSignal]) -> None:
        self.account_signals.extend(signals)

    async def send_account_findings(self, findings: Sequence[AccountFinding]) -> None:
        self.account_findings.extend(findings)

    async def dead_letter(self, rejected: DeadLetter) -> None:
        self.dead_letters.append(rejected)

    async def audit(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.audits.extend(records)

    async def settled(self) -> None:
        return None

    def oldest_delivery(self) -> float | None:
        return None
