"""The provider-neutral shape of a model call.

Messages, tool calls and usage are the events' own values (``schemas.events``). The
model worker builds a ``ModelRequest`` from a ``model_call.requested`` event, calls
``ModelProvider.complete`` and records the ``ModelResponse`` as a result event. Text
deltas are handed to ``on_delta`` as they stream, so they can be published to the
output topic before the call completes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, Field

from schemas.errors import ErrorCode
from schemas.events import MessageValue, ToolCallValue, UsageValue


class ToolSpec(BaseModel):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ModelRequest(BaseModel):
    model: str = Field(description="the provider's own model name (no `openai:` prefix)")
    messages: list[MessageValue]
    tools: list[ToolSpec] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, description="None: the provider's default")
    temperature: float | None = None
    call_id: str | None = Field(
        default=None, description="sent as X-Agentlog-Call-Id, so a retried call is recognisable"
    )


CALL_ID_HEADER = "X-Agentlog-Call-Id"


def call_headers(request: ModelRequest, headers: dict[str, str]) -> dict[str, str]:
    """A provider's own headers, plus the call id when the request has one."""
    return {**headers, CALL_ID_HEADER: request.call_id} if request.call_id else headers


class ModelResponse(BaseModel):
    text: str = ""
    tool_calls: list[ToolCallValue] = Field(default_factory=list)
    usage: UsageValue = Field(default_factory=UsageValue)
    finish_reason: str = "stop"


OnDelta = Callable[[str], Awaitable[None]]

# Arguments a model produced that are not a JSON object are kept under this key, so the
# tool's schema check rejects them (TOOL_SCHEMA_INVALID) and the model sees why.
UNPARSED_ARGUMENTS = "_unparsed_arguments"


def parse_arguments(raw: str) -> dict[str, Any]:
    """Tool call arguments from the JSON text a model streamed."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {UNPARSED_ARGUMENTS: raw}
    return parsed if isinstance(parsed, dict) else {UNPARSED_ARGUMENTS: raw}


class ProviderError(Exception):
    """A failed model call. ``retryable`` errors (timeouts, 429, 5xx, a connection cut
    mid-stream) may be retried with backoff; others (400, 401, 404) may not."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool,
        usage: UsageValue | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.usage = usage  # tokens the provider billed before failing, if it said
        self.retry_after = retry_after  # seconds the provider asked us to wait


def error_for_status(status: int, body: str, retry_after: str | None) -> ProviderError:
    """The ProviderError for an HTTP error answer, as every provider protocol means it."""
    detail = f"HTTP {status}: {body[:500]}"
    wait = _seconds(retry_after)
    if status == 429:
        return ProviderError(ErrorCode.MODEL_RATE_LIMITED, detail, retryable=True, retry_after=wait)
    if status in (401, 403):
        return ProviderError(ErrorCode.MODEL_AUTH_FAILED, detail, retryable=False)
    if status in (408, 409) or status >= 500:
        return ProviderError(ErrorCode.MODEL_UNAVAILABLE, detail, retryable=True, retry_after=wait)
    return ProviderError(ErrorCode.MODEL_BAD_REQUEST, detail, retryable=False)


def _seconds(retry_after: str | None) -> float | None:
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class ModelProvider(Protocol):
    name: str

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        """One attempt at the call; raise ProviderError on failure."""
        ...
