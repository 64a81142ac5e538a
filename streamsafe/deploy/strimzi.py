"""Strimzi resources: a ``KafkaTopic`` for every contract topic and every changelog the worker
uses, and a ``KafkaUser`` (SCRAM-SHA-512) for every role of :mod:`streamsafe.roles`.

Topics are rendered from whatever ``topics/`` holds, with the durability
:func:`~streamsafe.brokers.topics.topic_durability` gives (the contract's, or the settings'
development override), so the topics Strimzi creates are the ones ``streamsafe topics apply``
would. The worker runs with ``STREAMSAFE_CREATE_TOPICS=false``: it checks them, never creates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamsafe.app import changelog_topics
from streamsafe.brokers.topics import topic_durability
from streamsafe.deploy.options import RenderOptions, resource_name
from streamsafe.deploy.scaling import SCALER_ROLE
from streamsafe.errors import ConfigError
from streamsafe.events.contract import TopicSpec
from streamsafe.roles import RoleAccess, role_access

__all__ = ["cluster_topics", "kafka_topics", "kafka_users", "user_acls"]


def cluster_topics(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> dict[str, TopicSpec]:
    """Every topic a deployment needs, by broker-side name: the contract's and the worker's changelogs."""
    settings = options.settings
    topics = {settings.topic_name(name): spec for name, spec in contract.items()}
    topics.update(changelog_topics(settings, dict(contract)))
    return topics


def kafka_topics(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> list[dict[str, Any]]:
    resources = []
    names: dict[str, str] = {}
    for topic, spec in sorted(cluster_topics(options, contract).items()):
        replicas, config = topic_durability(spec, options.settings)
        name = resource_name(topic)
        if names.setdefault(name, topic) != topic:
            raise ConfigError(f"topics {names[name]} and {topic} would be the same KafkaTopic {name}")
        body: dict[str, Any] = {"partitions": spec.partitions, "replicas": replicas, "config": dict(config)}
        if name != topic:
            body = {"topicName": topic, **body}  # a Kafka name that is not a valid object name
        resources.append({
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaTopic",
            "metadata": options.metadata(name, "topic", **{"strimzi.io/cluster": options.cluster}),
            "spec": body,
        })
    return resources


def _acl(kind: str, name: str, operations: list[str], pattern: str = "literal") -> dict[str, Any]:
    return {"resource": {"type": kind, "name": name, "patternType": pattern}, "operations": operations}


def user_acls(access: RoleAccess) -> list[dict[str, Any]]:
    """The ACLs of one role: its topics (reads and writes merged per topic), its groups, and the
    cluster's IdempotentWrite for a role that writes (producers are idempotent; brokers before
    Kafka 3.0 ask for it)."""
    operations: dict[str, list[str]] = {}
    for topic in access.reads:
        operations.setdefault(topic, []).append("Read")
    for topic in access.writes:
        operations.setdefault(topic, []).append("Write")
    acls = [_acl("topic", topic, ops) for topic, ops in sorted(operations.items())]
    if access.topic_prefix:
        # its changelogs and Faust's leader topic; Create so Faust's own declaration of an
        # existing topic is answered "exists", not "not authorised"
        acls.append(_acl("topic", access.topic_prefix, ["Read", "Write", "Create", "DescribeConfigs"], "prefix"))
    acls += [_acl("group", group, ["Read"]) for group in access.groups]
    if access.group_prefix:
        acls.append(_acl("group", access.group_prefix, ["Read"], "prefix"))
    if access.writes:
        acls.append({"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"]})
    return acls


def _scaler_acls(options: RenderOptions, worker: RoleAccess) -> list[dict[str, Any]]:
    """KEDA reads group offsets and topic end offsets: Describe, nothing more."""
    topics = sorted({*worker.reads, *worker.writes})
    acls = [_acl("topic", topic, ["Describe"]) for topic in topics]
    if worker.topic_prefix:
        acls.append(_acl("topic", worker.topic_prefix, ["Describe"], "prefix"))
    return acls + [_acl("group", group, ["Describe"]) for group in worker.groups]


def _user(options: RenderOptions, role: str, acls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": options.metadata(options.user_name(role), "user",
                                      **{"strimzi.io/cluster": options.cluster, "streamsafe.org/role": role}),
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": acls},
        },
    }


def kafka_users(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> list[dict[str, Any]]:
    access = role_access(contract, options.settings, user_prefix=f"{options.name}-")
    users = [_user(options, role, user_acls(grants)) for role, grants in access.items()]
    users.append(_user(options, SCALER_ROLE, _scaler_acls(options, access["worker"])))
    return users
