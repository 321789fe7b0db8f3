"""Timeouts and retries around one provider: retryable errors only, exponential backoff
with jitter honouring ``Retry-After`` (``streams.backoff``), a bounded number of
attempts, and the usage of every attempt counted once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from tenacity import AsyncRetrying, stop_after_attempt

from schemas.errors import ErrorCode
from schemas.events import UsageValue
from streams.backoff import Backoff, retry_if

from .base import ModelProvider, ModelRequest, ModelResponse, ProviderError

# Called with the attempt number (from 1) and a piece of text.
OnAttemptDelta = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0

    @property
    def backoff(self) -> Backoff:
        """The waits between attempts: from ``backoff_base_s`` doubling up to
        ``backoff_max_s``, with jitter; a ``Retry-After`` the provider sent instead, up
        to ``backoff_max_s``."""
        return Backoff(
            first_s=self.backoff_base_s,
            max_s=self.backoff_max_s,
            jitter=True,
            asked=_retry_after,
        )

    def retrying(self) -> AsyncRetrying:
        """Attempts until one succeeds, a failure is not retryable, or ``max_retries``
        retries have failed; the last failure is raised."""
        return AsyncRetrying(
            wait=self.backoff,
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
            reraise=True,
        )


def _retry_after(error: BaseException) -> float | None:
    return error.retry_after if isinstance(error, ProviderError) else None


@dataclass(frozen=True)
class Outcome:
    response: ModelResponse
    usage: UsageValue  # summed over every attempt, failed ones included
    attempts: int


async def complete_with_retries(
    provider: ModelProvider,
    request: ModelRequest,
    on_delta: OnAttemptDelta | None,
    policy: RetryPolicy,
) -> Outcome:
    """Raises the last ProviderError (with the summed usage) when retries run out. Text
    streamed by a failed attempt stays streamed: ``on_delta`` learns the attempt of each
    piece, so a subscriber can drop an abandoned attempt's text."""
    spent = UsageValue()
    try:
        async for attempt in policy.retrying():
            with attempt:
                number = attempt.retry_state.attempt_number
                try:
                    async with asyncio.timeout(policy.timeout_s):
                        response = await provider.complete(
                            request, None if on_delta is None else partial(on_delta, number)
                        )
                except TimeoutError:
                    raise ProviderError(
                        ErrorCode.MODEL_TIMEOUT,
                        f"no answer within {policy.timeout_s} s",
                        retryable=True,
                    ) from None
                except ProviderError as exc:
                    if exc.usage is not None:
                        spent = spent + exc.usage
                    raise
                total = spent + response.usage
                return Outcome(response.model_copy(update={"usage": total}), total, number)
    except ProviderError as error:
        error.usage = spent
        raise
    raise AssertionError("tenacity ends an attempt loop by returning or raising")
