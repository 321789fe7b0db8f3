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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from schemas.values import UsageValue

from .base import CALL_ID_HEADER, ModelRequest
from .dev import answer, pieces
from .wire import (
    Reply,
    anthropic_events,
    anthropic_message,
    decode_anthropic,
    decode_openai,
    error_body,
    openai_completion,
    openai_events,
)

__all__ = ["ModelServer", "Received", "Reply", "dev_reply"]


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
        # The usage of the whole answers served, by call id: a call answered twice (its
        # worker crashed before recording the result) counts once.
        self.served: dict[str, UsageValue] = {}
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
        """Serve from a thread (tests); ``stop`` returns within a twentieth of a second."""
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
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
                    self._json(reply.status, error_body(protocol, reply.status), headers)
                    return
                model = str(body.get("model", ""))
                if not body.get("stream"):
                    build = openai_completion if protocol == "openai" else anthropic_message
                    self._json(200, build(reply, model))
                    self._served(reply)
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
                if self._stream(frames, cut, reply.chunk_delay_s) and reply.end_after is None:
                    self._served(reply)

            def _served(self, reply: Reply) -> None:
                call_id = self.headers.get(CALL_ID_HEADER)
                if call_id:
                    with server._lock:
                        server.served[call_id] = reply.usage

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

            def _stream(self, frames: list[str], cut: int | None, delay_s: float) -> bool:
                """Whether the whole stream was written."""
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
                            return False
                        data = frame.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        time.sleep(delay_s)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout)
                    return False
                return True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
