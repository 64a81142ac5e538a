"""The worker's logging: at the configured level, and no records built below it."""

from __future__ import annotations

import logging

from streamsafe.app import create_app
from streamsafe.runner import faust_worker
from streamsafe.settings import Settings


def test_a_worker_at_warning_builds_no_debug_records_for_a_terminal_spinner(tmp_path):
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    settings = Settings(data_dir=tmp_path, http_port=0, replication_factor=1, log_level="warning")
    worker = faust_worker(create_app(settings), settings)
    worker.redirect_stdouts = False  # the test keeps its own stdout
    try:
        worker._setup_logging()
        assert root.level == logging.WARNING
        for library in ("aiokafka.consumer.fetcher", "faust.topics", "mode"):
            assert not logging.getLogger(library).isEnabledFor(logging.DEBUG), library
        assert not any(type(h).__name__ == "SpinnerHandler" for h in root.handlers)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
