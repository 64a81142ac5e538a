"""StreamSafe's Faust transport: the aiokafka driver with a task-free delivery path.

Why this exists
---------------
For every message it fetches, stock Faust (``faust.transport.consumer.Consumer.
_drain_messages``, faust-streaming 0.15.3) does::

    await self.wait_first(callback(message), self.suspend_flow.wait())

``Service.wait_first`` wraps each argument *and* the service's ``stopped`` and
``crashed`` events in ``asyncio.ensure_future`` and awaits ``asyncio.wait`` on
them: four tasks, their done-callbacks and a loop round trip per message. Yet
in the common case the callback (``Conductor.on_message``: an uncontended lock,
decode, a put on a stream queue that has room) finishes without ever
suspending, so the race against ``suspend_flow`` is decided before it starts.
Removing it took 40-45% off Faust's CPU per event on this project's 2-core
machine (trivial agent 59 -> 36 µs, the real worker 123 -> 70 µs, asyncio loop).

So :class:`Consumer` runs the delivery coroutine's first step synchronously
(:func:`eager_start`). If it finishes there, no task is created. If it
suspends (in practice: the agent's stream buffer is full, i.e. back-pressure;
also flow control or the producer buffer), the *partially run* coroutine is
handed, as a task continuing exactly where it stopped, to the unchanged
``wait_first(..., suspend_flow.wait())`` race, so a rebalance interrupts a
blocked delivery exactly as in stock Faust. While flow is suspended the stock
statement is used verbatim.

Everything else is the stock aiokafka driver. The copied drain loop is tied to
one faust-streaming release: :func:`check_faust_pin` refuses to run it over
any other (it is called when the transport is built).

Simpler alternatives, and why not: handing the *started* coroutine to
``ensure_future`` breaks it (the Task resumes it with ``send(None)`` while it
still waits on a future: "await wasn't used with future"); an ``async def``
driver that awaits the yielded future, then calls ``send``/``throw``, works
but adds a frame and cannot tell its own cancellation from the future's;
Python 3.12's eager task factory is process-wide, and per-task eager start
(``Task(..., eager_start=True)``) needs 3.14 and still costs a Task per message.

Registration
------------
A package exposes the transport under a URL scheme through the
``faust.transports`` entry-point group, which Faust's transport registry
(``faust.transport.drivers.TRANSPORTS``) reads on first lookup::

    [project.entry-points."faust.transports"]
    streamsafe = "streamsafe.transport:Transport"

after which ``faust.App(..., broker="streamsafe://host:9092")`` selects it.
Without an installed entry point, :func:`register` does the same at run time.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator
from dataclasses import dataclass
from importlib import metadata
from types import CodeType, FrameType
from typing import Any, ClassVar, TypeVar, cast

from faust.transport import consumer as _stock_consumer
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as _aiokafka_driver
from mode import Service, ServiceT

__all__ = [
    "EXPECTED_DRAIN_SHA256",
    "EXPECTED_FAUST_VERSION",
    "SCHEME",
    "Consumer",
    "DeliveryStats",
    "FaustPinError",
    "Transport",
    "check_faust_pin",
    "drain_messages_sha256",
    "eager_start",
    "register",
]

_T = TypeVar("_T")

#: URL scheme that selects this transport (``streamsafe://host:port``).
SCHEME = "streamsafe"
#: The only faust-streaming release whose drain loop :class:`Consumer` copies.
EXPECTED_FAUST_VERSION = "0.15.3"
#: sha256 of ``inspect.getsource(faust.transport.consumer.Consumer._drain_messages)``
#: in faust-streaming 0.15.3 (the same on PyPI and in the project's venv).
EXPECTED_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


# --------------------------------------------------------------------------- #
# The hand-off: run a coroutine's first step now, continue it as a task if needed
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# The pin: the copied drain loop is only valid for the release it was copied from
# --------------------------------------------------------------------------- #


class FaustPinError(RuntimeError):
    """The installed Faust is not the one StreamSafe's drain loop was copied from."""


