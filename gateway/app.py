"""The HTTP gateway: authenticates, validates, records commands, and answers from projections.

Writes go to Kafka as ``*Requested`` commands; the command handler decides their
outcome. For agent and session commands the gateway then waits (briefly) for the outcome
to be projected, so a client reads its own write in the response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from cachetools import LRUCache, TTLCache
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from projections.changes import Changes
from projections.core import KEY_REVOKED
from projections.queries import ReadModel
from projections.secrets import SecretStore
from projections.store import storable
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, derived_id, envelope
from streams.catalog import OUTPUT
from streams.logs import redact
from streams.publisher import RECORD_TOO_LARGE, Publisher
from streams.settings import Settings
from workers.tool_network import ToolAddressRefusedError, ToolNetworkPolicy

from .deps import IdempotencyKeyDep, TenantDep
from .idempotency import IdempotencyKeys, fingerprint, request_ids
from .intake import Intake
from .keys import hash_key
from .keys import router as keys_router
from .metrics import RequestMetrics
from .models import (
    PROBLEM_RESPONSES,
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    AgentVersionPublic,
    MessagePublic,
    Page,
    SessionCreate,
    SessionPublic,
    StepPublic,
    ToolCallPublic,
    ToolCreate,
    ToolPublic,
    TurnCreate,
    TurnDetail,
    TurnPublic,
)
from .problems import (
    OUTAGES,
    ProblemError,
    on_http_error,
    on_problem,
    on_unavailable,
    on_unexpected,
    on_validation,
)

SOURCE = "/gateway"
_TERMINAL = ("completed", "failed", "rejected", "cancelled")


class Gateway:
    """The gateway's connections, shared by every request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher = Publisher(settings.kafka_bootstrap_servers)
        self.read = ReadModel(
            settings.database_url,
            settings.database_schema,
            tenant_scoped=True,
            pool_size=settings.database_pool_size,
            timeout=settings.database_pool_timeout_s,
        )
        self.changes = Changes(settings.database_url, settings.database_schema)
        self.idempotency = IdempotencyKeys(settings.redis_url)
        self.secrets = SecretStore.from_settings(settings)
        self.tool_network = ToolNetworkPolicy.from_settings(settings)
        # Valid keys for a minute; sessions for good (a session never changes tenant).
        self._keys: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=60)
        self._sessions: LRUCache[tuple[str, str], dict[str, Any]] = LRUCache(maxsize=100_000)
        self._streams: Counter[str] = Counter()  # open SSE streams per tenant
        self._offsets: AIOKafkaConsumer | None = None  # for log ranges (ListOffsets)

    async def start(self) -> None:
        await self.publisher.start()
        # Made here, not in __init__: aiokafka binds to the running event loop.
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False
        )
        await self._offsets.start()
        await self.secrets.ensure()
        self.changes.subscribe(KEY_REVOKED, self._forget_keys)
        self.changes.start()

    async def close(self) -> None:
        await self.changes.close()
        await self.idempotency.close()
        await self.publisher.stop()
        if self._offsets is not None:
            await self._offsets.stop()
        await self.read.close()
        await self.secrets.close()

    def _forget_keys(self, tenant_id: str | None) -> None:
        """Drop the tenant's cached keys (one was revoked), or every cached key (the
        listener reconnected: a revocation may have been missed)."""
        if tenant_id is None:
            self._keys.clear()
            return
        for digest in [d for d, t in self._keys.items() if t == tenant_id]:
            self._keys.pop(digest, None)

    async def tenant_for(self, key: str) -> str | None:
        digest = hash_key(key)
        tenant = self._keys.get(digest)
        if tenant is None:
            tenant = await self.read.tenant_for_key_hash(digest)
            if tenant is not None:
                self._keys[digest] = tenant
        return tenant

    async def session(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        row = self._sessions.get((tenant_id, session_id))
        if row is None:
            row = await self.read.session(tenant_id, session_id)
            if row is not None:
                self._sessions[(tenant_id, session_id)] = row
        return row

    async def idempotent(
        self, request: Request, tenant_id: str, key: str | None, body: Any, *names: str
    ) -> dict[str, str]:
        """The ids this request creates (see ``gateway.idempotency``)."""
        if key is not None:
            await self.idempotency.check(
                tenant_id, key, fingerprint(request.method, request.url.path, body)
            )
        return request_ids(tenant_id, key, *names)

    async def record(self, tenant_id: str, data: Fact, **kwargs: Any) -> Envelope[Any]:
        env = envelope(data, source=SOURCE, tenant_id=tenant_id, **kwargs)
        try:
            await self.publisher.publish(env)
        except RECORD_TOO_LARGE:
            raise ProblemError(
                "RECORD_TOO_LARGE", "the request makes a record larger than the log accepts"
            ) from None
        return env

    def open_stream(self, tenant_id: str) -> Callable[[], None]:
        """Count an SSE stream of the tenant, refusing one past the limit; returns what
        to call when the stream ends. Each stream holds a Kafka consumer: the limit
        bounds them."""
        if self._streams[tenant_id] >= self.settings.sse_streams_per_tenant:
            raise ProblemError(
                "TOO_MANY_STREAMS",
                f"{self._streams[tenant_id]} streams are open; close one first",
                headers={"Retry-After": "1"},
            )
        self._streams[tenant_id] += 1

        def release() -> None:
            self._streams[tenant_id] -= 1
            if not self._streams[tenant_id]:
                del self._streams[tenant_id]

        return release

    async def resume_offset(self, tp: TopicPartition, last_event_id: str) -> int:
        """Where to resume after the event ``last_event_id`` (``partition:offset``), if
        that event is one of this partition's, within its log."""
        partition, _, offset = last_event_id.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ProblemError("INVALID_CURSOR", "Last-Event-ID is not partition:offset")
        if int(partition) != tp.partition:
            raise ProblemError(
                "INVALID_CURSOR", f"this session's events are in partition {tp.partition}"
            )
        assert self._offsets is not None, "Gateway.start() was not awaited"
        first = (await self._offsets.beginning_offsets([tp]))[tp]
        end = (await self._offsets.end_offsets([tp]))[tp]
        resume = int(offset) + 1
        if not first <= resume <= end:
            raise ProblemError(
                "INVALID_CURSOR",
                f"Last-Event-ID names no event of this partition's log ({first}..{end - 1})",
            )
        return resume

    async def outcome(
        self, tenant_id: str, command_id: str, timeout: float = 10.0
    ) -> dict[str, Any] | None:
        """The command's outcome once projected, or None after ``timeout`` seconds."""
        return await self.changes.wait_for(
            f"command:{command_id}",
            lambda: self.read.command_outcome(tenant_id, command_id),
            timeout,
        )


class CommandRecordedError(Exception):
    """A command is on the log but what follows it cannot be read now: answered 202."""

    def __init__(self, body: dict[str, Any], location: str) -> None:
        super().__init__(location)
        self.body = body
        self.location = location


async def _on_recorded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CommandRecordedError)
    return JSONResponse(exc.body, status_code=202, headers={"Location": exc.location})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gw = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        yield
        await gw.close()

    app = FastAPI(
        title="agentlog",
        version="0.1.0",
        description="Event-sourced AI agents. Every write is a command on a Kafka topic; "
        "every read comes from a projection. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.gateway = gw
    _serve_problems_as_problem_json(app)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(CommandRecordedError, _on_recorded)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for outage in OUTAGES:
        app.add_exception_handler(outage, on_unavailable)
    app.add_exception_handler(Exception, on_unexpected)

    app.add_middleware(
        Intake,
        tenant_for=gw.tenant_for,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(RequestMetrics)  # outermost: refused requests are counted too
    app.include_router(keys_router)

    # -- health ----------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, str]:
        """Ready when Postgres answers a query and Kafka a metadata request."""
        for dependency, ping in (("postgres", gw.read.ping), ("kafka", gw.publisher.ping)):
            try:
                async with asyncio.timeout(2):
                    await ping()
            except Exception as exc:
                raise ProblemError("NOT_READY", redact(f"{dependency}: {exc!r}")) from exc
        return {"status": "ready"}

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"description": "metrics in the Prometheus text format"}},
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    # -- tools -----------------------------------------------------------------------

    @app.post("/v1/tools", status_code=201, response_model=ToolPublic, tags=["tools"])
    async def register_tool(body: ToolCreate, tenant_id: TenantDep) -> ToolPublic:
        try:
            await gw.tool_network.check(str(body.url))
        except ToolAddressRefusedError as exc:
            raise ProblemError("TOOL_ADDRESS_REFUSED", str(exc)) from None
        # One id per tenant and name: registering a name again (even concurrently)
        # updates that tool.
        tool_id = derived_id(tenant_id, f"tool/{body.name}")
        definition = events.ToolDefinition(
            tool_id=tool_id,
            name=body.name,
            description=body.description,
            url=str(body.url),
            parameters=body.parameters,
            timeout_s=body.timeout_s,
        )
        await gw.secrets.put(tenant_id, tool_id, body.secret_headers)
        await gw.record(
            tenant_id,
            events.ToolRegistered(
                tenant_id=tenant_id,
                tool=definition,
                secret_header_names=sorted(body.secret_headers),
            ),
        )
        wanted = storable(definition.model_dump(mode="json"))  # as the projection holds it

        async def registered() -> dict[str, Any] | None:
            row = await gw.read.tool_by_id(tenant_id, tool_id)
            return row if row is not None and row["definition"] == wanted else None

        row = await gw.changes.wait_for(f"tool:{tool_id}", registered, 10)
        if row is not None:
            return _tool(row)
        return ToolPublic(
            **definition.model_dump(mode="json"), secret_header_names=sorted(body.secret_headers)
        )

    @app.get("/v1/tools", response_model=list[ToolPublic], tags=["tools"])
    async def list_tools(tenant_id: TenantDep) -> list[ToolPublic]:
        return [_tool(row) for row in await gw.read.tools(tenant_id)]

    # -- agents ----------------------------------------------------------------------

    async def agent_or_404(tenant_id: str, agent_id: str) -> dict[str, Any]:
        row = await gw.read.agent(tenant_id, agent_id)
        if row is None:
            raise ProblemError("AGENT_NOT_FOUND", f"no agent {agent_id}")
        return row

    async def settle(tenant_id: str, env: Envelope[Any]) -> None:
        found = await gw.outcome(tenant_id, env.id)
        if found is not None and found["outcome"] == "rejected":
            raise ProblemError(found["code"], found["detail"])

    @contextlib.asynccontextmanager
    async def recorded(env: Envelope[Any], location: str, **ids: str) -> AsyncIterator[None]:
        """Around what a request reads after recording ``env``: an outage there answers
        202 with what was recorded, since a 503 would invite a duplicate."""
        try:
            yield
        except OUTAGES as exc:
            raise CommandRecordedError(
                {**ids, "command_id": env.id, "status": "requested"}, location
            ) from exc

    @app.post("/v1/agents", status_code=201, response_model=AgentPublic, tags=["agents"])
    async def create_agent(
        request: Request, body: AgentCreate, tenant_id: TenantDep, key: IdempotencyKeyDep = None
    ) -> AgentPublic:
        ids = await gw.idempotent(
            request, tenant_id, key, body.model_dump(mode="json"), "agent", "command"
        )
        agent_id = ids["agent"]
        env = await gw.record(
            tenant_id,
            events.AgentCreateRequested(
                agent_id=agent_id, config=events.AgentConfig(**body.model_dump())
            ),
            id=ids["command"],
        )
        async with recorded(env, f"/v1/agents/{agent_id}", agent_id=agent_id):
            await settle(tenant_id, env)
            return _agent(await agent_or_404(tenant_id, agent_id))

    @app.get("/v1/agents", response_model=Page, tags=["agents"])
    async def list_agents(
        tenant_id: TenantDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page:
        rows = await gw.read.agents(tenant_id, limit + 1, _decode_cursor(cursor))
        return _page([_agent(r) for r in rows[:limit]], rows, limit, "agent_id")

    @app.get("/v1/agents/{agent_id}", response_model=AgentPublic, tags=["agents"])
    async def get_agent(agent_id: str, tenant_id: TenantDep) -> AgentPublic:
        return _agent(await agent_or_404(tenant_id, agent_id))

    @app.patch("/v1/agents/{agent_id}", response_model=AgentPublic, tags=["agents"])
    async def update_agent(agent_id: str, body: AgentUpdate, tenant_id: TenantDep) -> AgentPublic:
        await agent_or_404(tenant_id, agent_id)
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise ProblemError("VALIDATION_FAILED", "nothing to update")
        env = await gw.record(
            tenant_id, events.AgentUpdateRequested(agent_id=agent_id, changes=changes)
        )
        async with recorded(env, f"/v1/agents/{agent_id}", agent_id=agent_id):
            await settle(tenant_id, env)
            return _agent(await agent_or_404(tenant_id, agent_id))

    @app.post("/v1/agents/{agent_id}/disable", response_model=AgentPublic, tags=["agents"])
    async def disable_agent(agent_id: str, tenant_id: TenantDep) -> AgentPublic:
        await agent_or_404(tenant_id, agent_id)
        env = await gw.record(tenant_id, events.AgentDisableRequested(agent_id=agent_id))
        async with recorded(env, f"/v1/agents/{agent_id}", agent_id=agent_id):
            await settle(tenant_id, env)
            return _agent(await agent_or_404(tenant_id, agent_id))

    @app.get(
        "/v1/agents/{agent_id}/versions", response_model=list[AgentVersionPublic], tags=["agents"]
    )
    async def agent_versions(agent_id: str, tenant_id: TenantDep) -> list[AgentVersionPublic]:
        await agent_or_404(tenant_id, agent_id)
        return [AgentVersionPublic(**r) for r in await gw.read.agent_versions(tenant_id, agent_id)]

    # -- sessions --------------------------------------------------------------------

    async def session_or_404(tenant_id: str, session_id: str) -> dict[str, Any]:
        row = await gw.session(tenant_id, session_id)
        if row is None:
            raise ProblemError("SESSION_NOT_FOUND", f"no session {session_id}")
        return row

    async def open_session(
        tenant_id: str, body: SessionCreate, ids: dict[str, str]
    ) -> dict[str, Any]:
        await agent_or_404(tenant_id, body.agent_id)
        session_id = ids["session"]
        env = await gw.record(
            tenant_id,
            events.SessionCreateRequested(
                session_id=session_id, agent_id=body.agent_id, metadata=body.metadata
            ),
            id=ids["session-command"],
        )
        async with recorded(env, f"/v1/sessions/{session_id}", session_id=session_id):
            await settle(tenant_id, env)
            return await session_or_404(tenant_id, session_id)

    @app.post("/v1/sessions", status_code=201, response_model=SessionPublic, tags=["sessions"])
    async def create_session(
        request: Request,
        body: SessionCreate,
        tenant_id: TenantDep,
        key: IdempotencyKeyDep = None,
    ) -> SessionPublic:
        ids = await gw.idempotent(
            request, tenant_id, key, body.model_dump(mode="json"), "session", "session-command"
        )
        return SessionPublic(**await open_session(tenant_id, body, ids))

    @app.get("/v1/sessions", response_model=Page, tags=["sessions"])
    async def list_sessions(
        tenant_id: TenantDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page:
        rows = await gw.read.sessions(tenant_id, limit + 1, _decode_cursor(cursor))
        return _page([SessionPublic(**r) for r in rows[:limit]], rows, limit, "session_id")

    @app.get("/v1/sessions/{session_id}", response_model=SessionPublic, tags=["sessions"])
    async def get_session(session_id: str, tenant_id: TenantDep) -> SessionPublic:
        return SessionPublic(**await session_or_404(tenant_id, session_id))

    @app.get("/v1/sessions/{session_id}/messages", response_model=Page, tags=["sessions"])
    async def list_messages(
        session_id: str,
        tenant_id: TenantDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Page:
        await session_or_404(tenant_id, session_id)
        after = -1
        if cursor is not None:
            try:
                after = int(base64.urlsafe_b64decode(cursor.encode()).decode())
            except ValueError:
                raise ProblemError("INVALID_CURSOR", "cursor is not valid") from None
            if after < 0:
                raise ProblemError("INVALID_CURSOR", "cursor is not valid")
        rows = await gw.read.messages(tenant_id, session_id, limit + 1, after)
        items = [MessagePublic(**r) for r in rows[:limit]]
        next_cursor = (
            base64.urlsafe_b64encode(str(rows[limit - 1]["position"]).encode()).decode()
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    # -- turns -----------------------------------------------------------------------

    async def start_turn(
        tenant_id: str,
        session_id: str,
        message: str,
        mode: Literal["chat", "invoke"],
        wait: float,
        ids: dict[str, str],
    ) -> Response:
        if len(message.encode()) > settings.max_message_bytes:
            raise ProblemError(
                "MESSAGE_TOO_LARGE", f"the message exceeds {settings.max_message_bytes} bytes"
            )
        turn_id = ids["turn"]
        env = await gw.record(
            tenant_id,
            events.TurnRequested(
                session_id=session_id, turn_id=turn_id, message=message, mode=mode
            ),
            id=ids["turn-command"],
        )
        links = _turn_links(session_id, turn_id)
        async with recorded(env, links["self"], turn_id=turn_id, session_id=session_id):
            turn = await wait_for_turn(tenant_id, turn_id, wait) if wait > 0 else None
        if turn is not None and turn.status == "rejected":
            raise ProblemError(turn.error_code or "VALIDATION_FAILED", turn.error_detail or "")
        if turn is not None and turn.status in _TERMINAL:
            return JSONResponse(turn.model_dump(mode="json"), status_code=200)
        body = {
            "turn_id": turn_id,
            "session_id": session_id,
            "status": "requested",
            "command_id": env.id,
            "links": _turn_links(session_id, turn_id),
        }
        return JSONResponse(body, status_code=202, headers={"Location": f"/v1/turns/{turn_id}"})

    async def wait_for_turn(tenant_id: str, turn_id: str, wait: float) -> TurnPublic | None:
        """The turn once it has finished, or as it stands after ``wait`` seconds."""

        async def finished() -> dict[str, Any] | None:
            row = await gw.read.turn(tenant_id, turn_id)
            return row if row is not None and row["status"] in _TERMINAL else None

        row = await gw.changes.wait_for(f"turn:{turn_id}", finished, wait)
        if row is None:
            row = await gw.read.turn(tenant_id, turn_id)
        return None if row is None else await _turn(gw, tenant_id, row)

    @app.post(
        "/v1/sessions/{session_id}/turns",
        status_code=202,
        tags=["turns"],
        responses={200: {"model": TurnPublic}, 202: {"description": "accepted"}},
    )
    async def create_turn(
        request: Request,
        session_id: str,
        body: TurnCreate,
        tenant_id: TenantDep,
        wait: Annotated[float, Query(ge=0, le=300)] = 0,
        key: IdempotencyKeyDep = None,
    ) -> Response:
        await session_or_404(tenant_id, session_id)
        ids = await gw.idempotent(request, tenant_id, key, body.message, "turn", "turn-command")
        return await start_turn(tenant_id, session_id, body.message, "chat", wait, ids)

    @app.post(
        "/v1/agents/{agent_id}/invoke",
        tags=["turns"],
        responses={200: {"model": TurnPublic}, 202: {"description": "still running"}},
    )
    async def invoke(
        request: Request,
        agent_id: str,
        body: TurnCreate,
        tenant_id: TenantDep,
        wait: Annotated[float, Query(ge=0, le=300)] = 60,
        key: IdempotencyKeyDep = None,
    ) -> Response:
        ids = await gw.idempotent(
            request,
            tenant_id,
            key,
            body.message,
            "session",
            "session-command",
            "turn",
            "turn-command",
        )
        # Recorded but unread: the turn follows the session's command in its partition.
        with contextlib.suppress(CommandRecordedError):
            await open_session(
                tenant_id, SessionCreate(agent_id=agent_id, metadata={"mode": "invoke"}), ids
            )
        return await start_turn(tenant_id, ids["session"], body.message, "invoke", wait, ids)

    @app.get("/v1/turns/{turn_id}", response_model=TurnDetail, tags=["turns"])
    async def get_turn(turn_id: str, tenant_id: TenantDep) -> TurnDetail:
        row = await gw.read.turn(tenant_id, turn_id)
        if row is None:
            raise ProblemError("TURN_NOT_FOUND", f"no turn {turn_id}")
        public = await _turn(gw, tenant_id, row)
        steps = [StepPublic(**s) for s in await gw.read.turn_steps(tenant_id, turn_id)]
        calls = [ToolCallPublic(**c) for c in await gw.read.tool_calls(tenant_id, turn_id)]
        return TurnDetail(**public.model_dump(), events=steps, tool_calls=calls)

    @app.post("/v1/turns/{turn_id}/cancel", status_code=202, tags=["turns"])
    async def cancel_turn(turn_id: str, tenant_id: TenantDep) -> dict[str, str]:
        row = await gw.read.turn(tenant_id, turn_id)
        if row is None:
            raise ProblemError("TURN_NOT_FOUND", f"no turn {turn_id}")
        if row["status"] in _TERMINAL:
            raise ProblemError("TURN_NOT_ACTIVE", f"turn {turn_id} is {row['status']}")
        await gw.record(
            tenant_id, events.TurnCancelRequested(session_id=row["session_id"], turn_id=turn_id)
        )
        return {"turn_id": turn_id, "status": "cancel_requested"}

    # -- streaming -------------------------------------------------------------------

    @app.get(
        "/v1/sessions/{session_id}/stream",
        tags=["sessions"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        session_id: str,
        tenant_id: TenantDep,
        last_event_id: Annotated[str | None, Header()] = None,
        start: Annotated[str, Query(pattern="^(now|beginning)$")] = "now",
    ) -> EventSourceResponse:
        """Server-sent events of the session's output. Event ids are log positions
        (`partition:offset`): reconnect with `Last-Event-ID` to resume exactly after
        the last event received, however long ago."""
        await session_or_404(tenant_id, session_id)
        partition = await gw.publisher.partition_of(OUTPUT.name, session_id.encode())
        tp = TopicPartition(OUTPUT.name, partition)
        resume = None
        if last_event_id:
            resume = await gw.resume_offset(tp, last_event_id)
        release = gw.open_stream(tenant_id)
        return EventSourceResponse(
            _output_events(settings, tp, session_id, resume, start == "beginning"),
            ping=15,
            background=BackgroundTask(release),
        )

    return app


async def _output_events(
    settings: Settings,
    tp: TopicPartition,
    session_id: str,
    resume: int | None,
    from_beginning: bool,
) -> AsyncIterator[dict[str, str]]:
    """The session's records of its output partition, from ``resume`` (an offset), the
    beginning, or now. The log is the buffer: nothing expires while a client is away."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        key = session_id.encode()
        partition = tp.partition
        consumer.assign([tp])
        if resume is not None:
            consumer.seek(tp, resume)
        elif from_beginning:
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)
        # A comment (ignored by EventSource clients) once the start is fixed: what the
        # session outputs from here on is in the stream.
        yield {"comment": f"streaming from {partition}:{await consumer.position(tp)}"}
        while True:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            for record in batches.get(tp, []):
                if record.key != key:
                    continue
                headers = dict(record.headers)
                kind = headers.get("ce_type", b"").decode().split(".")[2]
                yield {
                    "id": f"{partition}:{record.offset}",
                    "event": kind,
                    "data": (record.value or b"{}").decode(),
                }
    finally:
        await consumer.stop()


def _serve_problems_as_problem_json(app: FastAPI) -> None:
    """Declare error responses in the OpenAPI document with the media type they are
    sent with (FastAPI would say application/json)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in generate()["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status in ("4XX", "5XX") and content:
                            # Whatever the route's own media type, its errors are these.
                            response["content"] = {
                                "application/problem+json": next(iter(content.values()))
                            }
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _tool(row: dict[str, Any]) -> ToolPublic:
    return ToolPublic(**row["definition"], secret_header_names=row["secret_header_names"])


def _agent(row: dict[str, Any]) -> AgentPublic:
    return AgentPublic(
        agent_id=row["agent_id"],
        version=row["version"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        **events.AgentConfig.model_validate(row["config"]).model_dump(),
    )


def _turn_links(session_id: str, turn_id: str) -> dict[str, str]:
    return {
        "self": f"/v1/turns/{turn_id}",
        "stream": f"/v1/sessions/{session_id}/stream",
        "messages": f"/v1/sessions/{session_id}/messages",
        "cancel": f"/v1/turns/{turn_id}/cancel",
    }


async def _turn(gw: Gateway, tenant_id: str, row: dict[str, Any]) -> TurnPublic:
    answer = None
    if row["answer_message_id"]:
        message = await gw.read.message(tenant_id, row["answer_message_id"])
        answer = None if message is None else message["content"]
    return TurnPublic(
        **{k: row[k] for k in TurnPublic.model_fields if k in row},
        answer=answer,
        links=_turn_links(row["session_id"], row["turn_id"]),
    )


def _decode_cursor(cursor: str | None) -> tuple[datetime.datetime, str] | None:
    """A ``?cursor=`` of ``_page``: anything else, whatever it decodes to, is a 400."""
    if cursor is None:
        return None
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(created, str) or not isinstance(ident, str):
            raise ValueError
        return datetime.datetime.fromisoformat(created), ident
    except (ValueError, TypeError, RecursionError):
        raise ProblemError("INVALID_CURSOR", "cursor is not valid") from None


def _page(items: list[Any], rows: list[dict[str, Any]], limit: int, id_field: str) -> Page:
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        token = json.dumps([last["created_at"].isoformat(), last[id_field]])
        next_cursor = base64.urlsafe_b64encode(token.encode()).decode()
    return Page(items=items, next_cursor=next_cursor)
