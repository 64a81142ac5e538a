"""The pre-filter's consumer on its own thread (agents/fetch_thread.py), with a fake consumer
standing in for aiokafka's (the real one is in tests/integration/test_prefilter.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from streamsafe.agents.fetch_thread import FetchThread

TP = TopicPartition("frames", 0)
TP1 = TopicPartition("frames", 1)


def batch(first: int, n: int = 2, tp: TopicPartition = TP) -> dict[TopicPartition, list[ConsumerRecord]]:
    return {tp: [ConsumerRecord("frames", tp.partition, i, 0, 0, b"k", b"v", None, 1, 1, [])
                 for i in range(first, first + n)]}


class FakeConsumer:
    """Serves queued batches; records the thread each call ran on."""

    def __init__(self, items: list, *, fail_start: bool = False) -> None:
        self.items = list(items)  # batches or exceptions
        self.fail_start = fail_start
        self.fetches = 0
        self.asked: list[int] = []  # max_records of each fetch
        self.threads: set[str] = set()
        self.committed: list[dict[TopicPartition, int]] = []
        self.listener = None
        self.stopped = False
        self.more = asyncio.Event  # replaced on the thread's loop at start

    def subscribe(self, topics, listener):
        self.listener = listener

    async def start(self):
        self.threads.add(threading.current_thread().name)
        self.more = asyncio.Event()
        if self.fail_start:
            raise KafkaError("no broker")

    async def getmany(self, timeout_ms, max_records):
        self.threads.add(threading.current_thread().name)
        while not self.items:
            await self.more.wait()
            self.more.clear()
        item = self.items.pop(0)
        self.fetches += 1
        self.asked.append(max_records)
        if isinstance(item, BaseException):
            raise item
        return item

    async def commit(self, offsets):
        self.threads.add(threading.current_thread().name)
        self.committed.append(offsets)

    def assignment(self):
        return {TP}

    def highwater(self, tp):
        return 7

    async def stop(self):
        self.stopped = True


async def started(consumer: FakeConsumer, on_revoked=None, max_records: int = 500) -> FetchThread:
    async def nothing():
        return None

    thread = FetchThread(lambda: consumer, "frames", on_revoked or nothing, max_records=max_records,
                         name="test-fetch")
    await thread.start()
    return thread


async def until(predicate, at_most_s: float = 5.0) -> None:
    async with asyncio.timeout(at_most_s):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_records_are_fetched_ahead_up_to_max_records_and_taken_at_once():
    consumer = FakeConsumer([batch(0), batch(2), batch(4)])
    thread = await started(consumer, max_records=4)
    try:
        await until(lambda: thread.handed == 2)
        assert consumer.asked == [4, 2]  # never more than max_records fetched and not taken
        await asyncio.sleep(0.05)  # room for a third fetch, if the thread wrongly made one
        assert consumer.fetches == 2
        merged = await thread.getmany(timeout_ms=1000)  # both batches, one partition in offset order
        assert [r.offset for r in merged[TP]] == [0, 1, 2, 3] and list(merged) == [TP]
        await until(lambda: thread.handed == 3)  # taken: the thread fetches again
        assert consumer.asked == [4, 2, 4]
        assert await thread.getmany(timeout_ms=1000) == batch(4)
        assert consumer.threads == {"test-fetch"}
        await thread.commit({TP: 6})
        assert consumer.committed == [{TP: 6}] and consumer.threads == {"test-fetch"}
        assert thread.assignment() == {TP} and thread.highwater(TP) == 7
    finally:
        await thread.stop()
    assert consumer.stopped and not thread._thread.is_alive()


async def test_what_was_fetched_while_the_caller_was_busy_is_one_batch_per_partition():
    consumer = FakeConsumer([batch(0), batch(0, tp=TP1), batch(2), batch(2, tp=TP1)])
    thread = await started(consumer)
    try:
        await until(lambda: thread.handed == 4)
        merged = await thread.getmany(timeout_ms=1000)
        assert {tp: [r.offset for r in records] for tp, records in merged.items()} == {
            TP: [0, 1, 2, 3], TP1: [0, 1, 2, 3]}
        await until(lambda: thread._outstanding == 0)  # the thread knows they were taken
    finally:
        await thread.stop()


async def test_a_batch_fetched_alone_is_handed_over_as_it_was_fetched():
    fetched = batch(0, n=3)
    consumer = FakeConsumer([fetched])
    thread = await started(consumer)
    try:
        assert await thread.getmany(timeout_ms=1000) is fetched  # not copied into a merged one
        await until(lambda: thread._outstanding == 0)
    finally:
        await thread.stop()


async def test_a_fetched_batch_is_known_to_wait_before_its_hand_over_has_run_on_the_callers_loop():
    consumer = FakeConsumer([])
    thread = await started(consumer)
    try:
        assert not thread.waiting()
        consumer.items.append(batch(0))
        thread._in_thread_soon(consumer.more.set)
        deadline = time.monotonic() + 5.0
        while not thread.waiting() and time.monotonic() < deadline:
            pass  # the caller's loop held, as by an agent's turn: no hand-over runs meanwhile
        assert thread.waiting() and thread.handed == 0
        assert await thread.getmany(timeout_ms=1000) == batch(0)
        assert not thread.waiting()
    finally:
        await thread.stop()


async def test_no_batch_within_the_timeout_is_an_empty_one():
    consumer = FakeConsumer([])
    thread = await started(consumer)
    try:
        assert await thread.getmany(timeout_ms=10) == {}
    finally:
        await thread.stop()


async def test_a_consumer_error_is_raised_to_the_caller():
    consumer = FakeConsumer([batch(0), ConsumerStoppedError()])
    thread = await started(consumer)
    try:
        assert await thread.getmany(timeout_ms=1000) == batch(0)
        with pytest.raises(ConsumerStoppedError):
            await thread.getmany(timeout_ms=1000)
    finally:
        await thread.stop()


async def test_a_consumer_that_cannot_start_fails_the_start():
    consumer = FakeConsumer([], fail_start=True)
    thread = FetchThread(lambda: consumer, "frames", lambda: asyncio.sleep(0), max_records=500)
    with pytest.raises(KafkaError, match="no broker"):
        await thread.start()
    assert consumer.stopped and not thread._thread.is_alive()


async def test_a_revocation_drops_what_was_not_taken_and_waits_for_the_callers_commit():
    caller = threading.current_thread().name
    seen: list[tuple[str, int]] = []
    consumer = FakeConsumer([batch(0), batch(2)])

    async def on_revoked():  # the pre-filter: finish the batch in hand, commit what it screened
        seen.append((threading.current_thread().name, len(thread._ready)))
        await thread.commit({TP: 2})

    thread = await started(consumer, on_revoked, max_records=2)
    try:
        assert await thread.getmany(timeout_ms=1000) == batch(0)  # screened: offsets up to 2
        await until(lambda: thread.handed == 2)  # fetched, not taken, when the group rebalances
        revoking = asyncio.run_coroutine_threadsafe(consumer.listener.on_partitions_revoked({TP}), thread._thread.loop)
        await asyncio.wait_for(asyncio.wrap_future(revoking), 5.0)  # the listener, on the thread's loop
        assert seen == [(caller, 0)]  # on the caller's loop, after what was not taken was dropped
        assert not thread.waiting()
        assert consumer.committed == [{TP: 2}]
        consumer.items.append(batch(2))  # what the partitions' next owner (this worker again) fetches anew
        thread._in_thread_soon(consumer.more.set)
        assert await thread.getmany(timeout_ms=1000) == batch(2)  # the dropped records no longer count
        assert consumer.asked == [2, 2, 2]
    finally:
        await thread.stop()
