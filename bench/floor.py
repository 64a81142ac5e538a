"""The decision-latency floor, run by ``bench/worker.py`` beside the worker.

    STREAMSAFE_BROKER_URL=... STREAMSAFE_TOPIC_PREFIX=... python bench/floor.py TARGET_TOPIC

A plain aiokafka group consumer (uvloop, the worker's short fetch wait) reads
``livestream.frame-hashes`` and, for every probe frame (key ``lat-*``), produces one
small record to ``TARGET_TOPIC`` at once (acks=all, no linger): the two broker hops a
decision takes, with none of StreamSafe's work -- no decoding, matching, state or
policy. What a decision's latency is compared with. Prints ``floor ready`` once it
holds its partitions.
"""

from __future__ import annotations

import sys

import uvloop

from streamsafe import clients
from streamsafe.events.contract import FRAME_HASHES
from streamsafe.settings import Settings

READY = "floor ready"
PROBE_PREFIX = b"lat-"


async def echo(settings: Settings, target: str) -> None:
    consumer = clients.consumer(settings, settings.topic_name(FRAME_HASHES), group_id=f"{target}-floor",
                                fetch_max_wait_ms=10, max_poll_records=500)
    producer = clients.producer(settings, linger_ms=0)
    await clients.start(producer)
    await clients.start(consumer)
    announced = False
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            if not announced and consumer.assignment():
                print(READY, flush=True)
                announced = True
            for records in batch.values():
                for record in records:
                    if record.key is not None and record.key.startswith(PROBE_PREFIX):
                        await producer.send(target, b"floor", key=record.key)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    uvloop.run(echo(Settings.from_env(), sys.argv[1]))
