"""One streamed HTTP call to a provider: POST, check the status, yield server-sent events.

Both provider protocols stream their answers as server-sent events, and fail the same
ways: an HTTP error status before the stream starts, a timeout, or a connection cut
mid-stream. Each failure becomes a ``ProviderError`` with the code and retryability the
retry policy needs; the adapters only parse event payloads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from schemas.errors import ErrorCode

from .base import ProviderError, error_for_status


async def stream_events(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """(event name, JSON data) of each event; data is None for a non-JSON payload such
    as OpenAI's ``[DONE]``."""
    try:
        async with aconnect_sse(client, "POST", url, headers=headers, json=body) as source:
            response = source.response
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                raise error_for_status(
                    response.status_code, text, response.headers.get("retry-after")
                )
            async for event in source.aiter_sse():
                try:
                    data = json.loads(event.data)
                except ValueError:
                    data = None
                yield event.event, data if isinstance(data, dict) else None
    except httpx.TimeoutException as exc:
        raise ProviderError(
            ErrorCode.MODEL_TIMEOUT,
            f"the provider stopped answering ({type(exc).__name__})",
            retryable=True,
        ) from exc
    except httpx.TransportError as exc:
        raise ProviderError(
            ErrorCode.MODEL_UNAVAILABLE,
            f"connection to the provider failed: {exc!r}",
            retryable=True,
        ) from exc
    except SSEError as exc:
        raise ProviderError(ErrorCode.MODEL_BAD_RESPONSE, str(exc), retryable=False) from exc


def cut_off(what: str) -> ProviderError:
    """The stream ended before the protocol's final event: treated like a dropped line."""
    return ProviderError(
        ErrorCode.MODEL_UNAVAILABLE, f"the stream ended before {what}", retryable=True
    )
