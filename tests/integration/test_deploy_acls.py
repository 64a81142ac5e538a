"""The rendered Strimzi resources on a real, secured Apache Kafka: topics created as the
KafkaTopics say, ACLs created as the User Operator would from the KafkaUsers, and a real
worker configured by the StatefulSet's environment (SCRAM-SHA-512, STREAMSAFE_CREATE_TOPICS
=false) deciding with exactly those permissions; roles stay inside their grants."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from streamsafe import clients
from streamsafe.brokers.base import BrokerProcess, free_port, free_ports
from streamsafe.brokers.kafka import start_kafka
from streamsafe.control.broadcast import stop_consumer
from streamsafe.deploy import RenderOptions, render_resources
from streamsafe.events.contract import ACTIONS, FRAME_HASHES
from streamsafe.runner import spawn_worker
from streamsafe.settings import KafkaSecurity, Settings
from tests.integration.test_worker import KNOWN_MD5, frames

confluent_admin = pytest.importorskip("confluent_kafka.admin")

pytestmark = pytest.mark.integration


_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def _choice() -> str:
    choice = os.environ.get("STREAMSAFE_TEST_BROKER", "auto")
    return ("kafka" if shutil.which("java") else "tansu") if choice == "auto" else choice


def start_secured_kafka(users: dict[str, str]) -> tuple[BrokerProcess, str]:
    """A one-node KRaft broker with ACLs enforced: PLAINTEXT for the test itself (anonymous is a
    super user there), SASL_PLAINTEXT with SCRAM-SHA-512 for ``users`` (name -> password), whose
    credentials are written when the storage is formatted. Returns the broker and its SASL address."""
    port, controller_port, sasl_port = free_ports(3)
    broker = start_kafka(port=port, controller_port=controller_port, kind="Apache Kafka (SASL, ACLs)",
                         scram_users=users, extra_properties=f"""
listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={_SCRAM_LOGIN}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
""")
    return broker, f"127.0.0.1:{sasl_port}"


def acl_bindings(user: dict[str, Any]) -> list[Any]:
    """A KafkaUser's ACLs as Kafka ACL bindings, the way Strimzi's User Operator creates them."""
    admin = confluent_admin
    principal = f"User:{user['metadata']['name']}"
    bindings = []
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        kind = {"topic": admin.ResourceType.TOPIC, "group": admin.ResourceType.GROUP,
                "cluster": admin.ResourceType.BROKER}[resource["type"]]
        pattern = (admin.ResourcePatternType.PREFIXED if resource.get("patternType") == "prefix"
                   else admin.ResourcePatternType.LITERAL)
        name = resource.get("name", "kafka-cluster")
        for operation in acl["operations"]:
            op = getattr(admin.AclOperation, "".join("_" + c if c.isupper() else c for c in operation)
                         .lstrip("_").upper())
            bindings.append(admin.AclBinding(kind, name, pattern, principal, "*", op,
                                             admin.AclPermissionType.ALLOW))
    return bindings


def create_acls(bootstrap: str, users: list[dict[str, Any]]) -> None:
    admin = confluent_admin.AdminClient({"bootstrap.servers": bootstrap})
    bindings = [b for user in users for b in acl_bindings(user)]
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    # the ACLs are in force (on the broker's metadata) before anyone uses them
    everything = confluent_admin.AclBindingFilter(
        confluent_admin.ResourceType.ANY, None, confluent_admin.ResourcePatternType.ANY, None, None,
        confluent_admin.AclOperation.ANY, confluent_admin.AclPermissionType.ANY)
    deadline = time.monotonic() + 30
    while len(admin.describe_acls(everything).result(timeout=30)) < len(bindings):
        assert time.monotonic() < deadline, "ACLs not in force after 30 s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def secured():
    choice = _choice()
    if choice != "kafka":
        pytest.skip(f"ACLs are tested on Apache Kafka only (STREAMSAFE_TEST_BROKER={choice})")
    test_id = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"t{test_id}.", app_id=f"ss-t{test_id}", replication_factor=1,
                        min_insync_replicas=1)
    options = RenderOptions(settings, security_protocol="SASL_PLAINTEXT", bootstrap="127.0.0.1:0")
    users = {u["metadata"]["name"]: uuid.uuid4().hex for u in render_resources(options) if u["kind"] == "KafkaUser"}
    broker, sasl = start_secured_kafka(users)
    try:
        options = RenderOptions(settings, security_protocol="SASL_PLAINTEXT", bootstrap=sasl)
        resources = render_resources(options)
        admin_settings = Settings(broker_url=f"kafka://{broker.bootstrap}")

        async def create_topics() -> None:
            admin = clients.admin(admin_settings)
            await admin.start()
            try:
                await admin.create_topics([
                    NewTopic(t["spec"].get("topicName", t["metadata"]["name"]), t["spec"]["partitions"],
                             t["spec"]["replicas"], topic_configs=t["spec"]["config"])
                    for t in resources if t["kind"] == "KafkaTopic"])
            finally:
                await admin.close()

        asyncio.run(create_topics())
        create_acls(broker.bootstrap, [u for u in resources if u["kind"] == "KafkaUser"])
        yield options, resources, users, broker
    finally:
        broker.stop()


def role_settings(options: RenderOptions, users: dict[str, str], role: str) -> Settings:
    user = options.user_name(role)
    return options.settings.replace(
        broker_url=f"kafka://{options.bootstrap_servers}",
        security=KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username=user,
                               sasl_password=users[user]))


def worker_settings(resources: list[dict[str, Any]], users: dict[str, str], tmp: Path) -> Settings:
    """The settings the StatefulSet's environment gives a pod (``<name>-0``), with the Secret's
    password file and a local data directory and port."""
    statefulset = next(r for r in resources if r["kind"] == "StatefulSet")
    env = {e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    env["STREAMSAFE_INSTANCE_ID"] = f"{statefulset['metadata']['name']}-0"
    password = tmp / "password"
    password.write_text(users[env["STREAMSAFE_SASL_USERNAME"]])
    env["STREAMSAFE_SASL_PASSWORD_FILE"] = str(password)
    env["STREAMSAFE_DATA_DIR"] = str(tmp / "data")
    env["STREAMSAFE_HTTP_HOST"] = "127.0.0.1"
    env["STREAMSAFE_HTTP_PORT"] = str(free_port())
    return Settings.from_env(env)


async def read_actions(settings: Settings, group: str, stream: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    consumer = clients.consumer(settings, settings.topic_name(ACTIONS), group_id=group)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            found = [orjson.loads(m.value) for ms in batch.values() for m in ms]
            found = [d for d in found if d["stream_id"] == stream]
        await consumer.commit()  # the group's own offsets: Read on a group named after the user
        return found
    finally:
        await stop_consumer(consumer)


async def test_a_worker_decides_with_only_the_rendered_permissions(secured, tmp_path):
    options, resources, users, _ = secured
    settings = worker_settings(resources, users, tmp_path)
    assert (settings.create_topics, settings.security.sasl_username) == (False, options.user_name("worker"))
    hashes = tmp_path / "ncmec.txt"
    hashes.write_text(f"md5:{KNOWN_MD5}\n")
    worker = spawn_worker(settings.replace(hash_list=hashes), tmp_path / "worker.log")
    try:
        worker.wait_ready(timeout_s=120)
        platform = clients.producer(role_settings(options, users, "platform"))
        await platform.start()
        try:
            await platform.send_and_wait(settings.topic_name(FRAME_HASHES),
                                         orjson.dumps(frames("acl-1", {"md5": KNOWN_MD5})), key=b"acl-1")
        finally:
            await platform.stop()
        enforcement = role_settings(options, users, "enforcement")
        decisions = await read_actions(enforcement, f"{options.user_name('enforcement')}-actions", "acl-1")
        assert [d["action"] for d in decisions if d["action"] == "block"] == ["block"]
        assert "not authorized" not in worker.log().lower()
    finally:
        worker.stop()

    # KEDA's user reads the worker group's offsets and the topics' ends, nothing else
    scaler = clients.admin(role_settings(options, users, "scaler"))
    await scaler.start()
    try:
        offsets = await scaler.list_consumer_group_offsets(settings.app_id)
        assert settings.topic_name(FRAME_HASHES) not in {tp.topic for tp in offsets}  # frames: the pre-filter's
        assert offsets  # metadata, signals, the pre-filter's matches …
    finally:
        await scaler.close()


async def test_roles_stay_inside_their_grants(secured):
    options, _, users, _ = secured
    prefix = options.settings.topic_prefix
    platform = role_settings(options, users, "platform")
    with pytest.raises(TopicAuthorizationFailedError):  # the platform reads no decisions
        await read_actions(platform, f"{options.user_name('platform')}-x", "acl-1", timeout_s=10)
    enforcement = clients.producer(role_settings(options, users, "enforcement"))
    await enforcement.start()
    try:
        with pytest.raises(KafkaError):  # enforcement forges no frames
            await asyncio.wait_for(enforcement.send_and_wait(f"{prefix}{FRAME_HASHES}", b"{}", key=b"x"), 30)
    finally:
        await enforcement.stop()
    reviewer = role_settings(options, users, "reviewer-tool")
    with pytest.raises(TopicAuthorizationFailedError):  # reports are the reporting team's alone
        consumer = clients.consumer(reviewer, f"{prefix}enforcement.reports")
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=5000)
            await consumer.getmany(timeout_ms=5000)
        finally:
            await stop_consumer(consumer)
