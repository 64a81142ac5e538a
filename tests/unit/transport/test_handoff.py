"""The hand-off helper: a delivery that never blocks creates no task; one that blocks
continues, as a task, exactly as a task made for it from the start would have."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from mode import Service

from streamsafe.transport.handoff import eager_start

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def _noop() -> None:
    """An await that does not suspend (like an uncontended lock or a decode)."""


def _tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks()


async def test_never_blocks_runs_to_completion_without_a_task() -> None:
    seen: list[int] = []

    async def deliver(n: int) -> int:
        await _noop()
        lock = asyncio.Lock()
        async with lock:  # uncontended: no suspension
            seen.append(n)
        return n

    before = _tasks()
    assert eager_start(deliver(7)) is None
    assert seen == [7]  # ran synchronously, before any loop iteration
    assert _tasks() == before


async def test_blocks_then_resumes_with_the_awaited_result() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    trace: list[str] = []

    async def deliver() -> int:
        trace.append("start")
        value = await fut
        trace.append(f"got {value}")
        await asyncio.sleep(0)  # a bare yield after the hand-off
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(1)
        loop.call_soon(queue.get_nowait)
        await queue.put(2)  # blocks until the get above makes room
        trace.append("end")
        return value + 1

    task = eager_start(deliver())
    assert isinstance(task, asyncio.Task)
    assert trace == ["start"]
    await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(41)
    assert await task == 42
    assert trace == ["start", "got 41", "end"]


async def test_blocks_on_a_bare_yield_first() -> None:
    async def deliver() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "done"

    task = eager_start(deliver())
    assert task is not None
    assert await task == "done"


async def test_future_exception_reaches_the_coroutine() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def deliver() -> str:
        try:
            await fut
        except KeyError as exc:
            return f"handled {exc}"
        return "not raised"

    task = eager_start(deliver())
    assert task is not None
    fut.set_exception(KeyError("k"))
    assert await task == "handled 'k'"


async def test_raises_synchronously_propagates_and_creates_no_task() -> None:
    async def deliver() -> None:
        await _noop()
        raise ValueError("bad message")

    before = _tasks()
    with pytest.raises(ValueError, match="bad message"):
        eager_start(deliver())
    assert _tasks() == before


async def test_cancelled_error_raised_synchronously_propagates() -> None:
    async def deliver() -> None:
        raise asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        eager_start(deliver())


async def test_raises_after_blocking_fails_the_task() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver() -> None:
        await fut
        raise ValueError("late")

    task = eager_start(deliver())
    assert task is not None
    fut.set_result(None)
    with pytest.raises(ValueError, match="late"):
        await task


async def test_cancelled_while_blocked_unwinds_the_coroutine() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    trace: list[str] = []

    async def deliver() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            trace.append("cancelled")
            raise
        finally:
            trace.append("finally")

    task = eager_start(deliver())
    assert task is not None
    await asyncio.sleep(0)  # the task has taken over and waits on fut
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert trace == ["cancelled", "finally"]
    assert fut.cancelled()  # Task.cancel cancels what the task waits on


async def test_cancelled_before_the_task_ever_ran() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    trace: list[str] = []

    async def deliver() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            trace.append("cancelled")
            raise

    task = eager_start(deliver())
    assert task is not None
    task.cancel()  # before its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace == ["cancelled"]
    assert fut.cancelled()


async def test_coroutine_may_swallow_cancellation_and_continue() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver() -> str:
        try:
            await fut
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # keeps going after a cancellation
            return "recovered"
        return "unexpected"

    task = eager_start(deliver())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "recovered"


async def test_context_is_kept_across_the_hand_off_and_not_leaked() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver() -> str:
        VAR.set("delivery")
        await fut
        return VAR.get()

    VAR.set("caller")
    task = eager_start(deliver())
    assert VAR.get() == "caller"  # the first step ran in a copy
    assert task is not None
    fut.set_result(None)
    assert await task == "delivery"  # ... and the task continued in that copy


async def test_never_blocking_delivery_does_not_leak_context() -> None:
    async def deliver() -> None:
        VAR.set("delivery")

    VAR.set("caller")
    assert eager_start(deliver()) is None
    assert VAR.get() == "caller"


async def test_task_repr_points_at_the_real_coroutine() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver_somewhere() -> None:
        await fut

    task = eager_start(deliver_somewhere())
    assert isinstance(task, asyncio.Task)
    await asyncio.sleep(0)
    assert "deliver_somewhere" in repr(task)
    assert task.get_stack()[0].f_code.co_name == "deliver_somewhere"
    fut.set_result(None)
    await task


# -- the rebalance race: exactly the stock wait_first(..., suspend_flow.wait()) ------


class _Svc(Service):
    async def on_start(self) -> None:  # pragma: no cover - never started
        pass


async def test_wait_first_rebalance_interrupts_a_blocked_delivery() -> None:
    svc = _Svc()
    suspend_flow = asyncio.Event()
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    trace: list[str] = []

    async def deliver() -> None:
        try:
            await fut
            trace.append("delivered")
        except asyncio.CancelledError:
            trace.append("interrupted")
            raise

    task = eager_start(deliver())
    assert task is not None
    asyncio.get_running_loop().call_later(0.01, suspend_flow.set)
    results = await svc.wait_first(task, suspend_flow.wait())
    assert results.done == [suspend_flow.wait] or not results.stopped
    await asyncio.sleep(0)  # let the cancellation from wait_first land
    assert trace == ["interrupted"]
    assert task.cancelled()


async def test_wait_first_blocked_delivery_completes_first() -> None:
    svc = _Svc()
    suspend_flow = asyncio.Event()
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver() -> str:
        await fut
        return "delivered"

    task = eager_start(deliver())
    assert task is not None
    asyncio.get_running_loop().call_soon(fut.set_result, None)
    results = await svc.wait_first(task, suspend_flow.wait())
    assert results.results == ["delivered"]
    assert not results.stopped


# -- differential: eager_start then a task == a task from the start ------------------

Scenario = Callable[[list[str], "asyncio.Future[Any]"], Coroutine[Any, Any, Any]]


async def _child_ignores_cancel(trace: list[str], gate: asyncio.Future[Any]) -> Any:
    async def child() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            trace.append("child ignored cancel")
        return "child result"

    trace.append("start")
    result = await asyncio.ensure_future(child())
    trace.append(f"parent got {result}")
    return result


async def _child_obeys_cancel(trace: list[str], gate: asyncio.Future[Any]) -> Any:
    async def child() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            trace.append("child cancelled")
            raise
        return "child result"

    trace.append("start")
    try:
        return await asyncio.ensure_future(child())
    except asyncio.CancelledError:
        trace.append("parent cancelled")
        raise


async def _bare_yield(trace: list[str], gate: asyncio.Future[Any]) -> Any:
    trace.append("start")
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        trace.append("cancelled at sleep(0)")
        raise
    trace.append("end")


async def _outcome(task: asyncio.Task[Any], trace: list[str]) -> list[str]:
    try:
        trace.append(f"result {await task!r}")
    except asyncio.CancelledError:
        trace.append("task cancelled")
    return trace


@pytest.mark.parametrize("scenario", [_child_ignores_cancel, _child_obeys_cancel, _bare_yield])
@pytest.mark.parametrize("steps", [0, 1, 2])
@pytest.mark.parametrize("cancel", [True, False])
async def test_same_observable_behaviour_as_a_plain_task(
    scenario: Scenario, steps: int, cancel: bool
) -> None:
    """eager_start after ``steps`` loop iterations == a plain task after ``steps + 1``:
    the eager path ran the first step synchronously, a plain task needs one
    iteration for it. Then both are cancelled (or not) and must behave alike."""
    loop = asyncio.get_running_loop()

    async def run(start: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]], steps: int) -> list[str]:
        trace: list[str] = []
        gate: asyncio.Future[Any] = loop.create_future()
        task = start(scenario(trace, gate))
        for _ in range(steps):
            await asyncio.sleep(0)
        if cancel:
            task.cancel()
        def open_gate() -> None:
            if not gate.done():
                gate.set_result("gate")

        loop.call_later(0.005, open_gate)
        return await _outcome(task, trace)

    def eager(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = eager_start(coro)
        assert isinstance(task, asyncio.Task)  # every scenario suspends
        return task

    expected = await run(asyncio.ensure_future, steps + 1)
    assert await run(eager, steps) == expected


async def test_resumed_coroutine_can_be_awaited_directly() -> None:
    from streamsafe.transport.handoff import _Resumed

    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def deliver() -> int:
        return (await fut) * 2

    coro = deliver()
    pending = coro.send(None)
    assert pending is fut
    resumed: Awaitable[int] = _Resumed(coro, pending)
    asyncio.get_running_loop().call_soon(fut.set_result, 21)
    assert await resumed == 42


async def test_an_awaitable_that_is_not_a_coroutine_is_wrapped_like_ensure_future() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    assert eager_start(fut) is fut  # what asyncio.ensure_future(fut) returns
    fut.set_result(1)
