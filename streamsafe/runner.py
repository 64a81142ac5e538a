"""Run a worker process: check the topics against the contract, then hand over to Faust."""

from __future__ import annotations

import asyncio
import logging

from streamsafe.brokers.topics import apply_topics
from streamsafe.events.contract import load_contract
from streamsafe.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly)."""
    import faust

    from streamsafe.app import create_app

    contract = load_contract()
    loop = asyncio.new_event_loop()
    try:
        statuses = loop.run_until_complete(apply_topics(settings, contract))
    finally:
        loop.close()
    created = [s.name for s in statuses if s.status == "created"]
    app = create_app(settings, contract=contract)
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    if created:
        worker.log.info("created topics from the contract: %s", ", ".join(created))
    worker.execute_from_commandline()
