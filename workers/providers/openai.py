"""OpenAI-compatible chat completions, streamed: OpenAI itself, and by base URL vLLM,
Ollama, llama.cpp's server, OpenRouter and anything else speaking the protocol.

Text arrives as ``choices[0].delta.content``; tool calls arrive in pieces keyed by
``index`` (id and name first, then the arguments as JSON text in fragments); usage comes
in a last chunk with no choices when ``stream_options.include_usage`` is set. The stream
ends with ``data: [DONE]``; a stream that stops before it was cut off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas.errors import ErrorCode
from schemas.events import MessageValue, ToolCallValue, UsageValue

from .base import ModelRequest, ModelResponse, OnDelta, ProviderError, call_headers, parse_arguments
from .transport import cut_off, stream_events


def encode_tool_call(call: ToolCallValue) -> dict[str, Any]:
    """A tool call as an assistant message carries it (arguments as JSON text)."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }


def encode_message(message: MessageValue) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    encoded: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        encoded["tool_calls"] = [encode_tool_call(call) for call in message.tool_calls]
    return encoded


def encode_request(request: ModelRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [encode_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIChat:
    """One base URL and key; ``complete`` makes one attempt (the caller retries)."""

    name = "openai"

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        text: list[str] = []
        calls: dict[int, _PartialCall] = {}
        usage = UsageValue()
        finish_reason = "stop"
        try:
            async for _event, chunk in stream_events(
                self.client, self.url, call_headers(request, self.headers), encode_request(request)
            ):
                if chunk is None:  # "[DONE]"
                    break
                if "error" in chunk:
                    raise _stream_error(chunk["error"])
                if chunk.get("usage"):
                    reported = chunk["usage"]
                    details = reported.get("prompt_tokens_details") or {}
                    usage = UsageValue(
                        input_tokens=int(reported.get("prompt_tokens") or 0),
                        output_tokens=int(reported.get("completion_tokens") or 0),
                        cached_input_tokens=int(details.get("cached_tokens") or 0),
                    )
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        if on_delta is not None:
                            await on_delta(delta["content"])
                    for piece in delta.get("tool_calls") or []:
                        partial = calls.setdefault(int(piece.get("index", 0)), _PartialCall())
                        partial.id = piece.get("id") or partial.id
                        function = piece.get("function") or {}
                        partial.name = function.get("name") or partial.name
                        partial.arguments.append(function.get("arguments") or "")
                    finish_reason = choice.get("finish_reason") or finish_reason
            else:
                raise cut_off("data: [DONE]")
        except ProviderError as exc:
            exc.usage = exc.usage or usage
            raise
        return ModelResponse(
            text="".join(text),
            tool_calls=[
                ToolCallValue(
                    id=c.id or f"{request.call_id or 'call'}-{i}",
                    name=c.name,
                    arguments=parse_arguments("".join(c.arguments)),
                )
                for i, c in sorted(calls.items())
            ],
            usage=usage,
            finish_reason=finish_reason,
        )


def _stream_error(error: Any) -> ProviderError:
    """An error object sent in the stream after it started (the status was 200)."""
    detail = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    return ProviderError(ErrorCode.MODEL_UNAVAILABLE, f"error mid-stream: {detail}", retryable=True)
