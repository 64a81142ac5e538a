"""``streamsafe acls``: the ACLs of the rendered KafkaUsers, for any cluster, as kafka-acls.sh
commands or JSON; and the secured development broker's certificates and password files."""

from __future__ import annotations

import json
import shlex
import ssl
import stat

from click.testing import CliRunner

from streamsafe.brokers.secure import write_certificates, write_password
from streamsafe.cli import cli
from streamsafe.deploy import RenderOptions
from streamsafe.deploy.acls import acl_document, acl_entries, kafka_acls_script
from streamsafe.events.contract import load_contract
from streamsafe.settings import Settings


def options(**settings) -> RenderOptions:
    return RenderOptions(Settings(**settings))


def entries_of(document, role):
    return {(a["resource_type"], a["resource_name"], a["pattern_type"], a["operation"])
            for a in document["acls"] if a["role"] == role}


def test_the_json_names_each_role_s_user_grants_and_the_worker_s_groups_and_prefix():
    document = acl_document(options(app_id="ss", topic_prefix="p."), load_contract())
    assert document["users"]["platform"] == "ss-platform"
    platform = entries_of(document, "platform")
    assert ("topic", "p.livestream.frame-hashes", "literal", "Write") in platform
    assert not {e for e in platform if e[1] in ("p.enforcement.actions", "p.hashbank.entries")}
    worker = entries_of(document, "worker")
    assert {("group", "ss", "literal", "Read"), ("group", "ss-prefilter", "literal", "Read"),
            ("topic", "ss-", "prefixed", "Read"), ("topic", "ss-", "prefixed", "Write"),
            ("cluster", "kafka-cluster", "literal", "IdempotentWrite")} <= worker
    assert not {e for e in entries_of(document, "enforcement") if e[1] == "p.enforcement.reports"}
    readers = {a["role"] for a in document["acls"] if a["resource_name"] == "p.enforcement.reports"
               and a["operation"] == "Read"}
    assert readers == {"reporting"}
    internal = {t["topic"]: t for t in document["topics"] if t["internal"]}
    assert {"ss-incidents-changelog", "ss-stream-state-changelog", "p.streamsafe.frame-matches"} <= set(internal)
    assert all(t["owner"] == "worker" and t["read"] == ["worker"] for t in internal.values())


def test_the_kafka_acls_script_says_the_same_as_the_json():
    opts = options(app_id="ss", topic_prefix="p.")
    contract = load_contract()
    script = kafka_acls_script(opts, contract)
    said = set()
    for line in script.splitlines():
        if line.startswith("#") or not line.startswith('"$KAFKA_ACLS"'):
            continue
        words = shlex.split(line)
        assert words[1:6] == ["--bootstrap-server", "$BOOTSTRAP", "--command-config", "$ADMIN_CONFIG", "--add"]
        principal = words[words.index("--allow-principal") + 1]
        pattern = words[words.index("--resource-pattern-type") + 1]
        if "--cluster" in words:
            resource = ("cluster", "kafka-cluster")
        else:
            kind = next(k for k in ("topic", "group") if f"--{k}" in words)
            resource = (kind, words[words.index(f"--{kind}") + 1])
        for i, word in enumerate(words):
            if word == "--operation":
                said.add((principal, *resource, pattern, words[i + 1]))
    expected = {(e["principal"], e["resource_type"], e["resource_name"], e["pattern_type"], e["operation"])
                for e in acl_entries(opts, contract)}
    assert said == expected and len(expected) > 50


def test_the_command_prints_json_and_the_script():
    runner = CliRunner()
    result = runner.invoke(cli, ["acls", "--format", "json", "--app-id", "ss", "--prefix", "p."])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["topic_prefix"] == "p."
    script = runner.invoke(cli, ["acls", "--app-id", "ss"])
    assert script.exit_code == 0 and "--allow-principal User:ss-reporting --topic enforcement.reports" in script.output


def test_the_development_ca_signs_a_broker_certificate_for_loopback(tmp_path):
    tls = write_certificates(tmp_path)
    context = ssl.create_default_context(cafile=str(tls.ca))  # a valid CA certificate
    assert context.cert_store_stats()["x509_ca"] == 1
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.certificate_chain, tls.key)  # the key matches the certificate
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    credential = write_password(tmp_path / "credentials", "ss-platform")
    assert stat.S_IMODE(credential.password_file.stat().st_mode) == 0o600 and len(credential.password) >= 40
