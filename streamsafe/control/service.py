"""Run broadcast readers as part of the Faust worker's service tree."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from mode import Service

from streamsafe.control.broadcast import BroadcastReader

__all__ = ["READY_MESSAGE", "ControlService"]

#: logged once policies and banks are loaded and the worker decides with them
READY_MESSAGE = "streamsafe ready"


class ControlService(Service):
    """Starts every reader with the worker and stops them with it; ``ready`` is set
    once all of them have caught up with their topics."""

    def __init__(self, readers: Sequence[BroadcastReader], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.readers = list(readers)
        self.ready = asyncio.Event()

    async def on_start(self) -> None:
        for reader in self.readers:
            await reader.start()
        self.add_future(self._mark_ready())

    async def _mark_ready(self) -> None:
        for reader in self.readers:
            await reader.caught_up.wait()
        self.ready.set()
        self.log.info("%s: caught up with %s", READY_MESSAGE, ", ".join(r.topic for r in self.readers))

    async def on_stop(self) -> None:
        for reader in self.readers:
            await reader.stop()
