"""Effect workers: the only places that do slow I/O (model calls, HTTP tools).

Each reads the events topic for its requests and records results as facts keyed like
the request. Exactly-once effect rests on one rule: never perform a request whose
result is already in the log. On partition assignment the worker reads ahead from the
committed offset to the log end to learn which requests already have results, and it
keeps learning from the results it sees (its own included) as it goes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.secrets import SecretStore
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from schemas.headers import header_problem
from streams.catalog import EVENTS, group_id
from streams.consumer import Item, SeenIds, read_range
from streams.logs import redact

from .tool_network import ToolAddressRefusedError, ToolNetworkPolicy

log = logging.getLogger(__name__)

# A test-only fault: with it, requests whose result is in the log are performed again
# (tests/e2e/test_crash_safety.py shows that its checks catch such a double-perform).
_PERFORM_TWICE = os.environ.get("AGENTLOG_TEST_FAULT") == "perform-twice"


class EffectWorker:
    name: ClassVar[str]
    topics: Sequence[str] = (EVENTS.name,)
    request_type: ClassVar[type[Fact]]
    result_types: ClassVar[tuple[type[Fact], ...]]
    source: ClassVar[str]

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.done = SeenIds()  # ids of requests whose result is in the log
        self._performed: dict[str, list[Envelope[Any]]] = {}
        self._committed = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id(self.name),
            enable_auto_commit=False,
        )
        self._started = False

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t.ce_type() for t in (self.request_type, *self.result_types))

    async def perform(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        raise NotImplementedError

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self._started:
            await self._committed.start()
            self._started = True
        ends = await self._committed.end_offsets(partitions)
        for tp in partitions:
            start = await self._committed.committed(tp) or 0
            for env in await read_range(self.bootstrap_servers, tp, start, ends[tp], self.types):
                self._learn(env)
        return {}

    def _learn(self, env: Envelope[Any]) -> None:
        """A result names its request as its cause: that request is done."""
        if isinstance(env.data, self.result_types):
            self.done.add(env.causation_id)

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        work: dict[str, Envelope[Any]] = {}  # by request event id: a repeated one runs once
        for env, _position in items:
            self._learn(env)
            done = env.id in self.done and not _PERFORM_TWICE  # the test-only fault
            if isinstance(env.data, self.request_type) and not done:
                work.setdefault(env.id, env)
        results = await asyncio.gather(
            *(self._perform_once(env) for env in work.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the batch is handled again; what succeeded is kept
        outputs = []
        for request_id, result in zip(work, results, strict=True):
            assert not isinstance(result, BaseException)
            outputs.extend(result)
            self.done.add(request_id)
            del self._performed[request_id]
        return outputs

    async def _perform_once(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        """Perform a request, or return its result from an attempt whose batch failed
        for another request's sake: a call that succeeded is not made again."""
        if env.id not in self._performed:
            self._performed[env.id] = await self.perform(env)
        return self._performed[env.id]

    async def close(self) -> None:
        if self._started:
            await self._committed.stop()


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
        secrets: SecretStore,
        max_result_bytes: int,
        network: ToolNetworkPolicy,
    ) -> None:
        super().__init__(bootstrap_servers)
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
        if unsendable:
            result = events.ToolCallFailed(
                **common,
                code="TOOL_HEADERS_INVALID",
                detail=f"{unsendable[0]}; register the tool again",
            )
        else:
            result = await self._call(req, headers, common)
        usage = events.UsageRecorded(
            tenant_id=env.tenant_id,
            usage_id=req.tool_call_id,
            session_id=req.session_id,
            turn_id=req.turn_id,
            source="tool",
            resource=req.tool,
            calls=1,
        )
        return [
            env.follow(result, step="result", source=self.source),
            env.follow(usage, step="usage", source=self.source),
        ]

    async def _call(
        self, req: events.ToolCallRequested, headers: dict[str, str], common: dict[str, Any]
    ) -> Fact:
        """POST the arguments; the answer (size-capped, secrets redacted) as a fact."""
        try:
            # Again at call time: the host may resolve elsewhere than at registration.
            await self.network.check(req.url)
        except ToolAddressRefusedError as exc:
            return events.ToolCallFailed(**common, code="TOOL_ADDRESS_REFUSED", detail=str(exc))
        try:
            response = await self.http.post(
                req.url, json=req.arguments, headers=headers, timeout=req.timeout_s
            )
        except httpx.TimeoutException:
            return events.ToolCallFailed(
                **common, code="TOOL_TIMEOUT", detail=f"no answer within {req.timeout_s} s"
            )
        except httpx.HTTPError as exc:
            return events.ToolCallFailed(
                **common, code="TOOL_UNAVAILABLE", detail=type(exc).__name__
            )
        body = response.content
        text = redact(body[: self.max_result_bytes].decode("utf-8", errors="replace"))
        if response.status_code >= 400:
            return events.ToolCallFailed(
                **common,
                code="TOOL_HTTP_ERROR",
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
