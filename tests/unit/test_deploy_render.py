"""`streamsafe deploy render`: every rendered object validates offline (built-in kinds against
the Kubernetes schemas kubernetes-validate ships, custom resources against the projects' own
CRDs in ../shared/data/k8s-crds), the Strimzi topics are topics/ one to one, and the roles'
ACLs say who reads and writes what."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamsafe.app import changelog_topics
from streamsafe.deploy import RenderOptions, render_files, render_resources
from streamsafe.deploy.monitoring import alert_rules
from streamsafe.deploy.workload import DATA_DIR
from streamsafe.errors import ConfigError
from streamsafe.events.contract import FRAME_HASHES, contract_dir, load_contract
from streamsafe.roles import ROLES, role_access, unassigned_topics
from streamsafe.settings import ENV_FIELDS, ENV_PREFIX, SECURITY_ENV, Settings

#: the Kubernetes version built-in kinds are validated against (one kubernetes-validate ships)
KUBERNETES_VERSION = "1.33"
CRD_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "k8s-crds"
#: more CRD folders (os.pathsep-separated), for kinds the shared folder lacks
EXTRA_CRDS = "STREAMSAFE_TEST_EXTRA_CRDS"
BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1"}


def _crd_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(EXTRA_CRDS, "").split(os.pathsep) if p]
    return [d for d in (CRD_DIR, *extra) if d.is_dir()]


def _strict(schema: Any) -> Any:
    """An openAPIV3Schema that refuses unknown fields, as ``kubectl apply --validate=strict``
    does (the API server would otherwise drop a misspelt field without a word)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _load_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD version's schema, made strict."""
    schemas = {}
    for directory in _crd_dirs():
        for path in sorted(directory.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(schema)
    return schemas


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"CRDs not found at {CRD_DIR} (the shared folder next to the repository)")
    return _load_crds()


