"""Who may read and write which topic: the one table of Kafka roles, derived from ``topics/``.

Each role is a list of grants; a grant selects contract topics by their ``direction``
(in, out, control, internal) and/or by name patterns, so a topic file added to ``topics/``
is covered by the roles whose selectors match it, with no list of topic names to update.
The worker's own consumer groups and its internal topics (the tables' changelogs, named
``<app id>-…``) are granted by name and by prefix. ``deploy render`` turns this table into
Strimzi ``KafkaUser`` ACLs; anything else that needs the role model (a security review,
another deployment tool) should read it from here.

================  =======================================================================
role              access
================  =======================================================================
platform          writes the ``livestream.*`` inputs
worker            reads inputs and control topics, writes outputs, reads and writes its
                  internal topics; its groups ``<app id>``, ``<app id>-prefilter``,
                  ``<app id>-audit``
enforcement       reads enforcement.actions and enforcement.escalations
reviewer-tool     writes review.verdicts, reads enforcement.escalations; the Coop bridge's
                  streamsafe.coop-reports, and its dead letters
appeal-tool       writes review.appeals, reads enforcement.actions and enforcement.statements
reporting         the only reader of enforcement.reports, enforcement.preservation and
                  the dead-letter topic
bank-admin        writes (and reads back, ``bank stats``) hashbank.entries; reads streamsafe.audit
policy-admin      writes (and reads back) streamsafe.policy, reads shadow decisions and
                  streamsafe.audit
================  =======================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from streamsafe.events.contract import TopicSpec
from streamsafe.settings import Settings

__all__ = ["ROLES", "Grant", "Role", "RoleAccess", "role_access", "unassigned_topics"]

READ, WRITE = "Read", "Write"


@dataclass(frozen=True, slots=True)
class Grant:
    """Operations on the contract topics a selector matches: every listed ``direction``
    (none: any) and any of the ``names`` patterns (fnmatch on contract names; none: any)."""

    operations: tuple[str, ...]
    directions: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def selects(self, spec: TopicSpec) -> bool:
        return ((not self.directions or spec.direction in self.directions)
                and (not self.names or any(fnmatchcase(spec.name, p) for p in self.names)))


@dataclass(frozen=True, slots=True)
class Role:
    """One kind of Kafka client of a StreamSafe deployment."""

    name: str
    description: str
    grants: tuple[Grant, ...]
    #: the worker: its consumer groups and its internal topics (``<app id>-`` prefix)
    is_worker: bool = False


ROLES: tuple[Role, ...] = (
    Role("platform", "the live-streaming platform: publishes frames, signals, metadata and user reports",
         (Grant((WRITE,), directions=("in",), names=("livestream.*",)),)),
    Role("worker", "StreamSafe workers",
         (Grant((READ,), directions=("in", "control")),
          Grant((WRITE,), directions=("out",)),
          Grant((READ, WRITE), directions=("internal",))),
         is_worker=True),
    Role("enforcement", "the platform's enforcement service: acts on decisions and escalations",
         (Grant((READ,), names=("enforcement.actions", "enforcement.escalations")),)),
    Role("reviewer-tool", "the human review tool (and streamsafe coop forward / serve): reads escalations, "
         "writes verdicts; the Coop bridge's record of what it reported, and its dead letters",
         (Grant((WRITE,), names=("review.verdicts", "streamsafe.dead-letter")),
          Grant((READ,), names=("enforcement.escalations",)),
          Grant((READ, WRITE), directions=("service",), names=("streamsafe.coop-reports",)))),
    Role("appeal-tool", "the platform's complaint handling (DSA Art. 17, 20, 24(5)): gives broadcasters their "
         "decisions' statements of reasons, submits them to the Transparency Database, takes appeals",
         (Grant((WRITE,), names=("review.appeals",)),
          Grant((READ,), names=("enforcement.actions", "enforcement.statements")))),
    Role("reporting", "the team that files reports with authorities and preserves evidence",
         (Grant((READ,), names=("enforcement.reports", "enforcement.preservation", "streamsafe.dead-letter")),)),
    Role("bank-admin", "imports hash banks (streamsafe bank import / bank stats), reads the audit trail",
         (Grant((READ, WRITE), names=("hashbank.entries",)),
          Grant((READ,), names=("streamsafe.audit",)))),
    Role("policy-admin", "publishes live and shadow policies, compares shadow decisions, reads the audit trail "
         "(streamsafe audit, policy rollback)",
         (Grant((READ, WRITE), names=("streamsafe.policy",)),
          Grant((READ,), names=("streamsafe.shadow-decisions", "streamsafe.audit")))),
)


@dataclass(frozen=True, slots=True)
class RoleAccess:
    """What one role may do, by broker-side names."""

    role: Role
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    groups: tuple[str, ...] = ()  # consumer groups by exact name
    group_prefix: str | None = None  # any consumer group starting with this
    topic_prefix: str | None = None  # topics starting with this (read, write, create): the worker's own


def role_access(contract: Mapping[str, TopicSpec], settings: Settings, *,
                user_prefix: str = "") -> dict[str, RoleAccess]:
    """Every role's access, by role name. ``user_prefix``: the prefix of each role's user name
    (``<app id>-``); a role other than the worker may use any consumer group named after its user."""
    access = {}
    for role in ROLES:
        reads = sorted({settings.topic_name(n) for n, spec in contract.items()
                        if any(READ in g.operations and g.selects(spec) for g in role.grants)})
        writes = sorted({settings.topic_name(n) for n, spec in contract.items()
                         if any(WRITE in g.operations and g.selects(spec) for g in role.grants)})
        if role.is_worker:
            access[role.name] = RoleAccess(role, tuple(reads), tuple(writes),
                                           groups=(settings.app_id, settings.prefilter_group, settings.audit_group),
                                           topic_prefix=f"{settings.app_id}-")
        else:
            access[role.name] = RoleAccess(role, tuple(reads), tuple(writes),
                                           group_prefix=f"{user_prefix}{role.name}" if reads else None)
    return access


def unassigned_topics(contract: Mapping[str, TopicSpec]) -> list[str]:
    """Contract topics no role outside the worker uses as it should: an input or control topic
    nobody writes, an output nobody reads. A new topic file lands here until a grant covers it."""
    def used(spec: TopicSpec, operation: str) -> bool:
        return any(operation in g.operations and g.selects(spec)
                   for role in ROLES if not role.is_worker for g in role.grants)

    missing = []
    for name, spec in sorted(contract.items()):
        if spec.direction in ("in", "control") and not used(spec, WRITE):
            missing.append(f"{name} ({spec.direction}: no role writes it)")
        elif spec.direction == "out" and not used(spec, READ):
            missing.append(f"{name} (out: no role reads it)")
        elif spec.direction == "service" and not (used(spec, READ) and used(spec, WRITE)):
            missing.append(f"{name} (service: no role both reads and writes it)")
    return missing
