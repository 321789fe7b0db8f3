"""The one cursor scheme of every list: a page ends at the sort key of its last item, and
the next page starts after it. A cursor is that key as JSON, base64url-encoded: opaque to
clients, and anything that does not decode to a key of the list's shape is a 400.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from schemas.errors import ErrorCode

from .models import Page
from .problems import ProblemError

R = TypeVar("R")


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, RecursionError):
        raise _invalid() from None


def _invalid() -> ProblemError:
    return ProblemError(ErrorCode.INVALID_CURSOR, "cursor is not valid")


def after_position(cursor: str | None) -> int:
    """The position a cursor of a list in log order names (-1: from the start)."""
    if cursor is None:
        return -1
    position = _decode(cursor)
    if type(position) is not int or position < 0:
        raise _invalid()
    return position


def after_created(cursor: str | None) -> tuple[datetime.datetime, str] | None:
    """The (created_at, id) a cursor of a list in creation order names."""
    if cursor is None:
        return None
    key = _decode(cursor)
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise _invalid()
    try:
        return datetime.datetime.fromisoformat(key[0]), key[1]
    except ValueError:
        raise _invalid() from None


def after_key(cursor: str | None, size: int) -> list[str] | None:
    """The sort key (``size`` strings) a cursor of a list in key order names."""
    if cursor is None:
        return None
    key = _decode(cursor)
    if not (isinstance(key, list) and len(key) == size and all(isinstance(k, str) for k in key)):
        raise _invalid()
    return key


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
