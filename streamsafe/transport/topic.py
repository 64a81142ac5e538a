"""Faust's topic, sending through a running producer without a detour through the event loop.

Every send of a stock Faust topic (``Topic.publish_message``, faust-streaming 0.15.3) first
awaits ``app.maybe_start_producer()``, a ``mode`` ``stampede``: even when the producer has long
been running, that await hands the event loop three turns before the record reaches aiokafka.
A decision sent by an agent therefore waited behind whatever else was ready to run, and a
burst of table changelog records took three loop turns each.

:class:`Topic` returns the producer directly once it is running (outside transactions, which
StreamSafe does not use: ``processing_guarantee`` stays at-least-once); before that, and
inside a transaction, it is the stock path. The record, its partition and its delivery
callbacks are unchanged. Installed as the app's ``Topic`` class (``streamsafe/app.py``), so the
tables' changelog topics use it too.
"""

from __future__ import annotations

import faust
from faust.types.transports import ProducerT

__all__ = ["Topic"]


class Topic(faust.Topic):
    """:class:`faust.Topic` without the producer-start stampede once the producer runs."""

    async def _get_producer(self) -> ProducerT:
        app = self.app
        if not app.in_transaction:
            producer = app.producer
            if producer.started:
                return producer
        return await super()._get_producer()
