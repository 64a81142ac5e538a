"""A Faust worker for the correctness tests: records every event it processes.

    python tests/integration/fastpath_worker.py --transport streamsafe --bootstrap HOST:PORT --topic T \
        --app-id G --record FILE [--buffer 4096] [--slow-every 0 --slow-s 0.0]

Appends ``partition offset id monotonic_time`` per processed event to FILE
(flushed every 0.2 s), and writes the consumer's delivery stats to FILE.stats.json
on the same timer. Stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import faust


def _trace_consumer(path: Path) -> None:
    """Debug aid: timestamps of flow stop/resume and commits, to line up with the records."""
    from faust.transport import consumer as base

    def log(what: str) -> None:
        with path.open("a") as fh:
            fh.write(f"{time.monotonic():.3f} {what}\n")

    stop_flow, resume_flow, commit = base.Consumer.stop_flow, base.Consumer.resume_flow, base.Consumer.commit

    def traced_stop_flow(self: Any) -> None:
        log("stop_flow")
        stop_flow(self)

    def traced_resume_flow(self: Any) -> None:
        log("resume_flow")
        resume_flow(self)

    async def traced_commit(self: Any, *a: Any, **kw: Any) -> bool:
        log(f"commit start rebalancing={self.app.rebalancing}")
        result = await commit(self, *a, **kw)
        committed = sorted((tp.partition, o) for tp, o in self._committed_offset.items() if o is not None)
        log(f"commit -> {result} committed={dict(committed)}")
        return result

    from faust.transport.drivers import aiokafka as driver

    listener_revoked = driver.ConsumerRebalanceListener.on_partitions_revoked

    def traced_listener_revoked(self: Any, revoked: Any) -> Any:
        log("listener on_partitions_revoked (consumer thread)")
        return listener_revoked(self, revoked)

    driver.ConsumerRebalanceListener.on_partitions_revoked = traced_listener_revoked  # type: ignore[method-assign]
    base.Consumer.stop_flow = traced_stop_flow  # type: ignore[method-assign]
    base.Consumer.resume_flow = traced_resume_flow  # type: ignore[method-assign]
    base.Consumer.commit = traced_commit  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--buffer", type=int, default=4096, help="stream_buffer_maxsize")
    parser.add_argument("--slow-every", type=int, default=0, help="sleep every N events (0: never)")
    parser.add_argument("--slow-s", type=float, default=0.0)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--table", action="store_true",
                        help="count events per partition in a changelog-backed table (recovery on every rebalance)")
    args = parser.parse_args()

    if args.transport == "streamsafe":
        from faust.transport import by_url

        by_url("streamsafe://x")  # resolved through the faust.transports entry point

    if os.environ.get("FASTPATH_TRACE"):
        _trace_consumer(Path(f"{args.record}.trace"))

    app = faust.App(
        args.app_id,
        broker=f"{args.transport}://{args.bootstrap}",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=args.buffer,
        broker_commit_interval=args.commit_interval,
        broker_heartbeat_interval=1.0,
        broker_session_timeout=10.0,
        broker_rebalance_timeout=20.0,
    )
    topic = app.topic(args.topic, value_serializer="json", partitions=args.partitions)
    counts = app.Table("counts", default=int, partitions=args.partitions) if args.table else None
    record = Path(args.record)
    lines: list[str] = []
    seen = {"n": 0}

    @app.agent(topic)
    async def consume(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            lines.append(f"{m.partition} {m.offset} {event.value['id']} {time.monotonic():.3f}\n")
            if counts is not None:
                counts[m.partition] += 1
            seen["n"] += 1
            if args.slow_every and seen["n"] % args.slow_every == 0:
                await asyncio.sleep(args.slow_s)

    def flush() -> None:
        if lines:
            chunk = "".join(lines)
            lines.clear()
            with record.open("a") as fh:
                fh.write(chunk)
        stats = getattr(app.consumer, "stats", None)
        partial = Path(f"{record}.stats.json.partial")  # the test reads it meanwhile: replace it whole
        partial.write_text(json.dumps({"seen": seen["n"], "delivery": vars(stats) if stats is not None else None}))
        partial.replace(f"{record}.stats.json")

    @app.timer(0.2)
    async def flush_timer() -> None:
        flush()

    class RecordingWorker(faust.Worker):
        def on_worker_shutdown(self) -> None:
            # the services (agents included) have stopped: record the rest
            flush()
            super().on_worker_shutdown()

    RecordingWorker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
