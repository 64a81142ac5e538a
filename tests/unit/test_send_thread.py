"""The publisher's producer on its own thread (transport/send_thread.py), with a fake producer
standing in for aiokafka's (the real one carries every decision in the integration tests)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    RecordTooLargeError,
)

from streamsafe.enforcement.deliveries import Deliveries, Send
from streamsafe.transport.send_thread import SendThread


class FakeProducer:
    """Acknowledges a record when told to; records the thread each call ran on."""

    def __init__(self, *, refuse: bytes = b"", fail_start: bool = False) -> None:
        self.refuse = refuse  # a value send() refuses at once
        self.fail_start = fail_start
        self._sender = None  # aiokafka's sender: its task ends when the sender stops
        self.sent: list[tuple[str, bytes, bytes, int | None, int | None]] = []
        self.pending: list[asyncio.Future] = []
        self.threads: set[str] = set()
        self.stopped = False

    async def start(self):
        self.threads.add(threading.current_thread().name)
        if self.fail_start:
            raise KafkaTimeoutError()
        self._sender = Sender(asyncio.get_running_loop().create_future())

    async def send(self, topic, value, key=None, partition=None, timestamp_ms=None):
        self.threads.add(threading.current_thread().name)
        if value == self.refuse:
            raise RecordTooLargeError()
        self.sent.append((topic, key, value, partition, timestamp_ms))
        ack = asyncio.get_running_loop().create_future()
        self.pending.append(ack)
        return ack

    def acknowledge(self) -> None:  # on the producer's loop
        for i, ack in enumerate(self.pending):
            if not ack.done():
                ack.set_result(("metadata", i))

    def refuse_pending(self, error: Exception) -> None:  # on the producer's loop
        for ack in self.pending:
            if not ack.done():
                ack.set_exception(error)

    def stop_sender(self, error: Exception) -> None:  # on the producer's loop: as aiokafka's fail_all
        self._sender.sender_task.set_exception(error)
        self.refuse_pending(error)

    async def stop(self):
        self.threads.add(threading.current_thread().name)
        self.acknowledge()  # aiokafka's stop sends what it holds
        self.stopped = True


class Sender:
    def __init__(self, task: asyncio.Future) -> None:
        self.sender_task = task


async def started(producer: FakeProducer) -> SendThread:
    sends = SendThread(lambda: producer, name="test-send")
    await sends.start()
    return sends


async def on_thread(sends: SendThread, callback) -> None:
    done = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def run():
        callback()
        loop.call_soon_threadsafe(done.set_result, None)

    sends._thread.call_soon(run)
    await done


async def test_records_go_out_from_the_thread_in_the_order_handed_over():
    producer = FakeProducer()
    sends = await started(producer)
    topic = sends.topic("enforcement.actions")
    futures = [await topic.send(key=b"s-%d" % i, value=b"v%d" % i, partition=i % 2, timestamp_ms=i)
               for i in range(20)]
    assert not any(f.done() for f in futures)  # handed over, not acknowledged yet
    await asyncio.wait_for(_until(lambda: len(producer.sent) == 20), 5)
    assert [s[2] for s in producer.sent] == [b"v%d" % i for i in range(20)]
    assert producer.sent[3] == ("enforcement.actions", b"s-3", b"v3", 1, 3)
    await on_thread(sends, producer.acknowledge)
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [("metadata", i) for i in range(20)]
    assert producer.threads == {"test-send"}  # never the caller's loop
    await sends.stop()
    assert producer.stopped


async def test_a_record_refused_before_it_is_sent_fails_its_own_future_only():
    producer = FakeProducer(refuse=b"huge")
    sends = await started(producer)
    refused = sends.send("t", b"k", b"huge")
    fine = sends.send("t", b"k", b"small")
    with pytest.raises(RecordTooLargeError):
        await asyncio.wait_for(refused, 5)
    await on_thread(sends, producer.acknowledge)
    assert (await asyncio.wait_for(fine, 5)) == ("metadata", 0)
    await sends.stop()


async def test_stopping_sends_what_was_handed_over_and_a_later_send_fails():
    producer = FakeProducer()
    sends = await started(producer)
    handed = [sends.send("t", b"k", b"v%d" % i) for i in range(5)]
    await sends.stop()  # the producer's stop acknowledges what it holds
    assert len(await asyncio.wait_for(asyncio.gather(*handed), 5)) == 5
    with pytest.raises(ProducerClosed):
        await sends.send("t", b"k", b"late")


async def test_deliveries_through_the_thread_are_settled_once_acknowledged():
    producer = FakeProducer()
    sends = await started(producer)
    deliveries = Deliveries(timeout_s=5)
    await deliveries.send([Send(sends.topic("t"), b"k", b"v1"), Send(sends.topic("t"), b"k", b"v2")])
    settled = asyncio.ensure_future(deliveries.settled())
    await asyncio.wait_for(_until(lambda: len(producer.sent) == 2), 5)
    assert not settled.done()  # not acknowledged yet: an offset commit would wait
    await on_thread(sends, producer.acknowledge)
    await asyncio.wait_for(settled, 5)
    assert deliveries.in_flight == 0
    await sends.stop()


async def test_a_producer_that_cannot_start_fails_the_start():
    sends = SendThread(lambda: FakeProducer(fail_start=True), name="test-send")
    with pytest.raises(KafkaTimeoutError):
        await sends.start()
    with pytest.raises(ProducerClosed):
        await sends.send("t", b"k", b"v")


class Producers:
    """A factory handing out a new fake producer per call, as ``clients.producer`` does."""

    def __init__(self, *broken_starts: bool) -> None:
        self.made: list[FakeProducer] = []
        self.broken_starts = list(broken_starts)  # the first calls' fail_start, in order

    def __call__(self) -> FakeProducer:
        fail = self.broken_starts.pop(0) if self.broken_starts else False
        self.made.append(FakeProducer(fail_start=fail))
        return self.made[-1]


@pytest.mark.parametrize("breakage", ["sender stopped", "sequence refused"])
async def test_a_producer_that_can_no_longer_deliver_is_replaced_and_the_resent_records_arrive(breakage):
    producers, renewals = Producers(), []
    sends = SendThread(producers, name="test-send", on_renewal=renewals.append)
    await sends.start()
    first = producers.made[0]
    deliveries = Deliveries(timeout_s=5)
    await deliveries.send([Send(sends.topic("enforcement.actions"), b"s-1", b"block s-1")])
    await asyncio.wait_for(_until(lambda: len(first.sent) == 1), 5)
    if breakage == "sender stopped":  # aiokafka: every send after this fails
        await on_thread(sends, lambda: first.stop_sender(KafkaError("Unexpected error during batch delivery")))
    else:  # the broker refuses this producer's sequence numbers for the partition from now on
        await on_thread(sends, lambda: first.refuse_pending(OutOfOrderSequenceNumber()))
    # Deliveries sends the record again; it goes out through a new producer
    await asyncio.wait_for(_until(lambda: len(producers.made) == 2 and producers.made[1].sent), 10)
    second = producers.made[1]
    assert second.sent == [("enforcement.actions", b"s-1", b"block s-1", None, None)]
    assert renewals == ["SenderStopped" if breakage == "sender stopped" else "OutOfOrderSequenceNumber"]
    await asyncio.wait_for(_until(lambda: first.stopped), 5)  # the old one is stopped
    settled = asyncio.ensure_future(deliveries.settled())
    await on_thread(sends, second.acknowledge)
    await asyncio.wait_for(settled, 5)
    later = sends.send("enforcement.actions", b"s-2", b"block s-2")  # and stays in use
    await asyncio.wait_for(_until(lambda: len(second.sent) == 2), 5)
    await on_thread(sends, second.acknowledge)
    assert (await asyncio.wait_for(later, 5)) == ("metadata", 1)
    assert len(producers.made) == 2 and renewals == renewals[:1]
    await sends.stop()
    assert second.stopped


async def test_a_refusal_that_resending_can_fix_keeps_the_producer():
    producers, renewals = Producers(), []
    sends = SendThread(producers, name="test-send", on_renewal=renewals.append)
    await sends.start()
    refused = sends.send("t", b"k", b"v")
    await asyncio.wait_for(_until(lambda: producers.made[0].sent), 5)
    await on_thread(sends, lambda: producers.made[0].refuse_pending(KafkaTimeoutError()))
    with pytest.raises(KafkaTimeoutError):
        await asyncio.wait_for(refused, 5)
    again = sends.send("t", b"k", b"v")
    await asyncio.wait_for(_until(lambda: len(producers.made[0].sent) == 2), 5)
    await on_thread(sends, producers.made[0].acknowledge)
    await asyncio.wait_for(again, 5)
    assert len(producers.made) == 1 and renewals == []
    await sends.stop()


async def test_a_replacement_that_cannot_start_is_tried_again_and_the_record_waits():
    producers = Producers(False, True)  # the first starts; the first replacement does not
    sends = SendThread(producers, name="test-send")
    await sends.start()
    await on_thread(sends, lambda: producers.made[0].stop_sender(KafkaError("sender died")))
    record = sends.send("t", b"k", b"v")
    await asyncio.wait_for(_until(lambda: len(producers.made) == 3 and producers.made[2].sent), 10)
    assert producers.made[1].stopped and not producers.made[1].sent  # the one that failed to start
    await on_thread(sends, producers.made[2].acknowledge)
    assert (await asyncio.wait_for(record, 5)) == ("metadata", 0)
    await sends.stop()


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)
