"""The safe seek: flow stops before the seek, and every assigned partition is sought."""

from __future__ import annotations

from typing import Any

import faust
import pytest
from faust.types import TP

import streamsafe.transport as st

A, B, C = TP("t", 0), TP("t", 1), TP("t", 2)


def consumer_for(reset: str = "earliest") -> Any:
    st.register()
    app = faust.App("seek-test", broker="streamsafe-stock://127.0.0.1:9", web_enabled=False,
                    consumer_auto_offset_reset=reset)
    consumer = app.consumer
    assert isinstance(consumer, st.SafeSeekConsumer)
    return consumer


class FakeAIOKafkaConsumer:
    """What the seek needs of aiokafka's consumer, recording what it was asked."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        # aiokafka seeks only partitions whose committed offset is > 0
        self.calls.extend(("seek", (tp, offset)) for tp, offset in self.committed.items() if offset)
        return dict(self.committed)

    def seek(self, tp: TP, offset: int) -> None:
        self.calls.append(("seek", (tp, offset)))

    async def seek_to_beginning(self, *tps: TP) -> bool:
        self.calls.append(("beginning", tps))
        return True

    async def seek_to_end(self, *tps: TP) -> bool:
        self.calls.append(("end", tps))
        return True


@pytest.mark.parametrize("reset, where", [("earliest", "beginning"), ("latest", "end")])
async def test_every_partition_is_sought(reset: str, where: str) -> None:
    thread = consumer_for(reset)._thread
    assert isinstance(thread, st.SafeSeekConsumerThread)
    fake = FakeAIOKafkaConsumer({A: None, B: 0, C: 5})
    thread._ensure_consumer = lambda: fake

    committed = await thread._seek_every_partition()

    assert committed == {A: None, B: 0, C: 5}
    assert sorted(fake.calls) == sorted([("seek", (C, 5)), ("seek", (B, 0)), (where, (A,))])


async def test_nothing_to_reset_when_every_partition_was_committed() -> None:
    thread = consumer_for()._thread
    fake = FakeAIOKafkaConsumer({A: 3, C: 5})
    thread._ensure_consumer = lambda: fake

    await thread._seek_every_partition()

    assert fake.calls == [("seek", (A, 3)), ("seek", (C, 5))]


async def test_flow_is_stopped_before_the_seek_and_read_offsets_follow_it() -> None:
    consumer = consumer_for()
    consumer.resume_flow()
    consumer._read_offset[C] = 42  # delivered before the seek; must be read again
    seen: dict[str, Any] = {}

    async def seek_to_committed() -> dict[TP, int | None]:
        seen["flow_active"] = consumer.flow_active
        seen["suspended"] = consumer.suspend_flow.is_set()
        return {A: None, C: 5}

    consumer.seek_to_committed = seek_to_committed
    await consumer.perform_seek()

    assert seen == {"flow_active": False, "suspended": True}
    assert consumer._read_offset[A] is None and consumer._read_offset[C] == 5
    assert not consumer.flow_active  # until the caller resumes it, as Faust's recovery does


def test_both_schemes_carry_the_safe_seek() -> None:
    assert issubclass(st.Consumer, st.SafeSeekConsumer)
    assert st.StockDeliveryTransport.Consumer is st.SafeSeekConsumer
    assert st.Transport.Consumer is st.Consumer


async def test_fetches_wait_briefly_at_the_broker() -> None:
    from streamsafe.transport.consumer import FETCH_MAX_WAIT_MS

    thread = consumer_for()._thread
    aiokafka_consumer = thread._create_worker_consumer(thread.transport)
    assert aiokafka_consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500


async def test_the_livelock_check_skips_a_partition_assigned_before_it_has_a_position(monkeypatch) -> None:
    """After a rebalance aiokafka can hold a partition with no position yet; Faust's check read
    it and aiokafka's assertion ended the worker. The check now waits for the position."""
    from types import SimpleNamespace

    from aiokafka.consumer.subscription_state import TopicPartitionState

    thread = consumer_for()._thread
    states = {A: TopicPartitionState(None), B: TopicPartitionState(None)}
    states[B].seek(7)  # B has been sought; A not yet
    assignment = SimpleNamespace(state_value=lambda tp: states.get(TP(tp.topic, tp.partition)))
    fetcher = SimpleNamespace(_subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)))
    thread._ensure_consumer = lambda: SimpleNamespace(_fetcher=fetcher)
    checked: list[TP] = []
    monkeypatch.setattr(st.SafeSeekConsumerThread.__mro__[1], "verify_event_path",
                        lambda self, now, tp: checked.append(tp))
    with pytest.raises(AssertionError):
        _ = states[A].position  # what Faust's check would have read
    thread.verify_event_path(100.0, A)
    thread.verify_event_path(100.0, B)
    thread.verify_event_path(100.0, C)  # not assigned at all
    assert checked == [B]
