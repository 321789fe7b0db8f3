"""What a consumer retries, and how long it waits: an outage until it passes, a handler's
own failure a few times, a record too large for Kafka never. The loops run on tenacity,
with the waits of ``streams.backoff``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState

from .backoff import Backoff, retry_if, sleep_unless
from .publisher import RECORD_TOO_LARGE

log = logging.getLogger("streams.consumer")
T = TypeVar("T")


class StrayCancelledError(Exception):
    """A ``CancelledError`` out of a handler in a task nobody cancelled: a library's bug
    (aiokafka's consumer stop raised one while a fetch backed off, with the broker
    down), which would otherwise end the consumer's task, and its role's consuming,
    without a word. Taken for an outage."""


async def uncancelled(awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result; a ``CancelledError`` it raises while the running task is
    not being cancelled is raised as ``StrayCancelledError``."""
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise StrayCancelledError("cancelled by no one: taken for an outage") from exc


# Outages (of Kafka here; a handler's own, such as its database's, are given to the
# runtime): retried with backoff until they pass, never dead-lettered.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    KafkaError,
    TimeoutError,
    StrayCancelledError,
)
OUTAGE_BACKOFF = Backoff(first_s=0.2, max_s=5.0)
# A handler's own failure: the batch is handled this many times, then record by record.
MAX_ATTEMPTS = 3
FAILURE_BACKOFF = Backoff(first_s=0.05, max_s=5.0)


def retrying_outages(
    transient: tuple[type[Exception], ...],
    stopping: asyncio.Event,
    consumer: str,
    *,
    warning: str,
) -> AsyncRetrying:
    """Retries while the attempt fails with an outage (``transient``), until it passes
    (``OUTAGE_BACKOFF``), logging ``warning`` before each wait; raises any other failure
    at once. A wait ends when ``stopping`` is set: the caller checks it before each
    attempt."""
    return AsyncRetrying(
        wait=OUTAGE_BACKOFF,
        retry=retry_if(lambda exc: isinstance(exc, transient)),
        sleep=sleep_unless(stopping),
        before_sleep=_warn_outage(warning, transient, consumer),
        reraise=True,
    )


def retrying_batch(
    transient: tuple[type[Exception], ...], stopping: asyncio.Event, consumer: str
) -> AsyncRetrying:
    """Retries handling a batch: through an outage until it passes (``OUTAGE_BACKOFF``),
    after the handler's own failure until the batch has been attempted ``MAX_ATTEMPTS``
    times (``FAILURE_BACKOFF``), after a record too large for Kafka never (publishing it
    again cannot succeed). Raises the failure it gives up on. A wait ends when
    ``stopping`` is set: the caller checks it before each attempt."""

    def outage(state: RetryCallState) -> bool:
        return isinstance(_failure(state), transient)

    def wait(state: RetryCallState) -> float:
        backoff = OUTAGE_BACKOFF if outage(state) else FAILURE_BACKOFF
        return backoff.delay(state.attempt_number)

    def gives_up(state: RetryCallState) -> bool:
        return not outage(state) and state.attempt_number >= MAX_ATTEMPTS

    return AsyncRetrying(
        wait=wait,
        stop=gives_up,
        retry=retry_if(lambda exc: not isinstance(exc, RECORD_TOO_LARGE)),
        sleep=sleep_unless(stopping),
        before_sleep=_warn_outage("transient failure, retrying", transient, consumer),
        reraise=True,
    )


def _failure(state: RetryCallState) -> BaseException | None:
    return None if state.outcome is None else state.outcome.exception()


def _warn_outage(
    message: str, transient: tuple[type[Exception], ...], consumer: str
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = _failure(state)
        if isinstance(error, transient):
            extra = {"consumer": consumer, "error": repr(error), "delay": state.upcoming_sleep}
            log.warning(message, extra=extra)

    return before_sleep
