"""The pin on Faust, the faithfulness of the copied drain loop, and transport lookup."""

from __future__ import annotations

import inspect
import re
from importlib import metadata

import faust
import pytest
from faust.transport import by_url
from faust.transport import consumer as stock_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver

import streamsafe.transport as st
import streamsafe.transport.pin as pin


def test_pin_holds_for_the_installed_faust() -> None:
    st.check_faust_pin()


def test_pin_rejects_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(
        pin.metadata, "version", lambda name: "0.15.4" if name == "faust-streaming" else real(name)
    )
    with pytest.raises(st.FaustPinError, match=r"faust-streaming is 0\.15\.4"):
        st.check_faust_pin()


def test_pin_rejects_a_changed_drain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def changed(self: object, fetcher: object) -> None:  # pragma: no cover
        pass

    monkeypatch.setattr(stock_consumer.Consumer, "_drain_messages", changed)
    with pytest.raises(st.FaustPinError, match="source sha256"):
        st.check_faust_pin()


def test_pin_rejects_a_driver_override(monkeypatch: pytest.MonkeyPatch) -> None:
    async def override(self: object, fetcher: object) -> None:  # pragma: no cover
        pass

    monkeypatch.setattr(aiokafka_driver.Consumer, "_drain_messages", override, raising=False)
    with pytest.raises(st.FaustPinError, match="overrides _drain_messages"):
        st.check_faust_pin()


def _statements(source: str) -> list[str]:
    lines = []
    for line in source.splitlines():
        code = line.split("#", 1)[0].rstrip() if not line.strip().startswith('"') else line
        if code.strip():
            lines.append(code)
    return lines


def test_copied_drain_loop_differs_only_in_the_delivery_statement() -> None:
    stock = _statements(inspect.getsource(stock_consumer.Consumer._drain_messages))
    ours_src = inspect.getsource(st.Consumer._drain_messages)
    # drop our fast-path block and the locals it added
    ours_src = re.sub(r"\n\s*# ---- fast path.*?# ---- end of fast path ----", "\n<DELIVER>", ours_src,
                      flags=re.S)
    ours_src = re.sub(r"\n\s*# fast path: localized.*?\n\n", "\n\n", ours_src, flags=re.S)
    ours = _statements(ours_src.replace("_stock_consumer.CONSUMER_FETCHING", "CONSUMER_FETCHING"))
    i = stock.index("                            await self.wait_first(")
    assert stock[i + 1].strip() == "callback(message), self.suspend_flow.wait()"
    assert stock[i + 2].strip() == ")"
    stock[i : i + 3] = ["<DELIVER>"]
    assert [s.strip() for s in ours] == [s.strip() for s in stock]


def test_scheme_resolves_to_the_transport() -> None:
    st.register()
    assert by_url("streamsafe://127.0.0.1:9092") is st.Transport
    app = faust.App("pin-test", broker="streamsafe://127.0.0.1:9092", web_enabled=False)
    assert isinstance(app.transport, st.Transport)
    assert app.transport.Consumer is st.Consumer
    assert issubclass(st.Consumer, aiokafka_driver.Consumer)


def test_pin_fails_loudly_without_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_source(obj: object) -> str:
        raise OSError("could not get source code")

    monkeypatch.setattr(pin.inspect, "getsource", no_source)
    with pytest.raises(st.FaustPinError, match="unavailable"):
        st.check_faust_pin()
