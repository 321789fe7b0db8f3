"""The built-in deterministic dev model: the whole agent loop runs offline with it.

The rule, applied to the last message of the request:

- a user message ``call TOOL {json arguments}`` (or ``call TOOL``) → one tool call to
  TOOL with those arguments (``{}`` without), whether or not the request offers TOOL
  (so tests can make a model call a tool it may not use); its id is derived from the
  request, so the same request gives the same call;
- a tool result → ``tool TOOL returned: <result>``;
- anything else → ``echo: <text of the last user message>``.

Text streams as one delta per word. Usage: input tokens = words in all messages,
output tokens = words in the answer. No sleeps, no network.
"""

from __future__ import annotations

import hashlib
import json

from schemas.events import ToolCallValue, UsageValue

from .base import ModelProvider, ModelRequest, ModelResponse, OnDelta


def _words(text: str | None) -> int:
    return len((text or "").split())


def answer(request: ModelRequest) -> ModelResponse:
    """The dev model's whole answer to a request (pure)."""
    usage_in = sum(_words(m.content) for m in request.messages)
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "user" and (last.content or "").startswith("call "):
        name, _, raw = (last.content or "")[5:].strip().partition(" ")
        if name:
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError:
                arguments = {"input": raw}
            digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:16]
            call = ToolCallValue(
                id=f"call_{digest}",
                name=name,
                arguments=arguments if isinstance(arguments, dict) else {},
            )
            return ModelResponse(
                tool_calls=[call],
                finish_reason="tool_calls",
                usage=UsageValue(input_tokens=usage_in, output_tokens=1),
            )
    if last is not None and last.role == "tool":
        called = next(
            (c.name for m in request.messages for c in m.tool_calls if c.id == last.tool_call_id),
            "tool",
        )
        text = f"tool {called} returned: {last.content}"
    else:
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        text = f"echo: {user}"
    return ModelResponse(
        text=text, usage=UsageValue(input_tokens=usage_in, output_tokens=_words(text))
    )


def pieces(text: str) -> list[str]:
    """How the dev model streams a text: word by word, each after the first with its
    leading space, so the pieces join back to the text."""
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)] if text else []


class DevModel(ModelProvider):
    name = "dev"

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        response = answer(request)
        if on_delta is not None:
            for piece in pieces(response.text):
                await on_delta(piece)
        return response