def drain_messages_sha256() -> str:
    """sha256 of the installed ``faust.transport.consumer.Consumer._drain_messages`` source."""
    source = inspect.getsource(_stock_consumer.Consumer._drain_messages)
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def check_faust_pin() -> None:
    """Raise :class:`FaustPinError` unless Faust is exactly the release the fast path copies.

    :meth:`Consumer._drain_messages` is a copy of Faust's, with one line
    changed; running it over a different Faust would silently drop whatever
    upstream changed there. Checked: the installed distribution version, the
    hash of the upstream method's source, and that the aiokafka driver still
    inherits that method (an override there would be shadowed by ours).
    """
    problems: list[str] = []
    try:
        version = metadata.version("faust-streaming")
    except metadata.PackageNotFoundError:
        version = "not installed"
    if version != EXPECTED_FAUST_VERSION:
        problems.append(f"faust-streaming is {version}, expected {EXPECTED_FAUST_VERSION}")
    try:
        digest = drain_messages_sha256()
    except (OSError, TypeError) as exc:  # e.g. a deployment that ships .pyc only
        digest = f"unavailable ({exc})"
    if digest != EXPECTED_DRAIN_SHA256:
        problems.append(
            f"faust.transport.consumer.Consumer._drain_messages source sha256 is {digest}, "
            f"expected {EXPECTED_DRAIN_SHA256}"
        )
    driver_drain = _aiokafka_driver.Consumer._drain_messages
    if driver_drain is not _stock_consumer.Consumer._drain_messages:
        problems.append("faust.transport.drivers.aiokafka.Consumer now overrides _drain_messages")
    if problems:
        raise FaustPinError(
            "StreamSafe's Faust transport copies Faust's message drain loop and is pinned to "
            f"faust-streaming {EXPECTED_FAUST_VERSION}: "
            + "; ".join(problems)
            + ". Re-read the new Consumer._drain_messages, port the change into "
            "streamsafe.transport.Consumer._drain_messages, then update the pin."
        )


# --------------------------------------------------------------------------- #
# The transport
# --------------------------------------------------------------------------- #


@dataclass
class DeliveryStats:
    """How deliveries went, per consumer (cheap counters; read them in tests and benchmarks)."""

    #: finished in the synchronous first step: no task at all
    eager: int = 0
    #: suspended in the first step and handed to the ``wait_first`` race
    handed_off: int = 0
    #: handed off, then interrupted (rebalance, stop) before it finished, as stock
    #: Faust interrupts a blocked delivery; the message is read again after the seek
    interrupted: int = 0
    #: flow was suspended (rebalance): the stock path was taken
    stock: int = 0


class Consumer(_aiokafka_driver.Consumer):
    """The aiokafka driver's consumer with a task-free delivery fast path."""

    stats: DeliveryStats

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = DeliveryStats()

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # A copy of faust-streaming 0.15.3 faust.transport.consumer.Consumer.
        # _drain_messages (pinned by check_faust_pin); only the delivery
        # statement is changed, between the "fast path" markers.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = _stock_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        # fast path: localized like the rest of this loop
        loop = self.loop
        suspend_flow = self.suspend_flow
        flow_suspended = suspend_flow.is_set
        stats = self.stats

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))  # type: ignore[type-arg]

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:  # noqa: SIM102 (verbatim upstream)
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # ---- fast path (the only change) ----
                            if flow_suspended():
                                # Rebalancing: exactly the stock statement.
                                stats.stock += 1
                                await self.wait_first(callback(message), suspend_flow.wait())
                            else:
                                blocked = eager_start(callback(message), loop=loop)
                                if blocked is None:
                                    stats.eager += 1
                                else:
                                    # Suspended mid-delivery: race it against a
                                    # rebalance as stock Faust races the whole
                                    # delivery (wait_first cancels the loser).
                                    stats.handed_off += 1
                                    await self.wait_first(blocked, suspend_flow.wait())
                                    if not blocked.done():
                                        # lost the race; wait_first cancelled it
                                        stats.interrupted += 1
                            # ---- end of fast path ----
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class Transport(_aiokafka_driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`'s delivery fast path.

    Selected by ``streamsafe://host:port`` broker URLs; the producer, topic
    creation, rebalance listener and consumer thread are the stock driver's.
    """

    Consumer: ClassVar[type[_aiokafka_driver.Consumer]] = Consumer
    driver_version = f"{_aiokafka_driver.Transport.driver_version} streamsafe-fastpath"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built when the app first touches app.transport (declaring an agent
        # does): fail there, long before the first message, if Faust moved.
        check_faust_pin()
        super().__init__(*args, **kwargs)


def register(scheme: str = SCHEME, target: str | None = None) -> None:
    """Map ``scheme://`` broker URLs to :class:`Transport` at run time.

    For when no installed distribution declares the ``faust.transports``
    entry point (a source checkout run without ``pip install``). Entry points,
    when present, are read on the registry's first lookup and win over this.
    """
    TRANSPORTS[scheme] = target or f"{Transport.__module__}:{Transport.__qualname__}"
