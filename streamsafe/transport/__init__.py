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

The safe seek
-------------
Both StreamSafe transports also fix a loss in the stock driver: after a
rebalance Faust seeks every partition back to its committed offset, but a
partition the group has never committed was not sought at all, so records
fetched and dropped while the worker was starting were never delivered
(:class:`SafeSeekConsumerThread`). ``streamsafe-stock://`` is that fix alone,
with Faust's stock delivery loop, for comparison in benchmarks.

The fast transport also sends differently: table changelog records go out in
coalesced bursts that never stop the agents (:mod:`.changelog`), and topics hand
records to a running producer without Faust's producer-start detour
(:mod:`.topic`, installed as the app's ``Topic``). ``streamsafe-stock://`` keeps
Faust's own producer buffer and topic, so benchmarks compare against stock Faust.

Agents' streams give the event loop back by time instead of before every event
(:mod:`.stream_yield`), so a busy topic's agent keeps up while the loop is busy.

What the worker publishes (decisions, reports, dead letters, the pre-filter's
forwards) goes through a producer on a thread of its own (:mod:`.send_thread`),
so a decision does not wait for the busy loop's turns to reach the broker.

Modules: :mod:`.handoff` (the hand-off primitive), :mod:`.pin` (the pin on
Faust), :mod:`.consumer` (the consumers), :mod:`.producer` (idempotence),
:mod:`.changelog` (table writes), :mod:`.topic` (sends), :mod:`.stream_yield`
(agents' turns), :mod:`.loop_thread` and :mod:`.send_thread` (the publishing thread).
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as _aiokafka_driver

from streamsafe.transport.consumer import Consumer, DeliveryStats, SafeSeekConsumer, SafeSeekConsumerThread
from streamsafe.transport.handoff import eager_start
from streamsafe.transport.pin import (
    EXPECTED_DRAIN_SHA256,
    EXPECTED_FAUST_VERSION,
    FaustPinError,
    check_faust_pin,
    drain_messages_sha256,
)
from streamsafe.transport.producer import Producer, StockBufferProducer, produce_idempotently
from streamsafe.transport.stream_yield import StreamYield, install_stream_yield

__all__ = [
    "EXPECTED_DRAIN_SHA256",
    "EXPECTED_FAUST_VERSION",
    "SCHEME",
    "STOCK_DELIVERY_SCHEME",
    "Consumer",
    "DeliveryStats",
    "FaustPinError",
    "Producer",
    "SafeSeekConsumer",
    "SafeSeekConsumerThread",
    "StockBufferProducer",
    "StockDeliveryTransport",
    "StreamYield",
    "Transport",
    "check_faust_pin",
    "drain_messages_sha256",
    "eager_start",
    "install_stream_yield",
    "produce_idempotently",
    "register",
]

#: URL scheme that selects the fast transport (``streamsafe://host:port``).
SCHEME = "streamsafe"
#: URL scheme of the safe seek with Faust's stock delivery loop.
STOCK_DELIVERY_SCHEME = "streamsafe-stock"


class StockDeliveryTransport(_aiokafka_driver.Transport):
    """Faust's aiokafka transport with the safe seek (``streamsafe-stock://``)."""

    Consumer: ClassVar[type[_aiokafka_driver.Consumer]] = SafeSeekConsumer
    Producer: ClassVar[type[_aiokafka_driver.Producer]] = StockBufferProducer
    driver_version = f"{_aiokafka_driver.Transport.driver_version} streamsafe-safeseek"


class Transport(_aiokafka_driver.Transport):
    """Faust's aiokafka transport with the safe seek and :class:`Consumer`'s
    delivery fast path (``streamsafe://``).

    Topic creation and the rebalance listener are the stock driver's; the producer is too, made
    idempotent where the settings say so (:mod:`.producer`).
    """

    Consumer: ClassVar[type[_aiokafka_driver.Consumer]] = Consumer
    Producer: ClassVar[type[_aiokafka_driver.Producer]] = Producer
    driver_version = f"{_aiokafka_driver.Transport.driver_version} streamsafe-fastpath"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built when the app first touches app.transport (declaring an agent
        # does): fail there, long before the first message, if Faust moved.
        check_faust_pin()
        install_stream_yield()  # agents give the loop back by time, not before every event
        super().__init__(*args, **kwargs)


def register() -> None:
    """Map ``streamsafe://`` and ``streamsafe-stock://`` broker URLs to the transports at run time.

    For when no installed distribution declares the ``faust.transports``
    entry points (a source checkout run without ``pip install``). Entry points,
    when present, are read on the registry's first lookup and win over this.
    """
    for scheme, transport in ((SCHEME, Transport), (STOCK_DELIVERY_SCHEME, StockDeliveryTransport)):
        TRANSPORTS[scheme] = f"{transport.__module__}:{transport.__qualname__}"
