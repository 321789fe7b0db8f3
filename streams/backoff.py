"""How long to wait before trying again: the one backoff policy of every retry loop.

A consumer retries an outage (Kafka, Postgres) until it passes and a failing handler a
few times, the waiter reconnects its listener, the model worker retries a provider's
retryable errors. Each states how its waits grow as a ``Backoff``; the loops that retry
an attempt until it succeeds run on tenacity (``AsyncRetrying``), which owns the
attempts, the stop and retry conditions and the sleeping, with a ``Backoff`` as its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import RetryCallState, retry_base, retry_if_exception

# 2**64 times any first wait is past any cap: computing further would overflow a float.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential waits: ``first_s`` after the first failure, twice as long after each
    next one, never more than ``max_s``. With ``jitter`` each wait is drawn from its
    upper half (between half of it and all of it), so that callers failing together do
    not retry together. ``asked`` reads the wait a failure asks for itself (a provider's
    ``Retry-After``), which is honoured up to ``max_s``, without jitter.

    A ``Backoff`` is a tenacity wait strategy: pass it as ``AsyncRetrying(wait=...)``."""

    first_s: float
    max_s: float
    jitter: bool = False
    asked: Callable[[BaseException], float | None] | None = None

    def delay(
        self,
        failures: int,
        error: BaseException | None = None,
        *,
        draw: Callable[[], float] = random.random,
    ) -> float:
        """The wait after ``failures`` failures in a row (from 1), the last one ``error``;
        ``draw`` gives the jitter's random number in [0, 1)."""
        if error is not None and self.asked is not None:
            wanted = self.asked(error)
            if wanted is not None:
                return min(wanted, self.max_s)
        delay = min(self.max_s, self.first_s * 2.0 ** min(failures - 1, _MAX_DOUBLINGS))
        return delay * (0.5 + draw() / 2) if self.jitter else delay

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = None if outcome is None else outcome.exception()
        return self.delay(retry_state.attempt_number, error)


def retry_if(accepts: Callable[[Exception], bool]) -> retry_base:
    """Retry after an ``Exception`` that ``accepts`` takes; never after a cancellation or
    an exit (a ``BaseException`` that is not an ``Exception``), which go through."""
    return retry_if_exception(lambda exc: isinstance(exc, Exception) and accepts(exc))


def sleep_unless(stopping: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    """A tenacity sleep that ends as soon as ``stopping`` is set, so that a loop which
    checks ``stopping`` before each attempt stops promptly rather than after its wait."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stopping.wait()

    return sleep
