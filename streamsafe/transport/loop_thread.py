"""An event loop on a thread of its own, for a Kafka client the worker's busy loop would hold up.

The worker decides on one event loop, beside its agents and the pre-filter's slices. A Kafka
client on that loop needs several of its turns per request (the request written, the
response read, the waiter woken), and each turn waits behind whatever else is ready. The
pre-filter's consumer (:mod:`streamsafe.agents.fetch_thread`) and the publisher's producer
(:mod:`streamsafe.transport.send_thread`) therefore run on a :class:`LoopThread`: the client
is made and started on the thread's loop (aiokafka binds the loop it is made on), and the
worker's loop hands calls over and awaits their results.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

_T = TypeVar("_T")


class LoopThread:
    """An asyncio event loop running on a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None  # the thread's
        self._thread: threading.Thread | None = None

    async def start(self, opening: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start the thread and run ``opening()`` on its loop; if that raises, the thread ends and
        the error is raised here."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(opening, started), name=self.name, daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            await asyncio.to_thread(self._thread.join, 10.0)
            raise

    def _run(self, opening: Callable[[], Coroutine[Any, Any, None]],
             started: concurrent.futures.Future[None]) -> None:
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(opening())
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def is_alive(self) -> bool:
        """Whether the thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> bool:
        """Run ``callback(*args)`` on the thread's loop soon (False: the loop is closed)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed meanwhile
            return False
        return True

    def submit(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Future[_T] | None:
        """``coro`` run on the thread's loop, as a future of the caller's loop (``None``, and
        ``coro`` closed, once the thread's loop is closed)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            return None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def stop(self, closing: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``closing`` on the thread's loop, then stop the loop and join the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            if closing is not None:
                closing.close()
            return
        if closing is not None:
            done = self.submit(closing)
            if done is not None:
                await done
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10.0)
