"""The provider-neutral shape of a model call.

The model worker builds a ``ModelRequest`` from a ``model_call.requested`` event, calls
``ModelProvider.complete`` and records the ``ModelResponse`` as a result event. Text
deltas are handed to ``on_delta`` as they stream, so they can be published to the
output topic before the call completes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None  # for role "tool": the call this answers


class ToolSpec(BaseModel):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ModelRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = Field(default_factory=list)
    max_tokens: int = 1024
    temperature: float | None = None


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class ModelResponse(BaseModel):
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"


OnDelta = Callable[[str], Awaitable[None]]


class ProviderError(Exception):
    """A failed model call. ``retryable`` errors (timeouts, 429, 5xx, a connection cut
    mid-stream) may be retried with backoff; others (400, 401, 404) may not."""

    def __init__(
        self, code: str, message: str, *, retryable: bool, usage: Usage | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.usage = usage  # tokens the provider billed before failing, if it said


class ModelProvider(Protocol):
    name: str

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        """One attempt at the call; raise ProviderError on failure."""
        ...
