"""Faust's producer, idempotent when the worker's settings say so.

Faust asks its aiokafka producer for idempotence only inside transactions; StreamSafe's
decisions, escalations and reports go out through that producer too, so the worker's
``idempotent_producer`` setting (settled by :func:`streamsafe.clients.resolve_idempotence`)
applies to it here: a retried send can then neither duplicate nor reorder a record.
Table writes reach it through :mod:`streamsafe.transport.changelog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as _aiokafka_driver

from streamsafe.transport.changelog import ChangelogBuffer

__all__ = ["Producer", "StockBufferProducer", "produce_idempotently"]

_IDEMPOTENT = "_streamsafe_idempotent_producer"


def produce_idempotently(app: Any, idempotent: bool) -> None:
    """Make ``app``'s Faust producer idempotent (it always sends with acks=all: ``app.py``)."""
    setattr(app, _IDEMPOTENT, idempotent)


class StockBufferProducer(_aiokafka_driver.Producer):
    """The stock driver's producer, with ``enable_idempotence`` from :func:`produce_idempotently`
    (and Faust's own producer buffer: ``streamsafe-stock://``, the benchmarks' baseline)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if getattr(self.app, _IDEMPOTENT, False):
            extra["enable_idempotence"] = True
        return extra


class Producer(StockBufferProducer):
    """:class:`StockBufferProducer` with table changelog records sent by
    :class:`~streamsafe.transport.changelog.ChangelogBuffer` (``streamsafe://``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.app.conf.producer_threaded:
            raise RuntimeError("StreamSafe's changelog buffer does not support Faust's producer_threaded")
        self.buffer = ChangelogBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app
