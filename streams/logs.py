"""Structured JSON logs for every agentlog process."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_CHATTY = ("aiokafka", "alembic", "uvicorn.access", "httpx")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries narrate every rebalance and migration step at INFO; our own logs say
    # what matters. At DEBUG everything shows.
    for chatty in _CHATTY:
        quiet = root.level > logging.DEBUG
        logging.getLogger(chatty).setLevel(max(root.level, logging.WARNING) if quiet else 0)
