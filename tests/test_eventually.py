"""The one way tests wait: the value once it comes, a failure that says what it waited
for and what it saw, and an assertion in a probe read as not yet."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.eventually import NotYetError, eventually, eventually_async


def test_the_first_truthy_value_is_returned() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "done", "three calls", poll=0) == "done"


def test_past_the_deadline_it_fails_saying_what_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(NotYetError, match=r"waiting for the answer; last seen: \[\]"):
        eventually(list, "the answer", timeout=0.2)
    assert time.monotonic() - started >= 0.2


def test_an_assertion_in_the_probe_is_not_yet_and_is_what_a_failure_shows() -> None:
    calls = itertools.count()

    def probe() -> int:
        n = next(calls)
        assert n >= 2, f"only {n} calls"
        return n

    assert eventually(probe, "a third call", poll=0) == 2

    def never() -> bool:
        raise AssertionError("the status is still running")

    with pytest.raises(NotYetError, match="the status is still running"):
        eventually(never, "a status", timeout=0)


async def test_the_async_form_waits_the_same_way() -> None:
    counter = itertools.count()

    async def probe() -> int | None:
        n = next(counter)
        return n if n >= 2 else None

    assert await eventually_async(probe, "a third call", poll=0) == 2
    with pytest.raises(NotYetError, match="nothing"):
        await eventually_async(probe_none, "nothing", timeout=0.1)


async def probe_none() -> None:
    return None
