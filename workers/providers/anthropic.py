"""Anthropic messages, streamed.

System messages become the top-level ``system``; tool results are ``tool_result``
blocks in a user message; consecutive messages of one role are merged, since the API
wants user and assistant to alternate. The stream is a sequence of typed events:
``message_start`` (input usage), content blocks (``text_delta``, ``input_json_delta``),
``message_delta`` (stop reason, output usage so far), and ``message_stop`` at the end;
an ``error`` event may arrive at any point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas.errors import ErrorCode
from schemas.events import MessageValue, ToolCallValue, UsageValue

from .base import ModelRequest, ModelResponse, OnDelta, ProviderError, call_headers, parse_arguments
from .transport import cut_off, stream_events

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096


def _blocks(message: MessageValue) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content or "",
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    )
    return blocks


def encode_request(request: ModelRequest) -> dict[str, Any]:
    system = "\n\n".join(m.content or "" for m in request.messages if m.role == "system")
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
        "stream": True,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


@dataclass
class _Block:
    type: str
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)


_ERRORS = {
    "rate_limit_error": (ErrorCode.MODEL_RATE_LIMITED, True),
    "overloaded_error": (ErrorCode.MODEL_UNAVAILABLE, True),
    "api_error": (ErrorCode.MODEL_UNAVAILABLE, True),
    "timeout_error": (ErrorCode.MODEL_TIMEOUT, True),
    "authentication_error": (ErrorCode.MODEL_AUTH_FAILED, False),
    "permission_error": (ErrorCode.MODEL_AUTH_FAILED, False),
}


class AnthropicMessages:
    """One base URL and key; ``complete`` makes one attempt (the caller retries)."""

    name = "anthropic"

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/v1/messages"
        self.headers = {"x-api-key": api_key, "anthropic-version": API_VERSION}

    async def complete(
        self, request: ModelRequest, on_delta: OnDelta | None = None
    ) -> ModelResponse:
        blocks: dict[int, _Block] = {}
        input_tokens = output_tokens = cached_tokens = 0
        stop_reason = "end_turn"
        try:
            async for _event, data in stream_events(
                self.client, self.url, call_headers(request, self.headers), encode_request(request)
            ):
                kind = (data or {}).get("type")
                if data is None or kind == "ping":
                    continue
                if kind == "error":
                    raise _stream_error(data.get("error") or {})
                if kind == "message_start":
                    usage = (data.get("message") or {}).get("usage") or {}
                    # Anthropic counts cache reads apart from input; ours are a part of it.
                    cached_tokens = int(usage.get("cache_read_input_tokens") or 0)
                    input_tokens = int(usage.get("input_tokens") or 0) + cached_tokens
                    output_tokens = int(usage.get("output_tokens") or 0)
                elif kind == "content_block_start":
                    start = data.get("content_block") or {}
                    blocks[int(data["index"])] = _Block(
                        type=start.get("type", ""),
                        id=start.get("id", ""),
                        name=start.get("name", ""),
                    )
                elif kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    block = blocks.setdefault(int(data["index"]), _Block(type="text"))
                    if delta.get("type") == "text_delta":
                        block.parts.append(delta.get("text", ""))
                        if on_delta is not None and delta.get("text"):
                            await on_delta(delta["text"])
                    elif delta.get("type") == "input_json_delta":
                        block.parts.append(delta.get("partial_json", ""))
                elif kind == "message_delta":
                    stop_reason = (data.get("delta") or {}).get("stop_reason") or stop_reason
                    output_tokens = int((data.get("usage") or {}).get("output_tokens") or 0)
                elif kind == "message_stop":
                    break
            else:
                raise cut_off("message_stop")
        except ProviderError as exc:
            exc.usage = exc.usage or UsageValue(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_tokens,
            )
            raise
        ordered = [blocks[i] for i in sorted(blocks)]
        return ModelResponse(
            text="".join("".join(b.parts) for b in ordered if b.type == "text"),
            tool_calls=[
                ToolCallValue(id=b.id, name=b.name, arguments=parse_arguments("".join(b.parts)))
                for b in ordered
                if b.type == "tool_use"
            ],
            usage=UsageValue(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_tokens,
            ),
            finish_reason=stop_reason,
        )


def _stream_error(error: dict[str, Any]) -> ProviderError:
    code, retryable = _ERRORS.get(str(error.get("type")), (ErrorCode.MODEL_BAD_REQUEST, False))
    return ProviderError(
        code, f"error mid-stream: {error.get('message', error)}", retryable=retryable
    )
