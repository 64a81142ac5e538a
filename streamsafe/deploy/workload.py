"""The worker's own objects: StatefulSet, its headless Service and PodDisruptionBudget.

* A StatefulSet, not a Deployment: each pod keeps its name across restarts, which is its
  static group membership id (``STREAMSAFE_INSTANCE_ID``: a restarted pod gets its partitions
  back without a rebalance), and its own volume for the RocksDB tables (a restart replays only
  the changelog tail, not all of it).
* No preStop hook: the worker handles SIGTERM itself (it stops consuming, finishes and
  commits the records in hand, flushes its producer and closes), and no traffic reaches it
  through a Service, so there is nothing to drain first. ``terminationGracePeriodSeconds``
  leaves room for a delivery timeout and the changelog flush.
* Liveness is ``/healthz`` (the loop answers); readiness is ``/readyz`` (partitions assigned,
  tables recovered, policies and banks loaded, records still moving).
"""

from __future__ import annotations

from typing import Any

from streamsafe.deploy.options import HTTP_PORT_NAME, RenderOptions

__all__ = ["DATA_DIR", "USER_ID", "pod_disruption_budget", "service", "stateful_set", "worker_env"]

DATA_DIR = "/var/lib/streamsafe"  # the image's VOLUME, where RocksDB tables live
USER_ID = 10001  # the image's non-root user
_PASSWORD_DIR = "/etc/streamsafe/kafka-user"
_CA_DIR = "/etc/streamsafe/cluster-ca"


def worker_env(options: RenderOptions) -> list[dict[str, Any]]:
    """The worker container's ``STREAMSAFE_*`` environment."""
    settings = options.settings
    values = {
        "BROKER": ",".join(f"kafka://{h}" for h in options.bootstrap_servers.split(",")),
        "APP_ID": settings.app_id,
        "TOPIC_PREFIX": settings.topic_prefix,
        "STORE": "rocksdb://",
        "DATA_DIR": DATA_DIR,
        # Strimzi's KafkaTopic resources own the topics: a worker never creates one
        "CREATE_TOPICS": "false",
        "HTTP_PORT": str(settings.http_port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": settings.log_level,
        "SECURITY_PROTOCOL": options.security_protocol,
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": options.user_name("worker"),
        "SASL_PASSWORD_FILE": f"{_PASSWORD_DIR}/password",
    }
    if options.security_protocol == "SASL_SSL":
        values["SSL_CAFILE"] = f"{_CA_DIR}/ca.crt"
    env: list[dict[str, Any]] = [{"name": f"STREAMSAFE_{k}", "value": v} for k, v in values.items() if v != ""]
    env.append({"name": "STREAMSAFE_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": HTTP_PORT_NAME}, "periodSeconds": period_s,
            "timeoutSeconds": 5, "failureThreshold": failures}


def stateful_set(options: RenderOptions) -> dict[str, Any]:
    settings = options.settings
    volumes: list[dict[str, Any]] = [
        {"name": "kafka-user", "secret": {"secretName": options.user_name("worker"),
                                          "items": [{"key": "password", "path": "password"}]}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [{"name": "data", "mountPath": DATA_DIR},
              {"name": "kafka-user", "mountPath": _PASSWORD_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if options.security_protocol == "SASL_SSL":
        volumes.append({"name": "cluster-ca", "secret": {"secretName": f"{options.cluster}-cluster-ca-cert",
                                                         "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        mounts.append({"name": "cluster-ca", "mountPath": _CA_DIR, "readOnly": True})
    container = {
        "name": "worker",
        "image": options.image,
        "args": ["worker"],
        "env": worker_env(options),
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": settings.http_port, "protocol": "TCP"}],
        # a fresh pod recovers its tables from the changelogs before /readyz says yes; liveness
        # only asks that the event loop answers, so it may start at once
        "startupProbe": _probe("/healthz", 5, 24),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory},
                      "limits": {"memory": options.memory_limit}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": options.labels("worker")},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": options.storage}}},
    }
    if options.storage_class:
        claim["spec"]["storageClassName"] = options.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {
            "serviceName": options.name,
            **({} if options.autoscale else {"replicas": options.replicas}),
            # workers start and stop together: one group rebalance, not one per pod in turn
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": options.selector()},
            "template": {
                "metadata": {"labels": options.labels("worker")},
                "spec": {
                    "terminationGracePeriodSeconds": options.grace_period_s,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                                        "fsGroup": USER_ID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": volumes,
                    # spread workers so one node's loss takes one worker's partitions, not all
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": options.selector()}}],
                },
            },
            "volumeClaimTemplates": [claim],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        },
    }


def service(options: RenderOptions) -> dict[str, Any]:
    """Headless: the StatefulSet's pod DNS names, and the endpoints the ServiceMonitor scrapes."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {
            "clusterIP": "None",
            "selector": options.selector(),
            "ports": [{"name": HTTP_PORT_NAME, "port": options.settings.http_port,
                       "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}],
            "publishNotReadyAddresses": True,  # scrape a worker that is not ready too: that is when it matters
        },
    }


def pod_disruption_budget(options: RenderOptions) -> dict[str, Any]:
    """A drain takes one worker at a time: each rebalance moves one worker's partitions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": options.metadata(options.name, "worker"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": options.selector()}},
    }
