"""Run a coroutine's first step now; continue it as a task only if it suspended.

The primitive under the fast delivery path (:mod:`streamsafe.transport.consumer`):
most deliveries finish without suspending, and then no task is created at all.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Coroutine, Generator
from types import CodeType, FrameType
from typing import Any, TypeVar, cast

__all__ = ["eager_start"]

_T = TypeVar("_T")


class _Resumed(Coroutine[Any, Any, _T]):
    """A coroutine that continues ``coro``, which was already stepped once.

    ``coro.send(None)`` returned ``pending``: what ``coro`` yielded to its
    driver (a Future with ``_asyncio_future_blocking`` set, or ``None`` for a
    bare yield such as ``asyncio.sleep(0)``). A Task driving this object gets
    ``pending`` from its first ``send`` and from then on talks to ``coro``
    directly, so the Task applies exactly the protocol it would have applied
    had it run ``coro`` from the start: it waits for the future, resumes with
    ``send(None)``, delivers cancellation with ``throw``.

    A hand-written class rather than a generator because a Task accepts any
    ``collections.abc.Coroutine`` on every Python version, whereas
    generator-based coroutines stopped being accepted in 3.12; and it adds no
    frame of its own to the continued coroutine.
    """

    __slots__ = ("_coro", "_pending", "_pending_cancelled", "_primed")

    def __init__(self, coro: Coroutine[Any, Any, _T], pending: Any) -> None:
        self._coro = coro
        self._pending = pending
        self._primed = True  # ``pending`` not yet handed to the driver
        self._pending_cancelled = False

    def send(self, value: Any) -> Any:
        if self._primed:
            self._primed = False
            pending, self._pending = self._pending, None
            if pending is not None:
                # The Task's first step: give it the future the coroutine
                # waits on, which it yielded in the step we already ran.
                return pending
            # A bare yield (asyncio.sleep(0)) asked for one loop iteration;
            # this first step of the Task is that iteration: resume now.
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._primed:
            # Cancelled before the Task's first step. A task waiting on a
            # future is cancelled by cancelling that future (a child task, a
            # lock waiter, ...) and then waiting for it: hand the cancelled
            # future over now, so the coroutine sees the cancellation, or a
            # child's result if the child ignores it, as it would have.
            self._primed = False
            pending, self._pending = self._pending, None
            exc = typ if val is None else val
            if isinstance(exc, asyncio.CancelledError) and (
                self._pending_cancelled or self._cancel(pending, exc.args[0] if exc.args else None)
            ):
                return pending
            # Nothing was cancelled (a bare yield, or the future is done): a
            # Task throws the cancellation in at its next step, i.e. now.
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def cancel_pending(self, msg: Any = None) -> None:
        """Called by :class:`_HandoffTask` ``.cancel()``: what ``Task.cancel`` does to
        the future a waiting task waits on, before the Task has seen that future."""
        if self._primed and not self._pending_cancelled:
            self._pending_cancelled = self._cancel(self._pending, msg)

    @staticmethod
    def _cancel(pending: Any, msg: Any) -> bool:
        if not getattr(pending, "_asyncio_future_blocking", False):
            return False  # None (bare yield) or not a future
        return bool(pending.cancel(msg=msg))

    def close(self) -> None:
        self._pending = None
        self._coro.close()

    def __await__(self) -> Generator[Any, None, _T]:
        return self

    def __iter__(self) -> _Resumed[_T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    # Introspection goes to the real coroutine, so Task reprs, Task.get_stack()
    # and mode's blocking detector show where delivery actually waits.
    @property
    def __name__(self) -> str:
        return cast(str, getattr(self._coro, "__qualname__", type(self._coro).__qualname__))

    @property
    def cr_code(self) -> CodeType | None:
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_frame(self) -> FrameType | None:
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coro, "cr_running", False))

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)

    def __repr__(self) -> str:
        return f"<resumed {self._coro!r}>"


class _HandoffTask(asyncio.Task):  # type: ignore[type-arg]
    """The task that continues a :class:`_Resumed` coroutine.

    ``Task.cancel()`` on a waiting task cancels the future it waits on *at
    once*; a fresh task does not know that future until its first step, one
    loop iteration later, during which e.g. a child task would keep running.
    This override closes that window; nothing else differs from ``asyncio.Task``.
    """

    def cancel(self, msg: Any = None) -> bool:
        coro = self.get_coro()
        if isinstance(coro, _Resumed) and not self.done():
            coro.cancel_pending(msg)
        return super().cancel(msg)


def eager_start(
    coro: Awaitable[_T],
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    context: contextvars.Context | None = None,
) -> asyncio.Future[_T] | None:
    """Run ``coro`` up to its first suspension; ``None`` if it finished there.

    * finished without suspending: returns ``None``; no task, no loop round trip
      (its return value is dropped: the drain loop never uses it);
    * raised without suspending: the exception propagates to the caller, as
      awaiting it would have raised it;
    * suspended: returns a Task (on ``loop``, default the running loop) that
      continues it from that point, to be awaited, raced or cancelled like the
      task ``asyncio.ensure_future(coro)`` would have been once it had reached
      the same point;
    * not a coroutine at all (no ``send``): returns ``asyncio.ensure_future(coro)``.

    The step runs in ``context`` (default: a copy of the current context) and
    the task continues in the same context, so context variables set by the
    coroutine neither leak into the caller nor get lost across the hand-off,
    as with a task created for it.

    Unlike a task, the first step runs with the *caller's* task as
    ``asyncio.current_task()``. Do not use this for coroutines that tie
    task-bound state (``asyncio.timeout()``, ``TaskGroup``, anyio cancel
    scopes) across their first suspension: it would point at the caller. The
    task is built directly, not through ``loop.create_task``, so a loop's
    custom task factory is not applied to it.
    """
    send = getattr(coro, "send", None)
    if send is None:
        # Not a coroutine (a Future, an object with __await__): nothing to
        # step; wrap it the way asyncio.ensure_future, and so wait_first, does.
        return asyncio.ensure_future(coro, loop=loop)
    ctx = contextvars.copy_context() if context is None else context
    try:
        pending = ctx.run(send, None)
    except StopIteration:
        return None
    if loop is None:
        loop = asyncio.get_running_loop()
    return _HandoffTask(_Resumed(cast(Coroutine[Any, Any, _T], coro), pending), loop=loop, context=ctx)
