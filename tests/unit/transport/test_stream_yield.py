"""Agents give the event loop back by time: several events in one loop turn while the budget
lasts, one turn per event once it is spent (a fake clock: no timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import faust
import pytest

import streamsafe.transport as st
from streamsafe.transport import stream_yield
from tests.loop_support import LoopTurns, StepClock

pytestmark = pytest.mark.skipif(stream_yield._compiled_streams is None,
                                reason="Faust's compiled stream iterator is not installed")


@pytest.fixture(autouse=True)
def stock_sleep_around() -> Iterator[None]:
    installed = stream_yield.installed_stream_yield()  # a fast-transport app built by an earlier test
    stream_yield.uninstall_stream_yield()
    yield
    stream_yield.uninstall_stream_yield()
    if installed is not None:
        stream_yield.install_stream_yield(installed.budget_s, installed.clock)


async def turns_per_event(events: int) -> list[int]:
    """Stream ``events`` values through a real Faust stream; for each, the loop turn it was
    handled in (a task beside it counts turns)."""
    app = faust.App("yield-test", broker="streamsafe-stock://127.0.0.1:9", web_enabled=False)
    app.flow_control.resume()  # as a running worker's is: a put waits while flow is suspended
    stream = app.stream(app.channel())
    for i in range(events):
        await stream.channel.put(i)  # the stream's own (cloned) channel
    seen: list[int] = []
    async with LoopTurns() as turns:
        async for _ in stream:
            seen.append(turns.count)
            if len(seen) == events:
                break
    return seen


async def test_faust_stock_iterator_takes_one_event_per_loop_turn() -> None:
    seen = await turns_per_event(5)
    assert len(set(seen)) == 5  # the baseline the budget changes


async def test_an_agent_handles_queued_events_in_one_turn_while_its_budget_lasts() -> None:
    installed = stream_yield.install_stream_yield(budget_s=0.004, clock=StepClock(0.0001))
    assert installed is not None and stream_yield.installed_stream_yield() is installed
    seen = await turns_per_event(5)
    assert len(set(seen)) == 1
    assert installed.yields == 1  # the first event, before any slice had started


async def test_an_agent_gives_the_loop_back_once_its_budget_is_spent() -> None:
    installed = stream_yield.install_stream_yield(budget_s=0.004, clock=StepClock(0.004))
    seen = await turns_per_event(5)
    assert len(set(seen)) == 5
    assert installed is not None and installed.yields == 5


async def test_a_real_delay_still_sleeps() -> None:
    installed = stream_yield.StreamYield(budget_s=10.0, clock=StepClock(0.0))
    assert await installed(0.001, "done") == "done"


def test_the_fast_transport_installs_it_and_the_stock_one_does_not() -> None:
    st.register()
    stream_yield.uninstall_stream_yield()
    faust.App("stock", broker="streamsafe-stock://127.0.0.1:9", web_enabled=False).transport  # noqa: B018
    assert stream_yield.installed_stream_yield() is None
    faust.App("fast", broker="streamsafe://127.0.0.1:9", web_enabled=False).transport  # noqa: B018
    installed: Any = stream_yield.installed_stream_yield()
    assert installed is not None and installed.budget_s == st.stream_yield.BATCH_BUDGET_S


def test_an_iterator_that_no_longer_awaits_asyncio_sleep_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_yield._compiled_streams, "sleep", lambda *_: None)
    with pytest.raises(RuntimeError, match=r"no longer awaits asyncio\.sleep"):
        stream_yield.install_stream_yield()


class FakeFrames:
    """The pre-filter as agents see it: a batch in hand screened after ``turns`` loop turns
    (``None``: never, as when an agent's wait runs out)."""

    def __init__(self, turns: int | None) -> None:
        self.batches = 1
        self.turns = turns
        self.in_hand = True
        self.fetched = False  # a batch fetched and not yet taken in hand
        self.waits = 0
        self.done_at_turn: int | None = None

    def screening(self) -> bool:
        return self.in_hand

    def waiting(self) -> bool:
        return self.fetched

    async def until_screened(self, at_most_s: float) -> None:
        self.waits += 1
        if self.turns is None:
            return  # the wait ran out: the batch is still in hand
        for _ in range(self.turns):
            await asyncio.sleep(0)
        self.in_hand = False


async def test_an_agent_waits_for_the_frames_batch_in_hand_then_takes_its_events_by_its_budget() -> None:
    installed = stream_yield.install_stream_yield(budget_s=0.004, clock=StepClock(0.0001))
    frames = FakeFrames(turns=7)
    stream_yield.defer_agents_to(frames)
    try:
        seen = await turns_per_event(5)
    finally:
        stream_yield.defer_agents_to(None)
    assert frames.waits == 1 and not frames.in_hand
    assert seen[0] >= 7  # no event before the batch was screened
    assert len(set(seen)) == 1  # then all in the turn the batch ended in: the budget again
    assert installed is not None and installed.yields == 1


async def test_an_agent_that_waited_its_while_takes_one_event_per_turn_until_the_batch_is_done() -> None:
    installed = stream_yield.install_stream_yield(budget_s=0.004, clock=StepClock(0.0001))
    assert installed is not None
    frames = FakeFrames(turns=None)
    stream_yield.defer_agents_to(frames)
    try:
        seen = await turns_per_event(5)
        assert frames.waits == 1 and installed.yields == 5  # waited once for this batch, then turn by turn
        assert len(set(seen)) == 5  # then one event per turn, as stock Faust's agents take them
        frames.batches += 1  # the next batch: waited for again
        await turns_per_event(2)
        assert frames.waits == 2
        frames.in_hand = False
        assert len(set(await turns_per_event(5))) == 1  # no batch in hand: the budget again
    finally:
        stream_yield.defer_agents_to(None)


async def test_an_agent_gives_the_loop_back_at_once_while_fetched_frames_wait_to_be_taken() -> None:
    installed = stream_yield.install_stream_yield(budget_s=0.004, clock=StepClock(0.0001))
    assert installed is not None
    frames = FakeFrames(turns=None)
    frames.in_hand, frames.fetched = False, True  # handed over by the fetch thread, not yet taken
    stream_yield.defer_agents_to(frames)
    try:
        assert len(set(await turns_per_event(5))) == 5  # within its budget, yet one event per turn
        assert frames.waits == 0  # no batch in hand to wait for
        frames.fetched = False
        assert len(set(await turns_per_event(5))) == 1  # taken: the budget again
    finally:
        stream_yield.defer_agents_to(None)
