"""Deploying StreamSafe on Kubernetes: ``streamsafe deploy render`` writes the worker's
StatefulSet, Service, PodDisruptionBudget, monitoring, KEDA autoscaling and the Strimzi topics
and users from the contract and the settings. Rooms: :mod:`.options` (what is asked for),
:mod:`.workload`, :mod:`.monitoring`, :mod:`.scaling`, :mod:`.strimzi`, :mod:`.render`."""

from streamsafe.deploy.options import RenderOptions
from streamsafe.deploy.render import render_files, render_resources, write_manifests

__all__ = ["RenderOptions", "render_files", "render_resources", "write_manifests"]
