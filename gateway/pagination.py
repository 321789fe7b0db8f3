"""The one cursor scheme of every list: a page ends at the sort key of its last item, and
the next page starts after it. A cursor is that key as JSON, base64url-encoded: opaque to
clients. Each list declares its key's shape (``Key``) with the types of ``fields``, and a
cursor that is not exactly a key of that shape is a 400 before any query runs.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from schemas.errors import ErrorCode

from .fields import Id, Instant, LogPosition
from .models import Page
from .problems import ProblemError

K = TypeVar("K")
R = TypeVar("R")

# Far above any key a page gives (six stored texts, escaped), far below a request line.
MAX_CURSOR = 16 * 1024


class Key(Generic[K]):
    """The sort key of one list, as its cursors carry it: ``shape`` is a type (a tuple
    for a key of several columns) that the key must be, in strict JSON."""

    def __init__(self, shape: Any) -> None:
        self._adapter: TypeAdapter[K] = TypeAdapter(shape)

    def after(self, cursor: str | None) -> K | None:
        """The key ``cursor`` names (None: from the start); INVALID_CURSOR unless it is
        one of this list's."""
        if cursor is None:
            return None
        if len(cursor) > MAX_CURSOR or not cursor.isascii():
            raise _invalid()
        try:
            return self._adapter.validate_json(base64.urlsafe_b64decode(cursor), strict=True)
        except ValueError:  # not base64, not JSON, or a key of another shape
            raise _invalid() from None


@functools.cache
def key_of(*parts: Any) -> Key[tuple[Any, ...]]:
    """The key of a list sorted by columns chosen per request (usage by its groups)."""
    return Key(tuple.__class_getitem__(parts))


# A list in log order (a session's messages): the last item's position.
BY_POSITION: Key[int] = Key(LogPosition)
# A list in order of time, then id (agents, sessions, usage events): both.
BY_TIME: Key[tuple[datetime.datetime, str]] = Key(tuple[Instant, Id])

# A server-sent event's id, which a client sends back as ``Last-Event-ID``.
_EVENT_ID = re.compile(r"([0-9]{1,9}):([0-9]{1,19})")


def after_event(last_event_id: str) -> tuple[int, int]:
    """The (partition, offset) of a server-sent event's id, ``partition:offset``."""
    found = _EVENT_ID.fullmatch(last_event_id)
    if found is None or int(found[2]) > 2**63 - 1:
        raise ProblemError(ErrorCode.INVALID_CURSOR, "Last-Event-ID is not partition:offset")
    return int(found[1]), int(found[2])


def _invalid() -> ProblemError:
    return ProblemError(ErrorCode.INVALID_CURSOR, "cursor is not one this list gave")


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def page(
    rows: Sequence[R], limit: int, key: Callable[[R], Any], public: Callable[[R], Any]
) -> Page:
    """A page of the first ``limit`` rows as ``public`` shows them. Rows are fetched as
    ``limit + 1``: one more tells that there is a next page, after the last row's key."""
    shown = rows[:limit]
    next_cursor = encode_cursor(key(shown[-1])) if len(rows) > limit else None
    return Page(items=[public(row) for row in shown], next_cursor=next_cursor)


def by_created(id_field: str) -> Callable[[Any], list[str]]:
    """The sort key of a list in creation order: (created_at, id)."""
    return lambda item: [item.created_at.isoformat(), getattr(item, id_field)]
