"""``streamsafe deploy render``: every Kubernetes object of a deployment, from the contract
(``topics/``), the settings and :class:`~streamsafe.deploy.options.RenderOptions`, written as
a kustomize base (``kubectl apply -k DIR``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from streamsafe.deploy.monitoring import prometheus_rule, service_monitor
from streamsafe.deploy.options import RenderOptions
from streamsafe.deploy.scaling import scaled_object, scaler_config, trigger_authentication
from streamsafe.deploy.strimzi import kafka_topics, kafka_users
from streamsafe.deploy.workload import pod_disruption_budget, service, stateful_set
from streamsafe.events.contract import TopicSpec, load_contract

__all__ = ["render_files", "render_resources", "write_manifests"]

_HEADER = ("# Rendered by `streamsafe deploy render` from topics/ and the settings: change those and\n"
           "# render again rather than editing this file (patch it with kustomize overlays).\n")


def render_files(options: RenderOptions, contract: Mapping[str, TopicSpec] | None = None,
                 rules: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The objects of a deployment by the file they are written to."""
    contract = load_contract() if contract is None else contract
    files = {
        "worker.yaml": [stateful_set(options), service(options), pod_disruption_budget(options)],
        "monitoring.yaml": [service_monitor(options), prometheus_rule(options, rules)],
        "kafka-topics.yaml": kafka_topics(options, contract),
        "kafka-users.yaml": kafka_users(options, contract),
    }
    if options.autoscale:
        files["autoscaling.yaml"] = [scaler_config(options), trigger_authentication(options),
                                     scaled_object(options, contract)]
    return files


def render_resources(options: RenderOptions, contract: Mapping[str, TopicSpec] | None = None,
                     rules: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object of a deployment, in the order they are written."""
    return [r for resources in render_files(options, contract, rules).values() for r in resources]


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings (PromQL, summaries) as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _dump(resources: list[dict[str, Any]]) -> str:
    return _HEADER + "".join("---\n" + yaml.dump(r, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
                             for r in resources)


def write_manifests(options: RenderOptions, out: Path, contract: Mapping[str, TopicSpec] | None = None) -> list[Path]:
    """Write the deployment's files and a ``kustomization.yaml`` naming them into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = render_files(options, contract)
    written = []
    for name, resources in files.items():
        path = out / name
        path.write_text(_dump(resources))
        written.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "namespace": options.namespace, "resources": list(files)}
    path = out / "kustomization.yaml"
    path.write_text(_HEADER + yaml.dump(kustomization, Dumper=_Dumper, sort_keys=False))
    return [*written, path]
