"""KEDA: scale the worker StatefulSet on its consumer groups' lag.

Two groups consume for a worker: ``<app id>`` (every input but frames, plus the pre-filter's
matches) and ``<app id>-prefilter`` (the frames, by far the most records); KEDA scales on the
larger of the two. A worker beyond the co-partitioned topics' partition count would sit idle
(one partition, one worker), so ``maxReplicaCount`` is at most that count. KEDA reads the group
offsets with its own SCRAM user (the ``scaler`` KafkaUser: describe only), through a
TriggerAuthentication naming that user's Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamsafe.deploy.options import RenderOptions
from streamsafe.events.contract import FRAME_HASHES, TopicSpec

__all__ = ["SCALER_ROLE", "max_workers", "scaled_object", "scaler_config", "trigger_authentication"]

SCALER_ROLE = "scaler"  # KEDA's KafkaUser: describes topics and the worker's groups, reads nothing


def max_workers(contract: Mapping[str, TopicSpec]) -> int:
    """The most workers that can each own a partition: the co-partitioned topics' count."""
    return contract[FRAME_HASHES].partitions


def _trigger(options: RenderOptions, group: str) -> dict[str, Any]:
    return {
        "type": "kafka",
        "name": f"lag-{group}".lower().replace("_", "-")[:63],
        "metadata": {
            "bootstrapServers": options.bootstrap_servers,
            "consumerGroup": group,
            # no topic: the lag of every topic the group has committed offsets for
            "lagThreshold": str(options.lag_threshold),
            "activationLagThreshold": "0",
            "offsetResetPolicy": "latest",
            "allowIdleConsumers": "false",  # never more workers than partitions
        },
        "authenticationRef": {"name": options.user_name(SCALER_ROLE)},
    }


def scaled_object(options: RenderOptions, contract: Mapping[str, TopicSpec]) -> dict[str, Any]:
    settings = options.settings
    ceiling = max_workers(contract)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": options.name},
            "minReplicaCount": min(options.replicas, ceiling),
            "maxReplicaCount": ceiling,
            "pollingInterval": 30,
            # each change of worker count is a group rebalance: scale in slowly
            "cooldownPeriod": 600,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": 600,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
                "scaleUp": {"stabilizationWindowSeconds": 60,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 120}]},
            }}},
            "triggers": [_trigger(options, settings.app_id), _trigger(options, settings.prefilter_group)],
        },
    }


def scaler_config(options: RenderOptions) -> dict[str, Any]:
    """What KEDA needs besides the password: the SASL mechanism, user name and TLS switch."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": options.metadata(options.user_name(SCALER_ROLE), "autoscaler"),
        "data": {"sasl": "scram_sha512", "username": options.user_name(SCALER_ROLE),
                 "tls": "enable" if options.security_protocol == "SASL_SSL" else "disable"},
    }


def trigger_authentication(options: RenderOptions) -> dict[str, Any]:
    """The scaler's credentials: the password from the Secret the Strimzi User Operator writes
    for its KafkaUser, the cluster CA from Strimzi's, the rest from :func:`scaler_config`."""
    user = options.user_name(SCALER_ROLE)
    spec: dict[str, Any] = {
        "configMapTargetRef": [{"parameter": key, "name": user, "key": key} for key in ("sasl", "username", "tls")],
        "secretTargetRef": [{"parameter": "password", "name": user, "key": "password"}],
    }
    if options.security_protocol == "SASL_SSL":
        spec["secretTargetRef"].append({"parameter": "ca", "name": f"{options.cluster}-cluster-ca-cert",
                                        "key": "ca.crt"})
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": options.metadata(user, "autoscaler"),
        "spec": spec,
    }
