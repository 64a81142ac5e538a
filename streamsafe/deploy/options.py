"""What ``streamsafe deploy render`` is asked for: one frozen object, defaults from Settings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamsafe import __version__
from streamsafe.errors import ConfigError
from streamsafe.observability.alerts import PLACEHOLDER_RUNBOOK_BASE
from streamsafe.settings import Settings

__all__ = ["HTTP_PORT_NAME", "RenderOptions", "resource_name"]

HTTP_PORT_NAME = "http"  # the worker's /metrics, /healthz, /readyz port, by name
SECURITY_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")


def resource_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 subdomain) for ``text``: lower case, ``_`` as ``-``."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    if not name or len(name) > 253:
        raise ConfigError(f"cannot name a Kubernetes object after {text!r}")
    return name


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Where and how a StreamSafe deployment runs; the app id and topic prefix are the settings'."""

    settings: Settings
    namespace: str = "streamsafe"
    image: str = f"streamsafe:{__version__}"
    replicas: int = 2
    #: the Strimzi ``Kafka`` resource the topics and users belong to (label ``strimzi.io/cluster``)
    cluster: str = "kafka"
    #: host:port of the cluster's SCRAM-SHA-512 listener (default: Strimzi's bootstrap service, TLS port)
    bootstrap: str | None = None
    security_protocol: str = "SASL_SSL"
    storage: str = "10Gi"
    storage_class: str | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    memory_limit: str = "2Gi"
    #: KEDA: consumer lag per worker above which another worker is added
    lag_threshold: int = 1000
    grace_period_s: int = 60
    #: KEDA's ScaledObject owns the worker count (the StatefulSet then names none: re-applying
    #: the manifests must not undo a scale-out)
    autoscale: bool = True
    #: where docs/runbook.md is published: the alerts' runbook links point under it
    runbook_base: str = PLACEHOLDER_RUNBOOK_BASE

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("replicas must be at least 1")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"security_protocol must be one of {SECURITY_PROTOCOLS} (the KafkaUsers are SCRAM)")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace):
            raise ConfigError(f"namespace {self.namespace!r} is not a valid Kubernetes namespace")
        # the worker's objects and user names are derived from the app id: a Service name is an
        # RFC 1035 label, and a StatefulSet's pods' revision label leaves it 52 characters
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,50}[a-z0-9])?", self.name):
            raise ConfigError(f"app id {self.settings.app_id!r} does not make a Kubernetes name "
                              "(a letter first, then letters, digits, '-', '_' or '.'; at most 52)")

    @property
    def name(self) -> str:
        """The StatefulSet's, Service's and other workload objects' name (from the app id)."""
        return re.sub(r"[^a-z0-9]+", "-", self.settings.app_id.lower()).strip("-")

    @property
    def bootstrap_servers(self) -> str:
        if self.bootstrap:
            return self.bootstrap
        port = 9093 if self.security_protocol == "SASL_SSL" else 9092
        return f"{self.cluster}-kafka-bootstrap.{self.namespace}.svc:{port}"

    def user_name(self, role: str) -> str:
        """The KafkaUser (and SCRAM user name) of ``role``."""
        return f"{self.name}-{role}"

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "streamsafe",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "streamsafe",
            "app.kubernetes.io/managed-by": "streamsafe-deploy-render",
        }

    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "streamsafe", "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/component": "worker"}

    def metadata(self, name: str, component: str, **extra_labels: str) -> dict[str, object]:
        return {"name": name, "namespace": self.namespace, "labels": {**self.labels(component), **extra_labels}}
