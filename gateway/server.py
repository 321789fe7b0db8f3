"""The gateway's HTTP server: uvicorn, with a deadline for each request's headers.

uvicorn times out idle keep-alive connections but not a client that opens a connection
and sends its headers a byte at a time (or never): each such connection would be held
for ever. ``HeaderDeadlineProtocol`` closes a connection whose request headers are not
complete within ``AGENTLOG_HEADER_TIMEOUT_S`` of the connection or of the request's
first byte. The body's own deadline is ``Intake``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streams.settings import Settings


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for the gateway, the same for ``agentlog gateway`` and ``up``."""
    protocol = type(
        "GatewayProtocol",
        (HeaderDeadlineProtocol,),
        {"header_timeout_s": settings.header_timeout_s},
    )
    return uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        http=protocol,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        log_config=None,
    )


def listen(settings: Settings) -> socket.socket:
    """The gateway's listening socket, bound before the server starts, so the address it
    serves is known (with port 0, any free port: no other process can take it between a
    check and the bind)."""
    host = settings.gateway_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, settings.gateway_port))
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmbeddedServer(uvicorn.Server):
    """uvicorn as one part of a process that handles its own signals (``agentlog up``).
    It does not take SIGINT and SIGTERM over, nor raise them again once it has stopped,
    which that process would take for a second signal and exit at once, before the
    roles beside the gateway had finished their batches. The process stops it by
    setting ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
