"""The changelog buffer (``transport/changelog.py``) and the topic's direct producer (``transport/topic.py``),
with a recording channel in place of a Kafka topic (the real worker's tables are exercised through
a broker by the integration tests: state survives a restart, ``test_worker.py``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError
from faust.types.tuples import TP, FutureMessage, PendingMessage, RecordMetadata

from streamsafe.transport import changelog
from streamsafe.transport.changelog import ChangelogBuffer
from streamsafe.transport.topic import Topic


class RecordingChannel:
    """Stands in for a topic: records what is published, acknowledges it at once."""

    def __init__(self, name: str, fail_on: bytes = b"\x00never") -> None:
        self.name = name
        self.sent: list[tuple[int | None, Any, Any]] = []
        self.fail_on = fail_on

    def get_topic_name(self) -> str:
        return self.name

    async def publish_message(self, fut: FutureMessage, wait: bool = False) -> asyncio.Future[RecordMetadata]:
        message = fut.message
        if message.value == self.fail_on:
            raise ValueError("refused")
        self.sent.append((message.partition, message.key, message.value))
        metadata = RecordMetadata(self.name, message.partition or 0, TP(self.name, message.partition or 0),
                                  len(self.sent) - 1)
        fut.set_result(metadata)
        done: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        done.set_result(metadata)
        return done


def _on_changelog_sent(fut: FutureMessage) -> None:  # named as a table's changelog callback is
    return None


def _future(channel: RecordingChannel, key: bytes, value: bytes | None, partition: int = 0, *,
            changelog: bool = True) -> FutureMessage:
    callback = _on_changelog_sent if changelog else None
    return FutureMessage(PendingMessage(channel, key, value, partition, None, None, "raw", "raw", callback))


def _buffer() -> ChangelogBuffer:
    buffer = ChangelogBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    return buffer


async def test_a_changelog_sends_only_the_last_value_of_each_key_and_resolves_the_earlier_ones() -> None:
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog")
    first, second = _future(states, b'"s-1"', b"v1"), _future(states, b'"s-1"', b"v2")
    other = _future(states, b'"s-2"', b"w1", partition=3)
    last = _future(states, b'"s-1"', None)  # a delete is a write too
    for fut in (first, second, other, last):
        buffer.put(fut)
    assert buffer.size == 2 and buffer.merged_count == 2 and states.sent == []  # nothing sent before a flush

    await buffer.flush()

    assert sorted(states.sent, key=repr) == sorted([(3, b'"s-2"', b"w1"), (0, b'"s-1"', None)], key=repr)
    assert buffer.size == 0 and buffer.bursts == 1
    replaced = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert replaced == [last.result(), last.result()]  # the record that replaced them
    assert other.result().offset != last.result().offset


async def test_the_same_key_on_another_partition_or_table_is_not_merged() -> None:
    buffer = _buffer()
    states, incidents = RecordingChannel("app-stream-state-changelog"), RecordingChannel("app-incidents-changelog")
    for fut in (_future(states, b"k", b"1", 0), _future(states, b"k", b"2", 1), _future(incidents, b"k", b"3", 0)):
        buffer.put(fut)
    await buffer.flush()
    assert len(states.sent) == 2 and len(incidents.sent) == 1 and buffer.merged_count == 0


async def test_records_of_other_topics_are_never_merged_and_keep_their_order() -> None:
    buffer, topic = _buffer(), RecordingChannel("streamsafe.decisions")
    for value in (b"1", b"2", b"3"):
        buffer.put(_future(topic, b"same-key", value, changelog=False))
    await buffer.flush()
    assert [value for _, _, value in topic.sent] == [b"1", b"2", b"3"]


async def test_flush_sends_everything_queued_across_slices() -> None:
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog")
    n = changelog.SLICE * 3 + 7
    for i in range(n):
        buffer.put(_future(states, f'"s-{i}"'.encode(), b"v"))
    await buffer.flush()
    assert len(states.sent) == n and buffer.size == 0


async def test_the_conductor_waits_only_when_the_buffer_is_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog")
    monkeypatch.setattr(buffer, "max_messages", 3)
    for i in range(3):
        buffer.put(_future(states, f'"s-{i}"'.encode(), b"v"))
    await buffer.wait_until_ebb()
    assert states.sent == []  # at the limit: agents go on, the burst task sends them
    buffer.put(_future(states, b'"s-3"', b"v"))
    await buffer.wait_until_ebb()
    assert len(states.sent) == 4 and buffer.size == 0  # past it: one full flush, not a partial one


async def test_a_record_the_producer_refuses_fails_its_futures_and_the_rest_are_sent() -> None:
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog", fail_on=b"bad")
    earlier, bad = _future(states, b'"s-1"', b"ok"), _future(states, b'"s-1"', b"bad")
    good = _future(states, b'"s-2"', b"fine")
    for fut in (earlier, bad, good):
        buffer.put(fut)
    await buffer.flush()
    assert states.sent == [(0, b'"s-2"', b"fine")]
    assert isinstance(bad.exception(), ValueError) and isinstance(earlier.exception(), ValueError)


async def test_the_burst_task_sends_what_is_put_without_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "LINGER_S", 0.0)
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog")
    await buffer.start()
    try:
        buffer.put(_future(states, b'"s-1"', b"v"))
        for _ in range(100):  # a poll over loop turns, not a clock
            if states.sent:
                break
            await asyncio.sleep(0)
        assert states.sent == [(0, b'"s-1"', b"v")]
    finally:
        await buffer.stop()


def test_a_running_producer_is_returned_without_yielding_to_the_event_loop() -> None:
    producer = SimpleNamespace(started=True)
    topic = Topic.__new__(Topic)
    topic.app = SimpleNamespace(in_transaction=False, producer=producer)  # type: ignore[assignment]
    step = topic._get_producer()
    with pytest.raises(StopIteration) as finished:
        step.send(None)  # one step: no await suspended it
    assert finished.value.value is producer


class FlakyChannel(RecordingChannel):
    """Refuses its first ``failures`` sends as a broker without a leader would (retriable)."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    async def publish_message(self, fut: FutureMessage, wait: bool = False) -> asyncio.Future[RecordMetadata]:
        if self.failures:
            self.failures -= 1
            try:  # as Faust's producer raises it
                raise KafkaTimeoutError()
            except KafkaTimeoutError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        return await super().publish_message(fut, wait)


