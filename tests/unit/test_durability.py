"""Durability from the contract: every topic names its production replication factor and
min ISR; settings override them for development; nonsense is refused when read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamsafe.app import changelog_topics
from streamsafe.brokers.topics import topic_durability
from streamsafe.errors import ConfigError, ContractError
from streamsafe.events.contract import contract_dir, load_contract
from streamsafe.settings import Settings
from streamsafe.transport.producer import Producer, produce_idempotently


def test_every_contract_topic_and_changelog_is_durable_by_default():
    contract = load_contract()
    specs = [*contract.values(), *changelog_topics(Settings(), contract).values()]
    for spec in specs:
        replicas, config = topic_durability(spec, Settings())
        assert (replicas, config["min.insync.replicas"]) == (3, "2"), spec.name
        assert {k: v for k, v in config.items() if k != "min.insync.replicas"} == {
            k: v for k, v in spec.config.items() if k != "min.insync.replicas"}  # the rest as the contract says


@pytest.mark.parametrize(("replication", "min_insync", "expected"), [
    (1, None, (1, "1")),   # one development broker
    (2, None, (2, "1")),   # one replica may be down
    (5, None, (5, "2")),   # the contract's 2 when more replicas allow it
    (3, 3, (3, "3")),
    (None, 1, (3, "1")),
])
def test_settings_override_the_contract(replication, min_insync, expected):
    spec = load_contract()["enforcement.actions"]
    settings = Settings(replication_factor=replication, min_insync_replicas=min_insync)
    replicas, config = topic_durability(spec, settings)
    assert (replicas, config["min.insync.replicas"]) == expected


def test_min_isr_above_the_replication_factor_is_refused():
    with pytest.raises(ConfigError, match="cannot exceed"):
        Settings(replication_factor=1, min_insync_replicas=2)
    with pytest.raises(ConfigError, match="exceeds replication factor"):
        topic_durability(load_contract()["enforcement.actions"], Settings(min_insync_replicas=4))
    with pytest.raises(ConfigError, match="at least 1"):
        Settings(replication_factor=0)
    with pytest.raises(ConfigError, match="auto, true or false"):
        Settings(idempotent_producer="maybe")


@pytest.mark.parametrize(("change", "message"), [
    ({"replication_factor": 0}, "replication_factor must be a positive integer"),
    ({"replication_factor": "3"}, "replication_factor must be a positive integer"),
    ({"config": {"min.insync.replicas": "4"}}, "min.insync.replicas must be 1..replication_factor"),
    ({"config": {"min.insync.replicas": "two"}}, "min.insync.replicas must be 1..replication_factor"),
])
def test_a_topic_file_with_impossible_durability_is_refused(tmp_path: Path, change, message):
    for source in contract_dir().glob("*.json"):
        (tmp_path / source.name).write_text(source.read_text())
    path = tmp_path / "enforcement.actions.json"
    raw = json.loads(path.read_text())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(raw))
    with pytest.raises(ContractError, match=message):
        load_contract(tmp_path)


def test_a_topic_file_without_a_replication_factor_is_refused(tmp_path: Path):
    for source in contract_dir().glob("*.json"):
        (tmp_path / source.name).write_text(source.read_text())
    path = tmp_path / "enforcement.actions.json"
    raw = json.loads(path.read_text())
    del raw["replication_factor"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ContractError, match="replication_factor"):
        load_contract(tmp_path)


def test_fausts_producer_is_idempotent_when_the_worker_says_so():
    class App:
        in_transaction = False

    class Bare(Producer):
        def __init__(self, app):  # only what _settings_extra reads
            self.app = app

    app = App()
    assert "enable_idempotence" not in Bare(app)._settings_extra()
    produce_idempotently(app, True)
    assert Bare(app)._settings_extra()["enable_idempotence"] is True
    produce_idempotently(app, False)
    assert "enable_idempotence" not in Bare(app)._settings_extra()


def test_the_workers_faust_producer_sends_with_acks_all(tmp_path):
    """Decisions, escalations, reports and table changelogs go out through Faust's producer."""
    from streamsafe.app import create_app

    app = create_app(Settings(data_dir=tmp_path, http_port=0, replication_factor=1))
    assert app.conf.producer_acks == -1
    assert app.producer.acks == -1
    assert app.producer._settings_default()["acks"] == -1
