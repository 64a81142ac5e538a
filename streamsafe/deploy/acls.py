"""The Kafka ACLs of a deployment, for clusters not run by Strimzi: ``streamsafe acls``.

The same ACLs the rendered ``KafkaUser`` objects carry (:func:`~streamsafe.deploy.strimzi.kafka_users`,
from the topic files' ``access`` and :mod:`streamsafe.roles`), one principal per role
(``User:<app id>-<role>``), as ``kafka-acls.sh`` commands or as JSON for automation. The JSON
also lists every topic StreamSafe creates with its owner, internal ones included.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from streamsafe.deploy.options import RenderOptions
from streamsafe.deploy.strimzi import kafka_users
from streamsafe.events.contract import TopicSpec
from streamsafe.roles import owned_topics

__all__ = ["acl_document", "acl_entries", "kafka_acls_script"]

_CLUSTER = "kafka-cluster"  # the one cluster resource's name, as Kafka knows it


def acl_entries(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> list[dict[str, Any]]:
    """Every ACL, flat: principal, role, resource type and name, pattern type, operation."""
    entries = []
    for user in kafka_users(options, contract):
        role = user["metadata"]["labels"]["streamsafe.org/role"]
        principal = f"User:{user['metadata']['name']}"
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            pattern = "prefixed" if resource.get("patternType") == "prefix" else "literal"
            for operation in acl["operations"]:
                entries.append({"principal": principal, "role": role, "resource_type": resource["type"],
                                "resource_name": resource.get("name", _CLUSTER), "pattern_type": pattern,
                                "operation": operation, "permission": "Allow", "host": "*"})
    return entries


def acl_document(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> dict[str, Any]:
    """The JSON ``streamsafe acls --format json`` prints: the users, their ACLs, the topics' owners."""
    settings = options.settings
    entries = acl_entries(options, contract)
    users = {e["role"]: e["principal"].removeprefix("User:") for e in entries}
    return {
        "app_id": settings.app_id,
        "topic_prefix": settings.topic_prefix,
        "users": dict(sorted(users.items())),
        "acls": entries,
        "topics": [{"topic": t.topic, "owner": t.owner, "read": list(t.readers), "write": list(t.writers),
                    "internal": t.internal} for t in owned_topics(contract, settings)],
    }


def kafka_acls_script(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> str:
    """A shell script of ``kafka-acls.sh --add`` commands, one per principal and resource."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for entry in acl_entries(options, contract):
        key = (entry["principal"], entry["resource_type"], entry["resource_name"], entry["pattern_type"])
        grouped.setdefault(key, []).append(entry["operation"])
    settings = options.settings
    lines = [
        "#!/bin/sh",
        f"# StreamSafe's ACLs: app id {settings.app_id!r}, topic prefix {settings.topic_prefix!r}"
        " (streamsafe acls --format kafka-acls)",
        "# BOOTSTRAP: host:port of a listener where the admin may create ACLs;"
        " ADMIN_CONFIG: that admin's client properties",
        "set -eu",
        ': "${KAFKA_ACLS:=kafka-acls.sh}"',
    ]
    for (principal, kind, name, pattern), operations in grouped.items():
        resource = "--cluster" if kind == "cluster" else f"--{kind} {shlex.quote(name)}"
        lines.append(
            '"$KAFKA_ACLS" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --add '
            f"--allow-principal {shlex.quote(principal)} {resource} --resource-pattern-type {pattern} "
            + " ".join(f"--operation {op}" for op in operations))
    return "\n".join(lines) + "\n"
