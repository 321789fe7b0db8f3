"""Retries around a provider, with plain values: only retryable errors, waits doubling
with jitter, a ``Retry-After`` honoured up to the cap, attempts bounded, and the usage of
every attempt counted once. (``test_adapters`` retries against a real HTTP server.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from tenacity import AsyncRetrying

from schemas.errors import ErrorCode
from schemas.events import MessageValue, UsageValue
from workers.providers.base import ModelRequest, ModelResponse, OnDelta, ProviderError
from workers.providers.retry import RetryPolicy, complete_with_retries

REQUEST = ModelRequest(model="m", messages=[MessageValue(role="user", content="hi")])


def unavailable(*, retry_after: float | None = None, tokens: int = 0) -> ProviderError:
    return ProviderError(
        ErrorCode.MODEL_UNAVAILABLE,
        "HTTP 503",
        retryable=True,
        retry_after=retry_after,
        usage=UsageValue(input_tokens=tokens) if tokens else None,
    )


@dataclass
class Scripted:
    """A provider that answers with the scripted errors, one per call, then succeeds;
    a ``None`` in the script is a call that never answers."""

    script: list[ProviderError | None]
    name: str = "scripted"
    calls: int = 0

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        self.calls += 1
        if self.script:
            error = self.script.pop(0)
            if error is None:
                await asyncio.sleep(60)  # cut short by the policy's timeout
                raise AssertionError("the call was not timed out")
            raise error
        return ModelResponse(text="answer", usage=UsageValue(input_tokens=1, output_tokens=2))


@dataclass(frozen=True)
class Recorded(RetryPolicy):
    """The policy, with its waits recorded instead of waited."""

    slept: list[float] = field(default_factory=list)

    def retrying(self) -> AsyncRetrying:
        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        return super().retrying().copy(sleep=sleep)


async def complete(provider: Scripted, policy: RetryPolicy) -> ModelResponse | ProviderError:
    try:
        return (await complete_with_retries(provider, REQUEST, None, policy)).response
    except ProviderError as exc:
        return exc


def test_waits_double_from_the_base_with_jitter_up_to_the_cap() -> None:
    backoff = RetryPolicy(backoff_base_s=0.5, backoff_max_s=20.0).backoff
    assert [backoff.delay(n, draw=lambda: 0.0) for n in range(1, 8)] == [
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
    ]
    assert all(0.5 <= backoff.delay(2) <= 1.0 for _ in range(100))


def test_a_retry_after_is_honoured_up_to_the_cap() -> None:
    backoff = RetryPolicy(backoff_max_s=20.0).backoff
    assert backoff.delay(1, unavailable(retry_after=3.0)) == 3.0
    assert backoff.delay(1, unavailable(retry_after=3600.0)) == 20.0


async def test_retryable_errors_are_retried_and_every_attempts_usage_is_counted() -> None:
    policy = Recorded(max_retries=3, backoff_base_s=1.0, backoff_max_s=20.0)
    provider = Scripted([unavailable(tokens=5), unavailable(retry_after=7.0, tokens=3)])
    outcome = await complete_with_retries(provider, REQUEST, None, policy)
    assert (outcome.attempts, provider.calls) == (3, 3)
    assert outcome.usage == UsageValue(input_tokens=9, output_tokens=2)
    assert outcome.response.usage == outcome.usage
    assert 0.5 <= policy.slept[0] <= 1.0  # the first wait, jittered
    assert policy.slept[1] == 7.0  # as the provider asked


async def test_attempts_are_bounded_and_the_last_error_carries_the_usage() -> None:
    policy = Recorded(max_retries=2, backoff_base_s=0.1)
    provider = Scripted([unavailable(tokens=1) for _ in range(5)])
    failed = await complete(provider, policy)
    assert isinstance(failed, ProviderError)
    assert provider.calls == 3
    assert failed.usage == UsageValue(input_tokens=3)
    assert len(policy.slept) == 2


async def test_an_error_that_is_not_retryable_is_raised_at_once() -> None:
    policy = Recorded()
    refused = ProviderError(ErrorCode.MODEL_BAD_REQUEST, "HTTP 400", retryable=False)
    provider = Scripted([refused])
    assert await complete(provider, policy) is refused
    assert (provider.calls, policy.slept) == (1, [])


async def test_a_call_that_does_not_answer_in_time_is_retried_as_a_timeout() -> None:
    policy = Recorded(max_retries=0, timeout_s=0.05)
    failed = await complete(Scripted([None]), policy)
    assert isinstance(failed, ProviderError)
    assert (failed.code, failed.retryable) == (ErrorCode.MODEL_TIMEOUT, True)
    assert failed.usage == UsageValue()


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_max_retries_is_how_many_attempts_follow_the_first(max_retries: int) -> None:
    provider = Scripted([unavailable() for _ in range(10)])
    await complete(provider, Recorded(max_retries=max_retries))
    assert provider.calls == max_retries + 1
