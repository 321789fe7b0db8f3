"""The tool worker: performs ``ToolCallRequested`` by calling the tenant's HTTP tool."""

from __future__ import annotations

import time
from typing import Any

import httpx

from projections.secrets import SecretStore
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from schemas.errors import ErrorCode
from schemas.headers import header_problem
from streams import tracing
from streams.catalog import Catalog
from streams.logs import redact

from .effect_worker import EffectWorker
from .metrics import TOOL_CALL_ERRORS, TOOL_CALL_SECONDS
from .tool_network import ToolAddressRefusedError, ToolNetworkPolicy


class ToolWorker(EffectWorker):
    """Calls HTTP tools: POST the arguments as JSON, record the (size-capped) answer.

    Tools are not retried automatically: a tool call may not be idempotent.
    """

    name = "tool"
    request_type = events.ToolCallRequested
    result_types = (events.ToolCallCompleted, events.ToolCallFailed)
    source = "/workers/tool"

    def __init__(
        self,
        bootstrap_servers: str,
        catalog: Catalog,
        secrets: SecretStore,
        max_result_bytes: int,
        network: ToolNetworkPolicy,
    ) -> None:
        super().__init__(bootstrap_servers, catalog)
        self.secrets = secrets
        self.max_result_bytes = max_result_bytes
        self.network = network
        # A redirect would lead past the network check: a 3xx is the tool's answer.
        self.http = httpx.AsyncClient(follow_redirects=False)

    async def perform(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        req: events.ToolCallRequested = env.data
        common: dict[str, Any] = {
            "session_id": req.session_id,
            "turn_id": req.turn_id,
            "tool_call_id": req.tool_call_id,
            "step": req.step,
            "tool": req.tool,
        }
        # The call id lets a tool recognise a retried call (after a worker crash).
        headers = {
            **await self.secrets.get(env.tenant_id, req.tool_id),
            "X-Agentlog-Tool-Call-Id": req.tool_call_id,
        }
        unsendable = [p for p in (header_problem(k, v) for k, v in headers.items()) if p]
        result: Fact
        with tracing.span(
            f"execute_tool {req.tool}",
            env.traceparent,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": req.tool,
                "gen_ai.tool.call.id": req.tool_call_id,
                "gen_ai.tool.type": "function",
            },
        ) as span:
            started = time.perf_counter()
            if unsendable:
                result = events.ToolCallFailed(
                    **common,
                    code=ErrorCode.TOOL_HEADERS_INVALID,
                    detail=f"{unsendable[0]}; register the tool again",
                )
            else:
                result = await self._call(req, headers, common)
            TOOL_CALL_SECONDS.observe(time.perf_counter() - started)
            if isinstance(result, events.ToolCallFailed):
                TOOL_CALL_ERRORS.labels(result.code).inc()
                tracing.failed(span, result.code)
        return self.recorded(env, result, req.tool_call_id, req.tool, {"calls": 1})

    async def _call(
        self, req: events.ToolCallRequested, headers: dict[str, str], common: dict[str, Any]
    ) -> Fact:
        """POST the arguments; the answer (size-capped, secrets redacted) as a fact."""
        try:
            # Again at call time: the host may resolve elsewhere than at registration.
            await self.network.check(req.url)
        except ToolAddressRefusedError as exc:
            return events.ToolCallFailed(
                **common, code=ErrorCode.TOOL_ADDRESS_REFUSED, detail=str(exc)
            )
        try:
            response = await self.http.post(
                req.url, json=req.arguments, headers=headers, timeout=req.timeout_s
            )
        except httpx.TimeoutException:
            return events.ToolCallFailed(
                **common, code=ErrorCode.TOOL_TIMEOUT, detail=f"no answer within {req.timeout_s} s"
            )
        except httpx.HTTPError as exc:
            return events.ToolCallFailed(
                **common, code=ErrorCode.TOOL_UNAVAILABLE, detail=type(exc).__name__
            )
        body = response.content
        text = redact(body[: self.max_result_bytes].decode("utf-8", errors="replace"))
        if response.status_code >= 400:
            return events.ToolCallFailed(
                **common,
                code=ErrorCode.TOOL_HTTP_ERROR,
                detail=f"HTTP {response.status_code}: {text[:500]}",
            )
        return events.ToolCallCompleted(
            **common,
            status_code=response.status_code,
            result=text,
            truncated=len(body) > self.max_result_bytes,
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.secrets.close()
        await super().close()
