"""Structured JSON logs for every agentlog process, with secrets redacted and repeats
rate-limited.

Redaction is one mechanism for the whole process: code that learns a secret value (a
tool's secret header, a provider key) registers it with ``add_secrets``, and
``redact`` blots every registered value, bearer token and API key out of a text. The log
handler applies it to every record (message, extra fields) and to exception text; every
other place that records a reason (dead-letter headers, failure details in events)
calls ``redact`` on it.

A dependency that is down makes clients fail, and log it, many times a second (aiokafka
wrote 57 MB in 7 minutes with the broker down): the handler lets a warning or error
through once per ``REPEAT_INTERVAL_S`` per logger and message, and the next one it lets
through counts those it dropped (``suppressed``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from pythonjsonlogger.json import JsonFormatter

_CHATTY = ("aiokafka", "alembic", "uvicorn.access", "httpx")
REDACTED = "[REDACTED]"
# Values shorter than this are not registered: blotting them would garble ordinary text.
_MIN_SECRET_LENGTH = 4
_ALWAYS = re.compile(r"(?i)(?<=bearer )[^\s'\",]+|\bal_[A-Za-z0-9_-]{16,}")


class Redactor:
    """The secret values this process knows of, in every form text may show them."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *values: str) -> None:
        forms = set()
        for value in values:
            if len(value) < _MIN_SECRET_LENGTH:
                continue
            # As written, as repr() and tracebacks escape it, and as ASCII JSON does.
            forms |= {
                value,
                repr(value)[1:-1],
                value.encode("unicode_escape").decode(),
                value.encode("ascii", "backslashreplace").decode(),
            }
        with self._lock:
            if forms - self._forms:
                self._forms |= forms
                alternatives = sorted(self._forms, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return _ALWAYS.sub(REDACTED, text)


_REDACTOR = Redactor()
add_secrets = _REDACTOR.add
redact = _REDACTOR.redact

# The attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Redacts a record's message and its ``extra`` fields before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_FIELDS:
                setattr(record, name, _redact_value(value))
        return True


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return redact(str(value))


REPEAT_INTERVAL_S = 10.0
# Distinct messages tracked at once; one pushed out forgets what it dropped.
_TRACKED_MESSAGES = 1024


@dataclass(slots=True)
class _Repeats:
    until: float  # when the next record of the message may pass
    dropped: int = 0


class RepeatFilter(logging.Filter):
    """Lets a record at ``level`` or above through at most once per ``interval_s`` for
    the same logger, level and message (its text with the arguments in); the next one
    through carries how many were dropped meanwhile as ``suppressed``. Below ``level``
    everything passes: at DEBUG one asked to see it all."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.level = level
        self._seen: LRUCache[tuple[str, int, str], _Repeats] = LRUCache(_TRACKED_MESSAGES)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now < seen.until:
                seen.dropped += 1
                return False
            self._seen[key] = _Repeats(now + self.interval_s)
        if seen is not None and seen.dropped:
            record.suppressed = seen.dropped
        return True


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines whose exception and stack text are redacted like messages."""

    def formatException(self, ei: Any) -> Any:
        return _redact_value(super().formatException(ei))

    def formatStack(self, stack_info: str) -> Any:
        return _redact_value(super().formatStack(stack_info))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())  # before redaction: it keys on the message
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        RedactingJsonFormatter(
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
