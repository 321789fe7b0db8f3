"""Waiting in tests for what happens elsewhere (another process, the broker, a projector):
one way, so that every wait has a deadline, a short poll, and a failure that says what
it waited for and what it last saw.

``eventually(probe, what)`` calls ``probe`` until it returns something truthy, and
returns that; past the deadline it fails with ``what`` and the last value. A probe that
raises ``AssertionError`` counts as not yet (its message is kept for the failure), so
a probe may assert what it expects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
POLL_S = 0.05


class NotYetError(AssertionError):
    """What ``eventually`` raises past its deadline."""


def _failure(what: str, timeout: float, last: object) -> NotYetError:
    return NotYetError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


def eventually(
    probe: Callable[[], T],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = POLL_S,
) -> T:
    """``probe()`` once it is truthy, polled every ``poll`` seconds for ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        time.sleep(poll)


async def eventually_async(
    probe: Callable[[], Awaitable[T]],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = POLL_S,
) -> T:
    """``await probe()`` once it is truthy, polled every ``poll`` seconds for ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: object = await probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        await asyncio.sleep(poll)
