"""What a consumer retries, with plain values: an outage until it passes, at waits
doubling to 5 s; a handler's own failure until the batch was attempted ``MAX_ATTEMPTS``
times; a record too large for Kafka never; a wait cut short when stopping; and a
cancellation nobody asked for taken for an outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from tenacity import AsyncRetrying

from streams.retries import (
    MAX_ATTEMPTS,
    TRANSIENT_ERRORS,
    StrayCancelledError,
    retrying_batch,
    retrying_outages,
    uncancelled,
)


class DatabaseDown(Exception):
    """A handler's own outage, given to the runtime as transient."""


TRANSIENT = (*TRANSIENT_ERRORS, DatabaseDown)


class Script:
    """An attempt that fails with the scripted errors, one per call, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def run(retrying: AsyncRetrying, attempt: Script) -> tuple[str | Exception, list[float]]:
    """What ``retrying`` made of ``attempt`` (its result, or the failure it gave up on)
    and the waits it took, without waiting them."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    try:
        return await retrying.copy(sleep=sleep)(attempt), slept
    except Exception as exc:
        return exc, slept


def outage_loop(stopping: asyncio.Event | None = None) -> AsyncRetrying:
    return retrying_outages(TRANSIENT, stopping or asyncio.Event(), "test", warning="outage")


def batch_loop(stopping: asyncio.Event | None = None) -> AsyncRetrying:
    return retrying_batch(TRANSIENT, stopping or asyncio.Event(), "test")


async def test_an_outage_is_retried_until_it_passes_at_waits_doubling_to_5_s() -> None:
    for loop in (outage_loop, batch_loop):
        attempt = Script(*(KafkaConnectionError() for _ in range(8)), DatabaseDown())
        result, slept = await run(loop(), attempt)
        assert result == "done"
        assert attempt.calls == 10
        assert slept == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]


async def test_preparing_gives_up_at_once_on_a_failure_that_is_not_an_outage() -> None:
    attempt = Script(KafkaConnectionError(), ValueError("bad state"))
    result, slept = await run(outage_loop(), attempt)
    assert isinstance(result, ValueError)
    assert (attempt.calls, slept) == (2, [0.2])


async def test_a_failing_handler_is_attempted_max_attempts_times() -> None:
    attempt = Script(*(ValueError(n) for n in range(10)))
    result, slept = await run(batch_loop(), attempt)
    assert isinstance(result, ValueError)
    assert result.args == (MAX_ATTEMPTS - 1,)
    assert attempt.calls == MAX_ATTEMPTS == 3
    assert slept == [0.05, 0.1]


async def test_a_handler_that_fails_fewer_times_succeeds() -> None:
    attempt = Script(ValueError(), ValueError())
    assert await run(batch_loop(), attempt) == ("done", [0.05, 0.1])


async def test_a_record_too_large_is_never_retried() -> None:
    attempt = Script(MessageSizeTooLargeError())
    result, slept = await run(batch_loop(), attempt)
    assert isinstance(result, MessageSizeTooLargeError)
    assert (attempt.calls, slept) == (1, [])


async def test_attempts_are_counted_across_outages_and_failures() -> None:
    """As before tenacity: a handler's failure after outages gives up once the batch has
    been attempted ``MAX_ATTEMPTS`` times in all."""
    attempt = Script(KafkaConnectionError(), ValueError(), ValueError())
    result, slept = await run(batch_loop(), attempt)
    assert isinstance(result, ValueError)
    assert (attempt.calls, slept) == (3, [0.2, 0.1])


@pytest.mark.parametrize("loop", [outage_loop, batch_loop], ids=["outages", "batch"])
async def test_a_wait_ends_as_soon_as_the_runtime_is_stopping(
    loop: Callable[[asyncio.Event], AsyncRetrying],
) -> None:
    """The runtime checks ``stopping`` before each attempt; the wait before it must not
    hold a stop back (here a wait of 30 s)."""
    stopping = asyncio.Event()
    attempts = 0
    started = time.monotonic()
    async for attempt in loop(stopping).copy(wait=lambda _state: 30.0):
        with attempt:
            if stopping.is_set():
                break
            attempts += 1
            asyncio.get_running_loop().call_later(0.05, stopping.set)
            raise KafkaConnectionError()
    assert attempts == 1
    assert time.monotonic() - started < 10.0


async def test_a_cancellation_of_the_task_goes_through_and_a_stray_one_is_an_outage() -> None:
    async def stray() -> None:
        raise asyncio.CancelledError  # what aiokafka's stop raised, unasked

    with pytest.raises(StrayCancelledError):
        await uncancelled(stray())
    assert issubclass(StrayCancelledError, TRANSIENT_ERRORS)

    task = asyncio.create_task(uncancelled(asyncio.sleep(10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
