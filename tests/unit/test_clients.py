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
