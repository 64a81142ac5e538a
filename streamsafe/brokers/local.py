"""Start a local broker by kind: ``kafka`` (Apache Kafka, KRaft) or ``tansu`` (embedded)."""

from __future__ import annotations

from pathlib import Path

from streamsafe.brokers.base import BrokerProcess
from streamsafe.errors import BrokerError

__all__ = ["BROKER_KINDS", "start_broker"]

BROKER_KINDS = ("kafka", "tansu")


def start_broker(kind: str, data_dir: Path | None = None) -> BrokerProcess:
    if kind == "kafka":
        from streamsafe.brokers.kafka import start_kafka

        return start_kafka(data_dir)
    if kind == "tansu":
        from streamsafe.brokers.tansu import start_tansu

        return start_tansu(data_dir)
    raise BrokerError(f"unknown broker kind {kind!r}; choose one of {BROKER_KINDS}")