def validate_custom(resource: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    schema = crds[(resource["apiVersion"], resource["kind"])]
    jsonschema.Draft7Validator(schema).validate(resource)


def validate_builtin(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def contract():
    return load_contract()


def options(**changes: Any) -> RenderOptions:
    return RenderOptions(Settings(**changes.pop("settings", {})), **changes)


@pytest.fixture(scope="module")
def rendered(contract) -> list[dict[str, Any]]:
    return render_resources(options(), contract)


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


VARIANTS = {
    "defaults": {},
    "plaintext, prefix, fixed size": {"security_protocol": "SASL_PLAINTEXT", "autoscale": False, "replicas": 3,
                                      "settings": {"topic_prefix": "prod_", "app_id": "ss_eu"},
                                      "storage_class": "fast-ssd"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_built_in_object_validates_against_the_kubernetes_schema(variant, contract):
    resources = render_resources(options(**copy.deepcopy(VARIANTS[variant])), contract)
    builtin = [r for r in resources if r["apiVersion"] in BUILTIN_GROUPS]
    assert {r["kind"] for r in builtin} >= {"StatefulSet", "Service", "PodDisruptionBudget"}
    for resource in builtin:
        validate_builtin(resource)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_custom_resource_validates_against_its_crd(variant, contract, crds):
    resources = render_resources(options(**copy.deepcopy(VARIANTS[variant])), contract)
    custom = [r for r in resources if r["apiVersion"] not in BUILTIN_GROUPS]
    missing = sorted({f"{r['apiVersion']} {r['kind']}" for r in custom if (r["apiVersion"], r["kind"]) not in crds})
    for resource in custom:
        if (resource["apiVersion"], resource["kind"]) in crds:
            validate_custom(resource, crds)
    assert {r["kind"] for r in custom if (r["apiVersion"], r["kind"]) in crds} >= {
        "KafkaTopic", "KafkaUser", "ServiceMonitor", "PrometheusRule"}
    # only KEDA's TriggerAuthentication may lack a CRD there (the shared folder has ScaledObject's)
    assert set(missing) <= {"keda.sh/v1alpha1 TriggerAuthentication"}, missing


def test_keda_trigger_authentication_validates_against_its_crd(rendered, crds):
    if ("keda.sh/v1alpha1", "TriggerAuthentication") not in crds:
        pytest.skip(f"no TriggerAuthentication CRD in {CRD_DIR} (or ${EXTRA_CRDS}): kedacore/keda "
                    "config/crd/bases/keda.sh_triggerauthentications.yaml")
    for resource in by_kind(rendered, "TriggerAuthentication"):
        validate_custom(resource, crds)
    broken = copy.deepcopy(by_kind(rendered, "TriggerAuthentication")[0])
    del broken["spec"]["secretTargetRef"][0]["key"]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken, crds)


def test_a_broken_object_fails_validation(rendered, crds):
    statefulset = copy.deepcopy(by_kind(rendered, "StatefulSet")[0])
    statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8466"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(statefulset)
    misspelt = copy.deepcopy(by_kind(rendered, "Service")[0])
    misspelt["spec"]["clusterIp"] = misspelt["spec"].pop("clusterIP")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(misspelt)

    topic = copy.deepcopy(by_kind(rendered, "KafkaTopic")[0])
    topic["spec"]["partitions"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(topic, crds)
    user = copy.deepcopy(by_kind(rendered, "KafkaUser")[0])
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Wirte"]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(user, crds)
    scaled = copy.deepcopy(by_kind(rendered, "ScaledObject")[0])
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")  # a misspelt field is refused too
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(scaled, crds)


def _topic_files() -> dict[str, dict[str, Any]]:
    """topics/ read as files, not through the contract loader."""
    return {(d := json.loads(p.read_text()))["name"]: d for p in sorted(contract_dir().glob("*.json"))}


@pytest.mark.parametrize("prefix", ["", "prod."])
def test_the_strimzi_topics_are_the_contract_and_the_changelogs_one_to_one(contract, prefix):
    settings = Settings(topic_prefix=prefix)
    topics = by_kind(render_resources(RenderOptions(settings), contract), "KafkaTopic")
    rendered = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in topics}
    assert len(rendered) == len(topics)  # no topic twice
    files = _topic_files()
    changelogs = changelog_topics(settings, contract)
    assert set(rendered) == {prefix + name for name in files} | set(changelogs)
    for name, spec in files.items():
        topic = rendered[prefix + name]
        assert topic["spec"]["partitions"] == spec["partitions"]
        assert topic["spec"]["replicas"] == spec["replication_factor"]
        assert topic["spec"]["config"] == spec["config"]  # min.insync.replicas included
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "kafka"
    for name, spec in changelogs.items():
        topic = rendered[name]
        assert (topic["spec"]["partitions"], topic["spec"]["replicas"]) == (spec.partitions, spec.replication_factor)
        assert topic["spec"]["config"]["min.insync.replicas"] == "2"


def test_the_settings_development_durability_reaches_the_topics(contract):
    settings = Settings(replication_factor=1, min_insync_replicas=1)
    topics = by_kind(render_resources(RenderOptions(settings), contract), "KafkaTopic")
    assert {(t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"]) for t in topics} == {(1, "1")}


def test_a_new_topic_file_says_who_uses_it_without_a_list_to_update(tmp_path):
    for path in contract_dir().glob("*.json"):
        shutil.copy(path, tmp_path)
    spec = json.loads((contract_dir() / "enforcement.actions.json").read_text())
    spec["name"] = "enforcement.notices"
    spec["access"] = {"owner": "worker", "read": [], "write": ["worker"]}
    (tmp_path / "enforcement.notices.json").write_text(json.dumps(spec))
    contract = load_contract(tmp_path)
    resources = render_resources(options(), contract)
    assert "enforcement.notices" in {t["metadata"]["name"] for t in by_kind(resources, "KafkaTopic")}
    worker = next(u for u in by_kind(resources, "KafkaUser") if u["metadata"]["name"] == "streamsafe-worker")
    writes = {a["resource"]["name"] for a in worker["spec"]["authorization"]["acls"] if "Write" in a["operations"]}
    assert "enforcement.notices" in writes  # its file says the worker writes it
    # nobody reads it yet: say so, rather than grant it to someone silently
    assert unassigned_topics(contract) == ["enforcement.notices (out: no role reads it)"]
    del spec["access"]
    other = tmp_path / "without-access"  # the contract is read once per directory
    shutil.copytree(tmp_path, other, ignore=shutil.ignore_patterns("without-access"))
    (other / "enforcement.notices.json").write_text(json.dumps(spec))
    assert unassigned_topics(load_contract(other)) == ["enforcement.notices (no access.owner in its topic file)"]


def test_every_contract_topic_has_the_roles_its_direction_needs(contract):
    assert unassigned_topics(contract) == [], "say who uses it in its topic file's access"


def _acls(resources, role):
    user = next(u for u in by_kind(resources, "KafkaUser") if u["metadata"]["labels"]["streamsafe.org/role"] == role)
    return user["spec"]["authorization"]["acls"]


def _topics(acls, operation):
    return {a["resource"]["name"] for a in acls
            if a["resource"]["type"] == "topic" and a["resource"]["patternType"] == "literal"
            and operation in a["operations"]}


def test_the_users_acls_follow_the_role_table(rendered, contract):
    users = by_kind(rendered, "KafkaUser")
    assert {u["metadata"]["labels"]["streamsafe.org/role"] for u in users} == {r.name for r in ROLES} | {"scaler"}
    assert all(u["spec"]["authentication"]["type"] == "scram-sha-512" for u in users)
    files = _topic_files()
    by_direction = {d: {n for n, s in files.items() if s["direction"] == d} for d in ("in", "out", "control",
                                                                                       "internal")}
    worker = _acls(rendered, "worker")
    assert _topics(worker, "Read") == by_direction["in"] | by_direction["control"] | by_direction["internal"]
    # and the review loop's bank additions (a confirmed verdict's frames into internal-confirmed)
    assert _topics(worker, "Write") == by_direction["out"] | by_direction["internal"] | {"hashbank.entries"}
    groups = {(a["resource"]["name"], a["resource"]["patternType"]) for a in worker if a["resource"]["type"] == "group"}
    assert groups == {("streamsafe", "literal"), ("streamsafe-prefilter", "literal"), ("streamsafe-audit", "literal")}
    assert ("streamsafe-", "prefix") in {(a["resource"].get("name"), a["resource"].get("patternType")) for a in worker}
    assert _topics(_acls(rendered, "platform"), "Write") == {n for n in by_direction["in"]
                                                             if n.startswith("livestream.")}
    reviewer = _acls(rendered, "reviewer-tool")  # and the Coop bridge: its record and its dead letters
    assert _topics(reviewer, "Write") == {"review.verdicts", "streamsafe.coop-reports", "streamsafe.dead-letter"}
    assert _topics(reviewer, "Read") == {"enforcement.escalations", "streamsafe.coop-reports"}
    appeals = _acls(rendered, "appeal-tool")
    assert _topics(appeals, "Write") == {"review.appeals"}
    assert _topics(appeals, "Read") == {"enforcement.actions", "enforcement.statements"}
    assert _topics(_acls(rendered, "enforcement"), "Read") == {"enforcement.actions", "enforcement.escalations"}
    # reporting is the only reader of reports, preservation and dead letters
    for topic in ("enforcement.reports", "enforcement.preservation", "streamsafe.dead-letter"):
        readers = {u["metadata"]["labels"]["streamsafe.org/role"] for u in users
                   if topic in _topics(u["spec"]["authorization"]["acls"], "Read")}
        assert readers == {"reporting"}, topic
    assert _topics(_acls(rendered, "bank-admin"), "Write") == {"hashbank.entries"}
    assert _topics(_acls(rendered, "policy-admin"), "Write") == {"streamsafe.policy"}
    scaler = _acls(rendered, "scaler")
    assert all(a["operations"] == ["Describe"] for a in scaler)


@pytest.mark.parametrize("app_id", ["9lives", "a" * 53, "--"])
def test_an_app_id_that_makes_no_kubernetes_name_is_refused(app_id):
    with pytest.raises(ConfigError, match="Kubernetes name"):
        options(settings={"app_id": app_id})


def test_role_access_uses_the_broker_side_names(contract):
    access = role_access(contract, Settings(topic_prefix="eu."), user_prefix="ss-")
    assert "eu.livestream.frame-hashes" in access["platform"].writes
    assert access["reviewer-tool"].group_prefix == "ss-reviewer-tool"
    assert access["platform"].group_prefix is None  # writes only: no consumer group


def test_the_prometheus_rule_carries_the_shipped_alerts_unchanged(rendered):
    rule = by_kind(rendered, "PrometheusRule")[0]
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == shipped  # the file promtool tests, rule for rule
    assert yaml.safe_load(yaml.safe_dump(rule))["spec"] == shipped  # survives a YAML round trip


def test_the_prometheus_rule_links_to_the_platforms_runbook(contract):
    base = "https://wiki.example.org/streamsafe/runbook"
    rule = by_kind(render_resources(options(runbook_base=base), contract), "PrometheusRule")[0]
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert rules and all(r["annotations"]["runbook_url"] == f"{base}#{r['alert'].lower()}" for r in rules)
    shipped = [r for g in alert_rules()["groups"] for r in g["rules"] if "alert" in r]
    assert [r["expr"] for r in rules] == [r["expr"] for r in shipped]


def test_keda_never_scales_past_the_partition_count(contract):
    partitions = contract[FRAME_HASHES].partitions
    for replicas in (1, 2, partitions + 4):
        scaled = by_kind(render_resources(options(replicas=replicas), contract), "ScaledObject")[0]["spec"]
        assert scaled["maxReplicaCount"] == partitions
        assert all(s.partitions >= partitions for s in contract.values() if s.direction == "in")
        assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
        assert {t["metadata"]["consumerGroup"] for t in scaled["triggers"]} == {"streamsafe", "streamsafe-prefilter"}
        assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "streamsafe"}


def test_autoscaling_leaves_the_worker_count_to_keda(contract):
    files = render_files(options(), contract)
    assert "replicas" not in files["worker.yaml"][0]["spec"]
    fixed = render_files(options(autoscale=False, replicas=3), contract)
    assert "autoscaling.yaml" not in fixed
    assert fixed["worker.yaml"][0]["spec"]["replicas"] == 3


def test_the_worker_pod(rendered, tmp_path):
    statefulset = by_kind(rendered, "StatefulSet")[0]
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": DATA_DIR} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMSAFE_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    known = {ENV_PREFIX + n for n in (*ENV_FIELDS, *SECURITY_ENV)} | {ENV_PREFIX + "SASL_PASSWORD_FILE"}
    assert set(env) <= known, set(env) - known
    # the environment builds the settings it means (the password file as the Secret mounts it)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    values = {name: e.get("value", "streamsafe-0") for name, e in env.items()}
    values["STREAMSAFE_SASL_PASSWORD_FILE"] = str(password)
    settings = Settings.from_env(values)
    assert (settings.store, str(settings.data_dir), settings.create_topics) == ("rocksdb://", DATA_DIR, False)
    assert (settings.instance_id, settings.security.sasl_password) == ("streamsafe-0", "s3cret")
    assert settings.security.sasl_username == "streamsafe-worker"
    assert container["ports"][0]["containerPort"] == settings.http_port
