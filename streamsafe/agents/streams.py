"""StreamSafe's Faust agents and timers: thin loops that hand each record to the
:class:`~streamsafe.agents.records.RecordHandler`.

One agent per input topic (frames: per ``streamsafe.frame-matches`` when the frame
pre-filter runs), one for reviewer verdicts, one for appeals, one for StreamSafe's own ticks. The
sweep timer finds due review deadlines and expiring streams on the processing clock
and sends a tick to each stream's own partition, so the work happens in the agent
that holds the stream's state (a repeated tick is harmless: decisions are
deterministic). One more agent reads ``streamsafe.account-signals`` (keyed by account)
into the account handler; the sweep also sends expiry ticks for accounts past the
policy's retention, to the account's own partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import faust

from streamsafe.accounts.handler import AccountHandler
from streamsafe.agents.records import RecordHandler
from streamsafe.enforcement.publisher import DecisionPublisher
from streamsafe.events.contract import (
    ACCOUNT_FINDINGS,
    ACCOUNT_SIGNALS,
    FRAME_HASHES,
    FRAME_MATCHES,
    INPUT_TOPICS,
    REVIEW_APPEALS,
    REVIEW_VERDICTS,
    TIMERS,
)
from streamsafe.events.dead_letter import SourceRecord
from streamsafe.observability.liveness import AgentRoster
from streamsafe.settings import Settings

__all__ = ["install_agents", "install_timers", "raw_topic"]


def raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    """A topic of raw bytes (StreamSafe decodes records itself, once)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=partitions, internal=False)


def install_agents(app: faust.App, settings: Settings, handler: RecordHandler, ready: asyncio.Event,
                   roster: AgentRoster, partitions: int, accounts: AccountHandler | None = None) -> None:
    for name in (*INPUT_TOPICS, REVIEW_APPEALS, REVIEW_VERDICTS, TIMERS, ACCOUNT_FINDINGS):
        forwarded = settings.prefilter and name == FRAME_HASHES  # only the frames that matched
        topic = raw_topic(app, settings.topic_name(FRAME_MATCHES if forwarded else name), partitions)
        roster.expected.add(name)
        app.agent(topic, name=f"streamsafe.{name}")(_agent(name, handler, ready, roster, forwarded))
        handler.input_topic_names.add(topic.get_topic_name())
    if accounts is not None:
        topic = raw_topic(app, settings.topic_name(ACCOUNT_SIGNALS), accounts.partitions)
        roster.expected.add(ACCOUNT_SIGNALS)
        app.agent(topic, name=f"streamsafe.{ACCOUNT_SIGNALS}")(_account_agent(accounts, ready, roster))
        handler.input_topic_names.add(topic.get_topic_name())


def _account_agent(accounts: AccountHandler, ready: asyncio.Event, roster: AgentRoster) -> Callable[[Any], Any]:
    async def consume_account_signals(stream: Any) -> None:
        roster.started(ACCOUNT_SIGNALS)
        try:
            async for event in stream.events():
                if not ready.is_set():
                    await ready.wait()  # decide only with the policies in force
                message = event.message
                source = SourceRecord(message.topic, message.partition, message.offset,
                                      None if message.timestamp is None else round(message.timestamp * 1000))
                await accounts.handle(message.key, message.value, source)
        finally:
            roster.stopped(ACCOUNT_SIGNALS)

    return consume_account_signals


def _agent(name: str, handler: RecordHandler, ready: asyncio.Event, roster: AgentRoster,
           forwarded: bool) -> Callable[[Any], Any]:
    async def consume(stream: Any) -> None:
        roster.started(name)
        try:
            async for event in stream.events():
                if not ready.is_set():
                    await ready.wait()  # decide only with the policies (and banks) in force
                message = event.message
                source = SourceRecord(message.topic, message.partition, message.offset,
                                      None if message.timestamp is None else round(message.timestamp * 1000))
                if forwarded:
                    await handler.handle_forwarded(message.key, message.value, source)
                else:
                    await handler.handle(name, message.key, message.value, source)
        finally:
            roster.stopped(name)

    consume.__name__ = consume.__qualname__ = f"consume_{name.replace('.', '_').replace('-', '_')}"
    return consume


def install_timers(app: faust.App, settings: Settings, handler: RecordHandler, publisher: DecisionPublisher,
                   ready: asyncio.Event, accounts: AccountHandler | None = None) -> None:
    sent_ticks: set[tuple[str, str, int]] = set()

    @app.timer(interval=settings.sweep_interval_s)
    async def sweep() -> None:
        if not ready.is_set():
            return
        for tick, partition in handler.due_ticks():
            key = (tick.stream_id, tick.escalation_id or tick.kind, tick.due_ms)
            if key not in sent_ticks:
                sent_ticks.add(key)
                await publisher.send_tick(tick, partition)
        if accounts is not None:
            expiries = [s for s in accounts.due_expiries(handler.clock.now_ms())
                        if (s.account_id, "expire", s.ts_ms) not in sent_ticks]
            sent_ticks.update((s.account_id, "expire", s.ts_ms) for s in expiries)
            if expiries:
                await publisher.send_account_signals(expiries)
        if len(sent_ticks) > 100_000:
            sent_ticks.clear()

    @app.timer(interval=5.0)
    async def compact_banks() -> None:
        # fold recent PDQ additions into the static index, off the per-frame path
        await asyncio.get_running_loop().run_in_executor(None, handler.banks.compact_if_needed)
