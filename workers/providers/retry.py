"""Timeouts and retries around one provider: retryable errors only, exponential backoff
with jitter, and the usage of every attempt counted once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from schemas.errors import ErrorCode
from schemas.events import UsageValue

from .base import ModelProvider, ModelRequest, ModelResponse, ProviderError

# Called with the attempt number (from 1) and a piece of text.
OnAttemptDelta = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0


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
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(policy.timeout_s):
                response = await provider.complete(
                    request, None if on_delta is None else partial(on_delta, attempt)
                )
        except TimeoutError:
            error = ProviderError(
                ErrorCode.MODEL_TIMEOUT, f"no answer within {policy.timeout_s} s", retryable=True
            )
        except ProviderError as exc:
            error = exc
        else:
            total = spent + response.usage
            return Outcome(response.model_copy(update={"usage": total}), total, attempt)
        if error.usage is not None:
            spent = spent + error.usage
        if not error.retryable or attempt > policy.max_retries:
            error.usage = spent
            raise error
        if error.retry_after is not None:
            await asyncio.sleep(min(error.retry_after, policy.backoff_max_s))
            continue
        delay = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))
