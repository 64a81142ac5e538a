"""The publishing producer replaced through a real broker: aiokafka's sender task stops on an
unexpected error (as upstream reports show it can), after which every send through that producer
fails; the send thread starts a new producer and the decision held back arrives, once."""

from __future__ import annotations

import asyncio
from functools import partial

import orjson
import pytest

from streamsafe import clients
from streamsafe.enforcement.deliveries import Deliveries, Send
from streamsafe.events.contract import ACTIONS
from streamsafe.transport.send_thread import SendThread

pytestmark = pytest.mark.integration


def _decision(stream: str) -> bytes:
    return orjson.dumps({"stream_id": stream, "action": "block"})


async def test_a_producer_whose_sender_stopped_is_replaced_and_the_held_decision_arrives(pipeline):
    topic = pipeline.topic(ACTIONS)
    renewals: list[str] = []
    sends = SendThread(partial(clients.producer, pipeline.settings, linger_ms=0), name="test-publish",
                       on_renewal=renewals.append)
    await sends.start()
    try:
        deliveries = Deliveries(timeout_s=5)
        await deliveries.send([Send(sends.topic(topic), b"s-before", _decision("s-before"))])
        await asyncio.wait_for(deliveries.settled(), 30)
        broken = sends._producer
        assert broken is not None and renewals == []

        def fault(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a fault injected into the sender's next drain")

        # the sender's next pass raises: aiokafka ends the sender task and fails every send after it
        broken._message_accumulator.drain_by_nodes = fault
        await deliveries.send([Send(sends.topic(topic), b"s-after", _decision("s-after"))])
        await asyncio.wait_for(deliveries.settled(), 60)  # failed once, sent again through a new producer
        assert renewals == ["SenderStopped"]
        assert sends._producer is not broken

        def both(records) -> bool:
            return {"s-before", "s-after"} <= {d["stream_id"] for d in records.on(ACTIONS)}

        records = await pipeline.read(until=both, topics=(ACTIONS,), timeout_s=30, settle_s=1.0)
        assert sorted(d["stream_id"] for d in records.on(ACTIONS)) == ["s-after", "s-before"]  # each once
    finally:
        await sends.stop()
