"""The log handler's rate limit: a repeated warning shows once per interval, and the next
one shown says how many were dropped; other messages and lower levels pass."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from streams.logs import _CHATTY, RepeatFilter, configure_logging


@pytest.fixture
def shown() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A logger whose records, once past a 0.2 s ``RepeatFilter``, are kept."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    handler.addFilter(RepeatFilter(interval_s=0.2))
    logger = logging.getLogger(f"test.repeats.{id(kept)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, kept
    logger.removeHandler(handler)


def test_a_repeated_warning_shows_once_per_interval_then_counts_the_dropped(
    shown: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, kept = shown
    for _ in range(1000):
        logger.error("Unable connect to node with id %s", 0)
    assert len(kept) == 1
    assert not hasattr(kept[0], "suppressed")
    time.sleep(0.25)  # the point: the 0.2 s interval passes
    logger.error("Unable connect to node with id %s", 0)
    assert len(kept) == 2
    assert kept[1].suppressed == 999  # type: ignore[attr-defined]


def test_other_messages_and_lower_levels_pass(
    shown: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, kept = shown
    for n in range(3):
        logger.warning("node %s", n)  # three messages
        logger.info("node %s", 0)  # below WARNING: every one
        logger.error("node %s", 0)  # another level
    assert [(r.levelname, r.getMessage()) for r in kept] == [
        ("WARNING", "node 0"),
        ("INFO", "node 0"),
        ("ERROR", "node 0"),
        ("WARNING", "node 1"),
        ("INFO", "node 0"),
        ("WARNING", "node 2"),
        ("INFO", "node 0"),
    ]


def test_every_process_logs_through_the_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """``configure_logging``, which every agentlog process calls, puts the filter on its
    handler: a flood of one error is one JSON line."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in ("", *_CHATTY)}
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    try:
        configure_logging("INFO")
        for _ in range(500):
            logging.getLogger("aiokafka").error("Unable to update metadata from [%s]", 0)
    finally:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    lines = stderr.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["Unable to update metadata from [0]"]
