"""A local model server speaking the providers' own wire protocols, for offline use and tests.

It serves OpenAI chat completions (``POST /v1/chat/completions``) and Anthropic messages
(``POST /v1/messages``), streamed as server-sent events when the request asks for
``stream`` and otherwise as one JSON body, exactly as the real APIs answer. By default
it answers with the dev model's rule (``dev.answer``), so an agent on
``openai:<anything>`` pointed here behaves like one on ``dev``, through the real adapter.
A test can instead script the next answers: text chunks, tool calls, an HTTP error, a
connection cut after some chunks, or a stall.

Run it with ``agentlog model-server --port 8400``, then set
``AGENTLOG_OPENAI_BASE_URL=http://127.0.0.1:8400/v1`` or
``AGENTLOG_ANTHROPIC_BASE_URL=http://127.0.0.1:8400``.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import ChatMessage, ModelRequest, ToolCall, ToolSpec, Usage, parse_arguments
from .dev import answer, pieces


@dataclass(frozen=True)
class Reply:
    """One scripted answer. With ``status`` >= 400 the server answers that HTTP error
    instead; ``stall_s`` waits before answering. Only streamed answers use the rest:
    ``cut_after`` drops the connection after that many text chunks; ``end_after`` ends
    the HTTP body properly after that many text chunks, but without the rest of the
    stream (as a misbehaving proxy might); ``chunk_delay_s`` paces the stream."""

    chunks: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))
    status: int = 200
    retry_after: float | None = None
    cut_after: int | None = None
    end_after: int | None = None
    stall_s: float = 0.0
    chunk_delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    protocol: str  # "openai" or "anthropic"
    body: dict[str, Any]
    headers: dict[str, str]
    request: ModelRequest


def dev_reply(request: ModelRequest) -> Reply:
    response = answer(request)
    return Reply(
        chunks=tuple(pieces(response.text)),
        tool_calls=tuple(response.tool_calls),
        usage=response.usage,
    )


# -- reading requests -------------------------------------------------------------------


def decode_openai(body: dict[str, Any]) -> ModelRequest:
    messages = []
    for m in body.get("messages", []):
        calls = [
            ToolCall(
                id=c["id"],
                name=c["function"]["name"],
                arguments=parse_arguments(c["function"].get("arguments") or ""),
            )
            for c in m.get("tool_calls") or []
        ]
        messages.append(
            ChatMessage(
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
        messages.append(ChatMessage(role="system", content=body["system"]))
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            messages.append(ChatMessage(role=m["role"], content=content))
            continue
        text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        calls = [
            ToolCall(id=b["id"], name=b["name"], arguments=b.get("input") or {})
            for b in content
            if b.get("type") == "tool_use"
        ]
        if text or calls:
            messages.append(ChatMessage(role=m["role"], content=text or None, tool_calls=calls))
        messages.extend(
            ChatMessage(
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


def _openai_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _anthropic_stop(reply: Reply) -> str:
    return "tool_use" if reply.tool_calls else "end_turn"


def openai_completion(reply: Reply, model: str) -> dict[str, Any]:
    """The body of a non-streamed OpenAI chat completion: the whole reply in one message."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks) or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in reply.tool_calls
        ]
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
        "usage": {
            "input_tokens": reply.usage.input_tokens,
            "output_tokens": reply.usage.output_tokens,
        },
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
                    "usage": {"input_tokens": reply.usage.input_tokens, "output_tokens": 1},
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


def _error_body(protocol: str, status: int) -> dict[str, Any]:
    message = f"scripted failure with HTTP {status}"
    if protocol == "anthropic":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": "server_error", "code": status}}


# -- the server -------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hung up (a timeout, or a kept-alive connection closed)
        super().handle_error(request, client_address)


class ModelServer:
    """The server, run on a thread of its own. ``script`` queues answers; without one,
    the dev model's rule answers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.received: list[Received] = []
        self._script: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._http = _HTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _next(self, request: ModelRequest) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else dev_reply(request)

    def start(self) -> ModelServer:
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/chat/completions"):
                    protocol = "openai"
                elif path.endswith("/messages"):
                    protocol = "anthropic"
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                request = decode_openai(body) if protocol == "openai" else decode_anthropic(body)
                with server._lock:
                    server.received.append(
                        Received(protocol, body, dict(self.headers.items()), request)
                    )
                reply = server._next(request)
                if reply.stall_s:
                    time.sleep(reply.stall_s)
                if reply.status >= 400:
                    headers = {}
                    if reply.retry_after is not None:
                        headers["Retry-After"] = str(reply.retry_after)
                    self._json(reply.status, _error_body(protocol, reply.status), headers)
                    return
                model = str(body.get("model", ""))
                if not body.get("stream"):
                    build = openai_completion if protocol == "openai" else anthropic_message
                    self._json(200, build(reply, model))
                    return
                frames = (
                    [f"data: {data}\n\n" for data in openai_events(reply, model)]
                    if protocol == "openai"
                    else [f"event: {e}\ndata: {d}\n\n" for e, d in anthropic_events(reply, model)]
                )
                # Text chunks start at frame 0 (OpenAI) or after two frames (Anthropic).
                skip = 0 if protocol == "openai" else 2
                if reply.end_after is not None:
                    frames = frames[: reply.end_after + skip]
                cut = None if reply.cut_after is None else reply.cut_after + skip
                self._stream(frames, cut, reply.chunk_delay_s)

            def _json(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, frames: list[str], cut: int | None, delay_s: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for n, frame in enumerate(frames):
                        if cut is not None and n >= cut:
                            # No terminating chunk: the client sees a cut connection.
                            self.close_connection = True
                            return
                        data = frame.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        time.sleep(delay_s)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
