"""Who may read and write which topic: the one table of Kafka roles; the topics say who uses them.

Each topic file in ``topics/`` names its roles -- ``"access": {"owner": ..., "read": [...],
"write": [...]}`` -- so a topic added to the contract says in the same file who may touch it,
and :func:`unassigned_topics` lists any that does not (or names a role not in :data:`ROLES`).
The worker's own consumer groups and its internal topics (the tables' changelogs and Faust's
leader topic, named ``<app id>-…``, and any repartition topic Faust would create with that
prefix) are the worker's, granted by name and by prefix; :func:`owned_topics` lists every
topic a deployment has with its owner. ``deploy render`` turns this into Strimzi ``KafkaUser``
ACLs and ``streamsafe acls`` into ``kafka-acls`` commands or JSON; anything else that needs
the role model (a security review, another deployment tool) should read it from here.

================  =======================================================================
role              access
================  =======================================================================
platform          writes the ``livestream.*`` inputs
worker            reads inputs and control topics, writes outputs and hashbank.entries (the
                  review loop's internal-confirmed additions) and streamsafe.audit, reads and
                  writes its internal topics; its groups ``<app id>``, ``<app id>-prefilter``,
                  ``<app id>-audit``
enforcement       reads enforcement.actions and enforcement.escalations
reviewer-tool     writes review.verdicts, reads enforcement.escalations; the Coop bridge's
                  streamsafe.coop-reports, and its dead letters
appeal-tool       writes review.appeals, reads enforcement.actions and enforcement.statements
reporting         the only reader of enforcement.reports, enforcement.preservation and
                  the dead-letter topic; reads what the transparency report counts
bank-admin        writes (and reads back, ``bank stats``) hashbank.entries; reads streamsafe.audit
policy-admin      writes (and reads back) streamsafe.policy, reads shadow decisions and
                  streamsafe.audit
================  =======================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamsafe.events.contract import TopicSpec
from streamsafe.settings import Settings

__all__ = ["ROLES", "Role", "RoleAccess", "TopicOwner", "owned_topics", "role_access", "role_names",
           "unassigned_topics"]

READ, WRITE = "Read", "Write"


@dataclass(frozen=True, slots=True)
class Role:
    """One kind of Kafka client of a StreamSafe deployment."""

    name: str
    description: str
    #: the worker: its consumer groups and its internal topics (``<app id>-`` prefix)
    is_worker: bool = False


ROLES: tuple[Role, ...] = (
    Role("platform", "the live-streaming platform: publishes frames, signals, metadata and user reports"),
    Role("worker", "StreamSafe workers", is_worker=True),
    Role("enforcement", "the platform's enforcement service: acts on decisions and escalations"),
    Role("reviewer-tool", "the human review tool (and streamsafe coop forward / serve): reads escalations, "
         "writes verdicts; the Coop bridge's record of what it reported, and its dead letters"),
    Role("appeal-tool", "the platform's complaint handling (DSA Art. 17, 20, 24(5)): gives broadcasters their "
         "decisions' statements of reasons, submits them to the Transparency Database, takes appeals"),
    Role("reporting", "the team that files reports with authorities and preserves evidence"),
    Role("bank-admin", "imports hash banks (streamsafe bank import / bank stats), reads the audit trail"),
    Role("policy-admin", "publishes live and shadow policies, compares shadow decisions, reads the audit trail "
         "(streamsafe audit, policy rollback)"),
)


def role_names() -> set[str]:
    return {role.name for role in ROLES}


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
    """Every role's access, by role name, as the topic files' ``access`` say. ``user_prefix``:
    the prefix of each role's user name (``<app id>-``); a role other than the worker may use
    any consumer group named after its user."""
    access = {}
    for role in ROLES:
        reads = sorted({settings.topic_name(n) for n, spec in contract.items() if role.name in spec.readers})
        writes = sorted({settings.topic_name(n) for n, spec in contract.items() if role.name in spec.writers})
        if role.is_worker:
            access[role.name] = RoleAccess(role, tuple(reads), tuple(writes),
                                           groups=(settings.app_id, settings.prefilter_group, settings.audit_group),
                                           topic_prefix=f"{settings.app_id}-")
        else:
            access[role.name] = RoleAccess(role, tuple(reads), tuple(writes),
                                           group_prefix=f"{user_prefix}{role.name}" if reads else None)
    return access


@dataclass(frozen=True, slots=True)
class TopicOwner:
    """One topic of a deployment (broker-side name) and the roles answerable for it."""

    topic: str
    owner: str | None
    readers: tuple[str, ...]
    writers: tuple[str, ...]
    internal: bool  # the worker's own: the tables' changelogs, Faust's topics (by the ``<app id>-`` prefix)
    description: str


def owned_topics(contract: Mapping[str, TopicSpec], settings: Settings) -> list[TopicOwner]:
    """Every topic StreamSafe creates, internal ones included, with its owner: the contract's as
    their files say, the worker's changelogs and Faust's leader topic (which hold matched frame
    hashes, reviewer ids and broadcaster ids: readable by the worker alone)."""
    from streamsafe.app import changelog_topics  # Faust: only when the worker's own topics are asked for

    topics = [TopicOwner(settings.topic_name(n), s.owner, s.readers, s.writers, s.direction == "internal",
                         s.description) for n, s in sorted(contract.items())]
    worker = next(r.name for r in ROLES if r.is_worker)
    topics += [TopicOwner(name, worker, (worker,), (worker,), True, spec.description)
               for name, spec in sorted(changelog_topics(settings, dict(contract)).items())]
    return topics


def unassigned_topics(contract: Mapping[str, TopicSpec]) -> list[str]:
    """Contract topics whose file does not say who uses them as it should: no owner, a role not
    in :data:`ROLES`, an input or control topic nobody outside the worker writes, an output
    nobody reads. A new topic file lands here until its ``access`` covers it."""
    known = role_names()
    workers = {r.name for r in ROLES if r.is_worker}
    missing = []
    for name, spec in sorted(contract.items()):
        unknown = sorted({*spec.readers, *spec.writers} - known)
        outside_readers, outside_writers = set(spec.readers) - workers, set(spec.writers) - workers
        if spec.owner is None:
            missing.append(f"{name} (no access.owner in its topic file)")
        elif unknown:
            missing.append(f"{name} (unknown roles {unknown})")
        elif spec.direction in ("in", "control") and not outside_writers:
            missing.append(f"{name} ({spec.direction}: no role writes it)")
        elif spec.direction == "out" and not outside_readers:
            missing.append(f"{name} (out: no role reads it)")
        elif spec.direction == "service" and not (outside_readers and outside_writers):
            missing.append(f"{name} (service: no role both reads and writes it)")
        elif spec.direction == "internal" and not set(spec.readers) | set(spec.writers) <= workers:
            missing.append(f"{name} (internal: the worker's alone)")
    return missing
