"""The transparency report: counts and times over a period of StreamSafe's enforcement
records (decisions, escalations, reports, preservation requests, verdicts, appeals, dead
letters). ``log`` collects the records, ``compute`` turns them into one
:class:`~streamsafe.transparency.compute.TransparencyReport` (pure code, no Faust),
``render`` writes that one object as HTML, JSON or CSV, ``source`` reads the records
from a broker or a recording."""

from __future__ import annotations

from streamsafe.transparency.compute import TransparencyReport, compute_report
from streamsafe.transparency.log import EnforcementLog

__all__ = ["EnforcementLog", "TransparencyReport", "compute_report"]
