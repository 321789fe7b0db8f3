"""The overview: what the platform did over a window (the activity read model), and
the live stream that keeps the overview and pipeline pages current."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse

from projections import activity, dashboard
from schemas.errors import DomainError

from ...connections import Gateway
from ...deps import GatewayDep
from .access import DataOperator, PageOperator, StoreDep, operator_of
from .pipeline import pipeline_data
from .rendering import render

router = APIRouter()
LIVE_INTERVAL_S = 2.0
Window = Literal["15m", "1h", "6h", "24h"]


async def overview_data(gw: Gateway, window: Window) -> dict[str, Any]:
    """The overview's figures over the window (from the activity read model): turns
    per minute, latency, failures, turns and tokens by tenant and by agent, model calls
    with their latency and tokens; the latest turns; and what the tenants shown spent
    today (UTC), from the billing read models."""
    now = datetime.datetime.now(datetime.UTC)
    minutes = dashboard.WINDOWS[window]
    span = activity.span_for(minutes)
    # The spans the window touches, the one it starts in included.
    since = activity.span_start(now - datetime.timedelta(minutes=minutes), span)
    db = gw.operator_db
    figures = asyncio.gather(
        activity.turns_per_span(db, span, since),
        activity.latency(db, span, since),
        activity.failures(db, span, since, 10),
        activity.tenants_since(db, span, since, 20),
        activity.agents_since(db, span, since, 10),
        activity.models_since(db, span, since, 10),
    )
    latest = dashboard.turns_page(
        db, tenant_id=None, agent_id=None, status=None, before=None, limit=10
    )
    (spans, latency, failures, tenants, agents, models), recent = await asyncio.gather(
        figures, latest
    )
    spent = await dashboard.spent_today(gw.operator_billing_db, [t.tenant_id for t in tenants], now)
    return {
        "window": window,
        "at": now.isoformat(),
        "span": span,
        "spans": _every_span(spans, span, since, now),
        "finished": latency.finished,
        "failed": latency.failed,
        "failure_rate": latency.failed / latency.finished if latency.finished else None,
        "p50_ms": latency.p50_ms,
        "p99_ms": latency.p99_ms,
        "failures": [f.model_dump(mode="json") for f in failures],
        "tenants": [
            {**t.model_dump(mode="json"), "spent_today": spent.get(t.tenant_id)} for t in tenants
        ],
        "agents": [a.model_dump(mode="json") for a in agents],
        "recent": [t.model_dump(mode="json") for t in recent],
        "models": [m.model_dump(mode="json") for m in models],
    }


def _every_span(
    rows: list[activity.SpanRow], span: int, since: datetime.datetime, now: datetime.datetime
) -> list[dict[str, Any]]:
    """One entry per span of the window, those without a turn ended at 0: the chart's
    time axis is the whole window."""
    counted = {row.start: row for row in rows}
    start = since
    series = []
    while start <= now:
        row = counted.get(start) or activity.SpanRow(
            start=start, completed=0, failed=0, cancelled=0
        )
        series.append(row.model_dump(mode="json"))
        start += datetime.timedelta(minutes=span)
    return series


@router.get("")
async def overview_page(
    operator: PageOperator, gw: GatewayDep, window: Window = "1h"
) -> HTMLResponse:
    data = await overview_data(gw, window)
    return render("overview.html", page="overview", data=data, windows=list(dashboard.WINDOWS))


@router.get("/api/overview")
async def overview_json(operator: DataOperator, gw: GatewayDep, window: Window = "1h") -> Any:
    return await overview_data(gw, window)


@router.get("/api/live")
async def live(
    request: Request,
    operator: DataOperator,
    gw: GatewayDep,
    sessions: StoreDep,
    view: Literal["overview", "pipeline"] = "overview",
    window: Window = "1h",
) -> EventSourceResponse:
    """The page's figures again every 2 s, as ``event: <view>`` server-sent events,
    while the request's session (or key) still names an operator: a stream open for
    hours ends with its session."""

    async def snapshots() -> AsyncIterator[dict[str, str]]:
        while True:
            try:
                still = await operator_of(request, gw, sessions)
            except DomainError:  # Redis or the key gone: the browser reconnects, or not
                return
            if still != operator:
                return
            data = await (overview_data(gw, window) if view == "overview" else pipeline_data(gw))
            yield {"event": view, "data": json.dumps(data)}
            await asyncio.sleep(LIVE_INTERVAL_S)

    return EventSourceResponse(snapshots(), ping=15)
