"""The providers' wire formats, as the local model server speaks them: requests decoded
into a ``ModelRequest``, and a scripted ``Reply`` encoded as an OpenAI chat completion or
an Anthropic message, whole or as server-sent events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas.events import MessageValue, ToolCallValue, UsageValue

from .base import ModelRequest, ToolSpec, parse_arguments
from .openai import encode_tool_call


@dataclass(frozen=True)
class Reply:
    """One scripted answer. With ``status`` >= 400 the server answers that HTTP error
    instead; ``stall_s`` waits before answering. Only streamed answers use the rest:
    ``cut_after`` drops the connection after that many text chunks; ``end_after`` ends
    the HTTP body properly after that many text chunks, but without the rest of the
    stream (as a misbehaving proxy might); ``chunk_delay_s`` paces the stream."""

    chunks: tuple[str, ...] = ()
    tool_calls: tuple[ToolCallValue, ...] = ()
    usage: UsageValue = field(default_factory=lambda: UsageValue(input_tokens=10, output_tokens=5))
    status: int = 200
    retry_after: float | None = None
    cut_after: int | None = None
    end_after: int | None = None
    stall_s: float = 0.0
    chunk_delay_s: float = 0.0


# -- reading requests -------------------------------------------------------------------


def decode_openai(body: dict[str, Any]) -> ModelRequest:
    messages = []
    for m in body.get("messages", []):
        calls = [
            ToolCallValue(
                id=c["id"],
                name=c["function"]["name"],
                arguments=parse_arguments(c["function"].get("arguments") or ""),
            )
            for c in m.get("tool_calls") or []
        ]
        messages.append(
            MessageValue(
                role=m["role"],
                content=m.get("content"),
                tool_calls=calls,
                tool_call_id=m.get("tool_call_id"),
            )
        )
    tools = [
        ToolSpec(
            name=t["function"]["name"],
            description=t["function"].get("description", ""),
            parameters=t["function"].get("parameters") or {"type": "object"},
        )
        for t in body.get("tools") or []
    ]
    return ModelRequest(model=body.get("model", ""), messages=messages, tools=tools)


def decode_anthropic(body: dict[str, Any]) -> ModelRequest:
    messages = []
    if body.get("system"):
        messages.append(MessageValue(role="system", content=body["system"]))
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            messages.append(MessageValue(role=m["role"], content=content))
            continue
        text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        calls = [
            ToolCallValue(id=b["id"], name=b["name"], arguments=b.get("input") or {})
            for b in content
            if b.get("type") == "tool_use"
        ]
        if text or calls:
            messages.append(MessageValue(role=m["role"], content=text or None, tool_calls=calls))
        messages.extend(
            MessageValue(
                role="tool", content=str(b.get("content", "")), tool_call_id=b["tool_use_id"]
            )
            for b in content
            if b.get("type") == "tool_result"
        )
    tools = [
        ToolSpec(
            name=t["name"],
            description=t.get("description", ""),
            parameters=t.get("input_schema") or {"type": "object"},
        )
        for t in body.get("tools") or []
    ]
    return ModelRequest(model=body.get("model", ""), messages=messages, tools=tools)


# -- writing answers --------------------------------------------------------------------

_OPENAI_ID = "chatcmpl-local"
_ANTHROPIC_ID = "msg_local"


def _openai_finish(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _openai_usage(usage: UsageValue) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def _anthropic_input(usage: UsageValue) -> dict[str, int]:
    """Anthropic counts cache reads apart from the (other) input tokens."""
    return {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }


def _anthropic_stop(reply: Reply) -> str:
    return "tool_use" if reply.tool_calls else "end_turn"


def openai_completion(reply: Reply, model: str) -> dict[str, Any]:
    """The body of a non-streamed OpenAI chat completion: the whole reply in one message."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks) or None}
    if reply.tool_calls:
        message["tool_calls"] = [encode_tool_call(call) for call in reply.tool_calls]
    return {
        "id": _OPENAI_ID,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _openai_finish(reply)}],
        "usage": _openai_usage(reply.usage),
    }


def anthropic_message(reply: Reply, model: str) -> dict[str, Any]:
    """The body of a non-streamed Anthropic message: text first, then one block per call."""
    text = "".join(reply.chunks)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in reply.tool_calls
    )
    return {
        "id": _ANTHROPIC_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop(reply),
        "stop_sequence": None,
        "usage": {**_anthropic_input(reply.usage), "output_tokens": reply.usage.output_tokens},
    }


def _halves(text: str) -> list[str]:
    """Arguments are streamed in two fragments, as real providers split them."""
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def openai_events(reply: Reply, model: str) -> list[str]:
    """The ``data:`` payloads of an OpenAI chat completion stream, chunks first."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps(
            {
                "id": _OPENAI_ID,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    out = [chunk({"role": "assistant", "content": text}) for text in reply.chunks]
    for index, call in enumerate(reply.tool_calls):
        first, second = _halves(json.dumps(call.arguments))
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": first},
                        }
                    ]
                }
            )
        )
        out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": second}}]}))
    out.append(chunk({}, _openai_finish(reply)))
    usage = _openai_usage(reply.usage)
    out.append(json.dumps({"id": _OPENAI_ID, "choices": [], "usage": usage}))
    out.append("[DONE]")
    return out


def anthropic_events(reply: Reply, model: str) -> list[tuple[str, str]]:
    """(event, data) of an Anthropic messages stream; text deltas come right after the
    first two events."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": _ANTHROPIC_ID,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "usage": {**_anthropic_input(reply.usage), "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for text in reply.chunks:
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    for index, call in enumerate(reply.tool_calls, start=1):
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": {},
                    },
                },
            )
        )
        for fragment in _halves(json.dumps(call.arguments)):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _anthropic_stop(reply)},
                "usage": {"output_tokens": reply.usage.output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return [(name, json.dumps(data)) for name, data in events]


def error_body(protocol: str, status: int) -> dict[str, Any]:
    message = f"scripted failure with HTTP {status}"
    if protocol == "anthropic":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": "server_error", "code": status}}


# -- the server -------------------------------------------------------------------------
