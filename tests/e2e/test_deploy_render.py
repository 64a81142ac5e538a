"""`streamsafe deploy render --out DIR` run as an operator runs it: a kustomize base whose
files hold every object, in the namespace and with the image asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


def test_deploy_render_writes_a_kustomize_base(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSAFE_")}
    env["STREAMSAFE_APP_ID"] = "safety"  # values come from the settings' environment too
    out = tmp_path / "k8s"
    result = subprocess.run([sys.executable, "-m", "streamsafe", "deploy", "render", "--out", str(out),
                             "--namespace", "trust", "--image", "registry.example/streamsafe:1.2.3",
                             "--cluster", "events"],
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # every contract topic has its roles: no warning
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "trust"
    resources = [r for name in kustomization["resources"] for r in yaml.safe_load_all((out / name).read_text()) if r]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    kinds = {r["kind"] for r in resources}
    assert kinds >= {"StatefulSet", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule",
                     "ScaledObject", "KafkaTopic", "KafkaUser"}
    assert {r["metadata"]["namespace"] for r in resources} == {"trust"}
    statefulset = next(r for r in resources if r["kind"] == "StatefulSet")
    assert statefulset["metadata"]["name"] == "safety"
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/streamsafe:1.2.3"
    assert {r["metadata"]["labels"]["strimzi.io/cluster"] for r in resources
            if r["kind"] in ("KafkaTopic", "KafkaUser")} == {"events"}
    for line in result.stdout.splitlines():
        assert line.startswith(f"wrote {out}")
    # the files as written, through kubernetes-validate's own command (built-in kinds, strict)
    validated = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.33",
                                "--no-warn", *(str(out / name) for name in kustomization["resources"])],
                               capture_output=True, text=True, timeout=120, check=False)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.count(" passed for resource ") == sum(
        r["apiVersion"] in ("v1", "apps/v1", "policy/v1") for r in resources)


def test_deploy_render_refuses_a_bad_namespace_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "streamsafe", "deploy", "render", "--out", str(tmp_path),
                             "--namespace", "Not_A_Namespace"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert "namespace" in result.stderr and "Traceback" not in result.stderr
