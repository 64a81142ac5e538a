"""Readiness beyond start-up: agents, records in hand, deliveries, progress (no broker)."""

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError

from streamsafe.enforcement.kafka import KafkaPublisher, OutputTopics
from streamsafe.observability.liveness import AgentRoster, DeliveryHealth, ProgressTracker


def test_progress_stalls_only_with_lag_and_no_commit():
    progress = ProgressTracker(stall_after_s=30)
    progress.observe([("p0", 5, 10), ("p1", 0, 3)], now=0)
    progress.observe([("p0", 9, 10), ("p1", 0, 3)], now=29)
    assert progress.stalled(29) == []
    progress.observe([("p0", 9, 10), ("p1", 0, 3)], now=31)
    assert progress.stalled(31) == ["p0"]  # lag and the same committed offset for 31 s
    progress.observe([("p0", 2, 17), ("p1", 0, 3)], now=32)
    assert progress.stalled(32) == []  # the commit moved
    progress.observe([("p1", 4, 3)], now=40)
    assert progress.stalled(80) == ["p1"] and progress.last_progress() == 32  # p0 revoked, forgotten


def test_agent_roster_names_agents_without_a_running_loop():
    roster = AgentRoster(expected={"a", "b"})
    roster.started("a")
    assert roster.missing() == ["b"]
    roster.started("b")
    roster.stopped("a")
    assert roster.missing() == ["a"]


class Topic:
    """A Faust-like topic whose deliveries are scripted: 'ok', 'hang' (never acknowledged) or an error."""

    def __init__(self, script):
        self.script = list(script)
        self.sent = []

    async def send(self, key, value, partition=None):
        self.sent.append(value)
        future = asyncio.get_running_loop().create_future()
        step = self.script.pop(0) if self.script else "ok"
        if step == "ok":
            future.set_result(None)
        elif step != "hang":
            future.set_exception(step)
        return future


def publisher(topic, health):
    return KafkaPublisher(OutputTopics.every(topic), timeout_s=0.05, health=health)


def dead_letter():
    from streamsafe.events.dead_letter import DeadLetter, SourceRecord

    return DeadLetter("malformed_json", "x", SourceRecord("t", 0, 1, None), b"k", b"v")


async def test_a_delivery_that_times_out_marks_deliveries_failing_and_is_sent_again(monkeypatch):
    monkeypatch.setattr("streamsafe.enforcement.deliveries.RETRY_BACKOFF_S", (0.01,))
    failures = []
    health = DeliveryHealth(on_failure=lambda: failures.append(1))
    topic = Topic(["hang", KafkaTimeoutError(), "ok"])
    sender = publisher(topic, health)
    await sender.dead_letter(dead_letter())  # sent; acknowledged in the background
    observed = []
    settled = asyncio.create_task(sender.settled())
    while not settled.done():
        observed.append(health.ok)
        await asyncio.sleep(0.005)
    assert False in observed  # not ready while it kept failing
    assert len(topic.sent) == 3 and len(failures) == 2  # never skipped: sent until acknowledged
    assert health.ok and health.failures == 0


async def test_a_delivery_that_never_completes_keeps_the_worker_not_ready_and_holds_the_commit(monkeypatch):
    monkeypatch.setattr("streamsafe.enforcement.deliveries.RETRY_BACKOFF_S", (0.01,))
    health = DeliveryHealth()
    topic = Topic(["hang"] * 1000)
    sender = publisher(topic, health)
    await sender.dead_letter(dead_letter())
    settled = asyncio.create_task(sender.settled())  # what an offset commit waits for
    await asyncio.sleep(0.3)
    assert not health.ok and health.failures >= 2 and not settled.done()
    settled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settled


async def test_the_next_record_is_not_held_back_by_an_acknowledgement():
    topic = Topic(["hang"] * 1000)
    sender = publisher(topic, DeliveryHealth())
    for _ in range(3):  # each returns once sent, while none is acknowledged
        await asyncio.wait_for(sender.dead_letter(dead_letter()), 1.0)
    assert len(topic.sent) == 3 and sender.deliveries.in_flight == 3


async def test_in_flight_deliveries_are_bounded():
    topic = Topic(["hang"] * 1000)
    sender = publisher(topic, DeliveryHealth())
    sender.deliveries.max_in_flight = 2
    await sender.dead_letter(dead_letter())
    await sender.dead_letter(dead_letter())
    third = asyncio.create_task(sender.dead_letter(dead_letter()))
    await asyncio.sleep(0.1)
    assert not third.done() and len(topic.sent) >= 2  # waits for room (resends of the first two go on)
    third.cancel()


async def test_a_dead_letter_refused_as_too_large_is_sent_again_without_its_bytes():
    from aiokafka.errors import RecordTooLargeError

    topic = Topic([RecordTooLargeError(), "ok"])
    sender = publisher(topic, DeliveryHealth())
    await sender.dead_letter(dead_letter())
    await asyncio.wait_for(sender.settled(), 1.0)
    import orjson

    first, second = (orjson.loads(v) for v in topic.sent)
    assert first["original_value_b64"] and not second["original_value_b64"]
    assert first["original_sha256"] == second["original_sha256"]
