"""One factory for every Kafka client: bootstrap and security applied once; the one
reach into aiokafka's client is guarded."""

from __future__ import annotations

from streamsafe import clients
from streamsafe.settings import KafkaSecurity, Settings


async def test_every_client_gets_bootstrap_and_security():
    settings = Settings(broker_url="kafka://b1:9093,b2:9093",
                        security=KafkaSecurity("SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                                               sasl_username="svc", sasl_password="pw"))
    producer = clients.producer(settings)
    quick = clients.producer(settings, acks=1)
    consumer = clients.consumer(settings, "t1", group_id="g")
    admin = clients.admin(settings)
    for client in (producer.client, consumer._client, admin._client):
        assert client._bootstrap_servers == "b1:9093,b2:9093"
        assert client._security_protocol == "SASL_PLAINTEXT" and client._sasl_mechanism == "SCRAM-SHA-512"
    assert producer._sender._acks == -1 and quick._sender._acks == 1  # acks=all unless overridden


async def test_refresh_metadata_degrades_to_a_warning_without_aiokafkas_private_call(caplog):
    class Bare:
        pass

    await clients.refresh_metadata(Bare())  # must not raise
    assert "periodic metadata refresh" in caplog.text

    calls = []

    class Inner:
        async def force_metadata_update(self):
            calls.append(1)

    class Consumer:
        _client = Inner()

    await clients.refresh_metadata(Consumer())
    assert calls == [1]


async def test_producers_are_idempotent_only_when_settled_true_and_with_acks_all():
    def idempotent(producer) -> bool:
        return producer._txn_manager is not None  # aiokafka keeps idempotence state here

    made = {value: clients.producer(Settings(idempotent_producer=value)) for value in ("auto", "true", "false")}
    assert {v: idempotent(p) for v, p in made.items()} == {"auto": False, "true": True, "false": False}
    assert all(p._sender._acks == -1 for p in made.values())
    fewer_acks = clients.producer(Settings(idempotent_producer="true"), acks=1)
    assert not idempotent(fewer_acks) and fewer_acks._sender._acks == 1
    for producer in (*made.values(), fewer_acks):
        await producer.stop()


async def test_resolving_idempotence_keeps_an_explicit_choice_without_asking_a_broker():
    for value in ("true", "false"):  # no broker at this address: a probe would fail
        settings = Settings(broker_url="kafka://127.0.0.1:1", idempotent_producer=value)
        assert await clients.resolve_idempotence(settings) is settings


def test_no_module_opens_a_kafka_client_but_the_factory():
    """Every client gets the security settings: none is constructed outside clients.py (Faust's
    own take them from app.faust_credentials; the development broker's ACL admin talks to its
    loopback super-user listener)."""
    import ast
    from pathlib import Path

    import streamsafe

    constructors = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AdminClient", "Producer",
                    "Consumer"}
    allowed = {"clients.py", "brokers/secure.py"}
    root = Path(streamsafe.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        name = path.relative_to(root).as_posix()
        if name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in constructors:
                    found.append(f"{name}:{node.lineno} {called}(...)")
    assert found == []
