"""The HTTP gateway's app: it authenticates, validates, records commands, and answers from
projections.

Writes go to Kafka as ``*Requested`` commands; the command handler decides their
outcome. For agent and session commands the gateway then waits (briefly) for the outcome
to be projected, so a client reads its own write in the response. This module only
wires: the routes are in ``routes/``, one router per resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import DomainError
from streams import tracing
from streams.embedded import resolve
from streams.heap import freeze_startup_objects
from streams.settings import Settings

from .commands import CommandRecordedError, on_recorded
from .connections import Gateway
from .dashboard_store import DashboardStore
from .intake import Intake
from .metrics import RequestMetrics
from .models import PROBLEM_RESPONSES
from .openapi import serve_problems_as_problem_json
from .page_headers import PageHeaders
from .problems import (
    OUTAGES,
    on_http_error,
    on_problem,
    on_unavailable,
    on_unexpected,
    on_validation,
)
from .routes import (
    admin,
    agents,
    asyncapi,
    dashboard,
    docs,
    invoices,
    keys,
    ops,
    plans,
    sessions,
    tenant,
    tools,
    turns,
    usage,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    if settings is None:  # an app factory's call (``uvicorn --factory``): its own process
        tracing.configure("agentlog-gateway")
        settings = resolve(Settings(), start=False).settings
    gw = Gateway(settings)
    # The dashboard's sessions and claims: a Redis client of its own, this deployment's keys.
    dashboard_store = DashboardStore(settings, gw.operator_billing_db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        freeze_startup_objects()
        yield
        await dashboard_store.close()
        await gw.close()

    app = FastAPI(
        title="agentlog",
        version="0.1.0",
        description="Event-sourced AI agents. Every write is a command on a Kafka topic; "
        "every read comes from a projection. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: ``routes/docs.py``
        redoc_url=None,
    )
    app.state.gateway = gw
    app.state.dashboard_store = dashboard_store
    serve_problems_as_problem_json(app)
    app.add_exception_handler(DomainError, on_problem)
    app.add_exception_handler(CommandRecordedError, on_recorded)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for outage in OUTAGES:
        app.add_exception_handler(outage, on_unavailable)
    app.add_exception_handler(Exception, on_unexpected)

    app.add_middleware(
        Intake,
        caller_for=gw.keys.caller_for,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_json_depth=settings.max_json_depth,
    )
    app.add_middleware(PageHeaders)  # outside the intake: its refusals carry them too
    app.add_middleware(RequestMetrics)  # outermost: refused requests are counted too
    # Requests are matched against routers in this order, route by route: the most
    # requested first (starting a turn is the intake's hot path).
    routers = (
        *(turns, sessions, agents, tools, keys, tenant, usage, invoices),
        *(plans, admin, ops, asyncapi),
    )
    for router in routers:
        app.include_router(router.router)
    dashboard.mount(app)
    docs.mount(app)
    if tracing.enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # A span per request (probes and scrapes aside); a turn's trace starts here, as
        # a root linked to the client's context (streams.tracing.EdgeTraceContext).
        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls="/healthz,/readyz,/metrics",
            exclude_spans=["receive", "send"],
            server_request_hook=tracing.link_client,
        )
    return app
