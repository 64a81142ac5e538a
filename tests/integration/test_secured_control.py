"""Signed control records on the secured broker (SASL_SSL, the ACLs ``streamsafe acls`` renders):
the bank admin and the policy admin may write their topics, yet what they write with ``kcat`` and
no signature is dead-lettered ``bad_signature`` (read by the reporting role, the dead letters' only
reader) and changes nothing the worker decides."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from streamsafe.brokers.base import free_port
from streamsafe.events.bank_entries import entry_id_for
from streamsafe.events.contract import ACTIONS, DEAD_LETTER, FRAME_HASHES, HASHBANK_ENTRIES, POLICY
from streamsafe.policy.loader import default_policy_text
from streamsafe.runner import spawn_worker
from tests.integration.conftest import KNOWN_MD5
from tests.integration.test_security import now_ms, read_topic, send

pytestmark = pytest.mark.integration


#: librdkafka before 2.6.1 sends a SCRAM proof Kafka 4.x rejects as invalid credentials
#: (confluentinc/librdkafka#4895); Debian 12's kcat links 2.0.2
SCRAM_FIXED = (2, 6, 1)


def kcat_environment(tmp_path: Path) -> dict[str, str]:
    """kcat's environment: as installed if its librdkafka authenticates with SCRAM on Kafka 4.x,
    else running on the librdkafka the confluent-kafka wheel carries (2.6.1 or later)."""
    version = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", subprocess.run(
        ["kcat", "-V"], capture_output=True, text=True, timeout=30).stdout)
    if version and tuple(int(v) for v in version.groups()) >= SCRAM_FIXED:
        return dict(os.environ)
    confluent = pytest.importorskip("confluent_kafka")
    assert tuple(int(v) for v in confluent.libversion()[0].split(".")[:3]) >= SCRAM_FIXED
    (bundled,) = (Path(confluent.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka-*.so.1")
    libs = tmp_path / "librdkafka"
    libs.mkdir(exist_ok=True)
    (libs / "librdkafka.so.1").unlink(missing_ok=True)
    (libs / "librdkafka.so.1").symlink_to(bundled)
    return {**os.environ, "LD_LIBRARY_PATH": str(libs)}


def kcat_as(secured, role: str, topic: str, key: bytes, value: bytes, tmp_path: Path) -> None:
    """Produce one unsigned record as ``role``'s user over SASL_SSL, as the README's produce() helper
    does (murmur2, acks=all); the password goes in a 0600 config file, not on the command line."""
    if shutil.which("kcat") is None:
        if os.environ.get("CI"):
            raise AssertionError("CI requires kcat")
        pytest.skip("kcat not installed (apt-get install kcat; CI installs it and requires it)")
    kafka = secured.kafka
    user = kafka.roles[role]
    config = tmp_path / f"kcat-{role}.conf"
    config.touch(mode=0o600)
    config.write_text(f"security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username={user}\n"
                      f"sasl.password={kafka.credentials[user].password}\nssl.ca.location={kafka.tls.ca}\n")
    done = subprocess.run(["kcat", "-F", str(config), "-P", "-b", kafka.bootstrap,
                           "-t", secured.settings.topic_name(topic), "-K", "|",
                           "-X", "partitioner=murmur2_random", "-X", "acks=all"],
                          input=key + b"|" + value + b"\n", capture_output=True, timeout=60,
                          env=kcat_environment(tmp_path))
    assert done.returncode == 0, done.stderr.decode(errors="replace")


async def test_kcat_without_a_signature_on_the_secured_broker_is_refused_and_changes_nothing(secured, tmp_path):
    run = uuid.uuid4().hex[:8]
    unsigned_md5 = uuid.uuid4().hex  # an entry no other test of the session's broker has
    entry_id = entry_id_for("ncmec", "md5", unsigned_md5)
    authority = tmp_path / "ncmec.txt"
    authority.write_text(f"md5:{KNOWN_MD5}\n")
    worker = spawn_worker(secured.role("worker", hash_list=authority, data_dir=tmp_path / "data",
                                       http_host="127.0.0.1", http_port=free_port()), tmp_path / "worker.log")
    try:
        worker.wait_ready(timeout_s=120)
        kcat_as(secured, "bank-admin", HASHBANK_ENTRIES, entry_id.encode(), orjson.dumps(
            {"schema_version": 1, "bank": "ncmec", "signal_type": "md5", "hash": unsigned_md5}), tmp_path)
        version = f"kcat-never-blocks-{run}"
        never_blocks = yaml.safe_load(default_policy_text()) | {"version": version, "rules": [
            {"name": "nothing", "when": {"risk": {"gte": 0.99}}, "then": ["monitor"]}]}
        kcat_as(secured, "policy-admin", POLICY, b"live", orjson.dumps(
            {"schema_version": 1, "published_at_ms": now_ms(), "policy": never_blocks}), tmp_path)

        def refusals(records):
            return [d for d in records if d.get("reason") == "bad_signature" and (
                d.get("original_key_b64") and d["detail"] == "unsigned")]

        def both(records):
            mine = [d for d in refusals(records) if d["source"]["topic"].endswith(HASHBANK_ENTRIES)
                    and orjson.loads(base64.b64decode(d["original_value_b64"])).get("hash")
                    == unsigned_md5]
            policies = [d for d in refusals(records) if d["source"]["topic"].endswith(POLICY)
                        and version.encode() in base64.b64decode(d["original_value_b64"])]
            return mine and policies

        await read_topic(secured.role("reporting"), DEAD_LETTER, both)
        # neither applied: one stream shows the unsigned entry's frame, then the known one's; the policy
        # in force blocks it, on the known entry's evidence (same key: the worker sees them in order)
        platform, stream = secured.role("platform"), f"kcat-{run}"
        for seq, md5 in enumerate((unsigned_md5, KNOWN_MD5)):
            await send(platform, FRAME_HASHES, stream, {"schema_version": 1, "stream_id": stream,
                                                        "frames": [{"seq": seq, "ts_ms": now_ms(), "md5": md5}]})
        actions = await read_topic(secured.role("enforcement"), ACTIONS, lambda rs: any(
            r.get("stream_id") == stream and r.get("action") == "block" for r in rs))
        (block,) = {r["decision_id"]: r for r in actions if r.get("stream_id") == stream
                    and r.get("action") == "block"}.values()
        matched = {e.get("entry_id") for e in block["evidence"] if e.get("kind") == "hash_match"}
        assert matched and entry_id not in matched, block["evidence"]  # the hash list's entry, not kcat's
    finally:
        worker.stop()
