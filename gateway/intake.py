"""What a request must pass before any of its body is read, as one ASGI layer.

In this order: the API key (from the headers alone, so an unauthenticated client cannot
make the gateway read, buffer or parse anything), the body's size (refused from
``Content-Length`` or as soon as a chunked body passes the cap), the time the body may
take to arrive, and how deeply its JSON nests. Only then does the app see the request,
with the body replayed from memory: at most ``max_body_bytes`` per request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import ErrorCode

from .auth import Caller, bearer_key
from .problems import OUTAGES, problem_response, unavailable

# Paths anyone may read; every other path under /v1/ needs an API key.
_PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

CallerLookup = Callable[[str], Awaitable[Caller | None]]


def json_depth(body: bytes) -> int:
    """How deeply the JSON text nests arrays and objects (0 for a scalar). Brackets
    inside strings do not count; malformed text gives a number, never an error."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class _BodyTooLargeError(Exception):
    pass


class Intake:
    def __init__(
        self,
        app: ASGIApp,
        *,
        caller_for: CallerLookup,
        max_body_bytes: int,
        body_timeout_s: float,
        max_json_depth: int,
    ) -> None:
        self.app = app
        self.caller_for = caller_for
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def refuse(code: ErrorCode, detail: str, **extra: Any) -> None:
            await problem_response(code, detail, path, **extra)(scope, receive, send)

        if path.startswith("/v1/") and not path.startswith(_PUBLIC_PREFIXES):
            key = bearer_key(headers.get("authorization", ""))
            if key is None:
                await refuse(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <api key>'")
                return
            try:
                caller = await self.caller_for(key)
            except OUTAGES as exc:
                await unavailable(path, exc)(scope, receive, send)
                return
            if caller is None:
                await refuse(ErrorCode.UNAUTHENTICATED, "unknown API key")
                return
            state = scope.setdefault("state", {})
            state["tenant_id"], state["operator_id"] = caller.tenant_id, caller.operator_id

        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await refuse(ErrorCode.BODY_TOO_LARGE, f"the body exceeds {self.max_body_bytes} bytes")
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except _BodyTooLargeError:
            await refuse(ErrorCode.BODY_TOO_LARGE, f"the body exceeds {self.max_body_bytes} bytes")
            return
        except TimeoutError:
            await refuse(
                ErrorCode.BODY_TIMEOUT, f"the body did not arrive within {self.body_timeout_s} s"
            )
            return
        if body and json_depth(body) > self.max_json_depth:
            await refuse(
                ErrorCode.JSON_TOO_DEEP, f"the body nests deeper than {self.max_json_depth}"
            )
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what follows the body: a disconnect

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)
