"""The one backoff policy, with plain values: waits grow, are capped, jitter stays in its
half, a wait the failure asks for is honoured up to the cap; as tenacity's wait it gives
those waits; a retry never swallows a cancellation; a wait ends when stopping."""

from __future__ import annotations

import asyncio
import time

import pytest
from tenacity import AsyncRetrying, stop_after_attempt

from streams.backoff import Backoff, retry_if, sleep_unless


class AskedFor(Exception):
    def __init__(self, wait_s: float | None) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s


def asked(error: BaseException) -> float | None:
    return error.wait_s if isinstance(error, AskedFor) else None


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.2, max_s=5.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_an_outage_of_any_length_waits_the_cap() -> None:
    """An outage retried until it passes counts thousands of failures; 0.1 * 2**1024 once
    overflowed a float."""
    assert Backoff(first_s=0.1, max_s=5.0).delay(100_000) == 5.0


def test_jitter_draws_from_the_upper_half_of_each_wait() -> None:
    backoff = Backoff(first_s=0.5, max_s=20.0, jitter=True)
    assert backoff.delay(3, draw=lambda: 0.0) == 1.0
    assert backoff.delay(3, draw=lambda: 0.5) == 1.5
    assert backoff.delay(9, draw=lambda: 0.0) == 10.0  # half of the cap
    waits = [backoff.delay(3) for _ in range(200)]
    assert all(1.0 <= wait < 2.0 for wait in waits)
    assert len(set(waits)) > 1


def test_a_wait_the_failure_asks_for_is_honoured_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(first_s=0.5, max_s=20.0, jitter=True, asked=asked)
    assert backoff.delay(1, AskedFor(7.0), draw=lambda: 0.0) == 7.0
    assert backoff.delay(1, AskedFor(3600.0)) == 20.0
    assert backoff.delay(2, AskedFor(0.0)) == 0.0
    assert backoff.delay(2, AskedFor(None), draw=lambda: 0.0) == 0.5  # asks nothing
    assert backoff.delay(2, ValueError(), draw=lambda: 0.0) == 0.5


async def test_as_tenacitys_wait_it_gives_those_waits() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise AskedFor(1.5)
        if calls < 7:
            raise AskedFor(None)
        return "done"

    retrying = AsyncRetrying(
        wait=Backoff(first_s=0.2, max_s=5.0, asked=asked), sleep=sleep, reraise=True
    )
    assert await retrying(flaky) == "done"
    assert slept == [0.2, 0.4, 1.5, 1.6, 3.2, 5.0]


async def test_a_retry_takes_the_failures_it_accepts_and_lets_a_cancellation_through() -> None:
    async def no_wait(seconds: float) -> None:
        pass

    def retrying() -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if(lambda exc: isinstance(exc, OSError)),
            stop=stop_after_attempt(5),
            sleep=no_wait,
            reraise=True,
        )

    for failure, calls_expected in (
        (OSError(), 5),
        (ValueError(), 1),
        (asyncio.CancelledError(), 1),
    ):
        calls = 0

        async def failing(failure: BaseException = failure) -> None:
            nonlocal calls
            calls += 1
            raise failure

        with pytest.raises(type(failure)):
            await retrying()(failing)
        assert calls == calls_expected, failure


async def test_a_wait_ends_when_stopping_is_set() -> None:
    stopping = asyncio.Event()
    sleep = sleep_unless(stopping)
    started = time.monotonic()
    await sleep(0.05)
    assert time.monotonic() - started >= 0.05

    asyncio.get_running_loop().call_later(0.05, stopping.set)
    started = time.monotonic()
    await sleep(30.0)
    assert time.monotonic() - started < 5.0
    await sleep(30.0)  # already stopping: no wait at all