async def test_a_retriable_refusal_is_sent_again_and_a_flush_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "RETRY_S", 0.0)
    buffer, states = _buffer(), FlakyChannel("app-stream-state-changelog", failures=2)
    first, last = _future(states, b'"s-1"', b"v1"), _future(states, b'"s-1"', b"v2")
    for fut in (first, last):
        buffer.put(fut)
    await asyncio.wait_for(buffer.flush(), 5)
    assert states.sent == [(0, b'"s-1"', b"v2")] and buffer.size == 0
    assert await asyncio.wait_for(first, 5) == last.result()


async def test_a_newer_write_queued_while_the_older_was_refused_wins() -> None:
    buffer, states = _buffer(), RecordingChannel("app-stream-state-changelog")
    older, newer = _future(states, b'"s-1"', b"old"), _future(states, b'"s-1"', b"new")
    buffer.put(newer)
    buffer._requeue((id(states), 0, b'"s-1"'), older, [], first=0)  # refused during a burst
    await buffer.flush()
    assert states.sent == [(0, b'"s-1"', b"new")]
    assert await asyncio.wait_for(older, 5) == newer.result()


async def test_a_worker_stops_even_when_its_changelog_cannot_be_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changelog, "RETRY_S", 0.01)
    monkeypatch.setattr(changelog, "STOP_FLUSH_S", 0.05)
    buffer, states = _buffer(), FlakyChannel("app-stream-state-changelog", failures=10**9)
    await buffer.start()
    buffer.put(_future(states, b'"s-1"', b"v"))
    await asyncio.wait_for(buffer.stop(), 5)
    assert states.sent == [] and buffer.size == 1  # unsent, and its offset was never committed


class SlowChannel(RecordingChannel):
    """Suspends on every send until released, as aiokafka does when a partition's batch is full."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def publish_message(self, fut: FutureMessage, wait: bool = False) -> asyncio.Future[RecordMetadata]:
        self.entered.set()
        await self.release.wait()
        return await super().publish_message(fut, wait)


async def test_a_burst_cancelled_before_its_records_reach_the_producer_keeps_them() -> None:
    buffer, states = _buffer(), SlowChannel("app-stream-state-changelog")
    for i in range(3):
        buffer.put(_future(states, f'"s-{i}"'.encode(), b"v"))
    flushing = asyncio.ensure_future(buffer.flush())
    await asyncio.wait_for(states.entered.wait(), 5)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert buffer.size == 3  # none was lost
    states.release.set()
    await asyncio.wait_for(buffer.flush(), 5)
    assert len(states.sent) == 3 and buffer.size == 0


async def test_a_flush_ends_once_what_was_queued_before_it_is_sent_while_writes_go_on() -> None:
    buffer, states = _buffer(), SlowChannel("app-stream-state-changelog")
    buffer.put(_future(states, b'"s-0"', b"v"))
    flushing = asyncio.ensure_future(buffer.flush())
    await asyncio.wait_for(states.entered.wait(), 5)
    for i in range(1, 50):  # written while the flush is under way
        buffer.put(_future(states, f'"s-{i}"'.encode(), b"v"))
    states.release.set()
    await asyncio.wait_for(flushing, 5)
    assert states.sent[0] == (0, b'"s-0"', b"v") and len(states.sent) == 1 and buffer.size == 49
