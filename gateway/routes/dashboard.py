"""The operators' dashboard at ``/dashboard``: server-rendered pages (Jinja2), kept live
over server-sent events, on the read models and the cluster's offsets.

An operator signs in with an operator key: as ``Authorization: Bearer alop_…`` on each
request, or once on the login page, which sets a session cookie (HttpOnly, SameSite
Strict, 12 hours; the session lives in Redis, so every gateway knows it and signing out
ends it everywhere). A tenant's key gets 403. State-changing requests made with the
cookie must carry ``X-Agentlog-Dashboard: 1``, which a page of another site cannot set.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sse_starlette import EventSourceResponse

from projections import activity, dashboard, dead_letters, turns
from schemas import billing
from schemas.billing import PLATFORM
from schemas.errors import ErrorCode

from ..auth import bearer_key
from ..connections import Gateway
from ..dead_letters import DeadLetterNotFoundError
from ..deps import GatewayDep
from ..problems import ProblemError

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
STATIC = StaticFiles(directory=Path(__file__).parent.parent / "static")
COOKIE = "agentlog_dashboard"
SESSION_S = 12 * 3600
PAGE_SIZE = 50
LIVE_INTERVAL_S = 2.0
_PAGES = Environment(
    loader=FileSystemLoader(Path(__file__).parent.parent / "templates" / "dashboard"),
    autoescape=select_autoescape(),
)
_PAGES.filters["ms"] = lambda v: "-" if v is None else f"{v:,.0f} ms"
_PAGES.filters["when"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")
Window = Literal["15m", "1h", "6h", "24h"]
Status = Literal["completed", "failed", "cancelled", "rejected", "running"]


class LoginRequiredError(Exception):
    """A page asked for without a session: the login page, then back."""


def _session_name(token: str) -> str:
    return f"agentlog:dashboard:session:{hashlib.sha256(token.encode()).hexdigest()}"


async def _operator(request: Request, gw: Gateway) -> str | None:
    """The operator signing the request (key or session cookie), None if nobody is."""
    key = bearer_key(request.headers.get("authorization", ""))
    if key is not None:
        caller = await gw.keys.caller_for(key)
        if caller is None:
            raise ProblemError(ErrorCode.UNAUTHENTICATED, "unknown API key")
        if caller.operator_id is None:
            raise ProblemError(ErrorCode.OPERATOR_REQUIRED, "the dashboard is for operators")
        return caller.operator_id
    token = request.cookies.get(COOKIE)
    if token:
        found = await gw.idempotency.redis.get(_session_name(token))
        if found is not None:
            return found.decode() if isinstance(found, bytes) else str(found)
    return None


async def page_operator(request: Request, gw: GatewayDep) -> str:
    operator = await _operator(request, gw)
    if operator is None:
        raise LoginRequiredError
    return operator


async def data_operator(request: Request, gw: GatewayDep) -> str:
    operator = await _operator(request, gw)
    if operator is None:
        raise ProblemError(ErrorCode.UNAUTHENTICATED, "sign in, or send an operator's key")
    return operator


PageOperator = Annotated[str, Depends(page_operator)]
DataOperator = Annotated[str, Depends(data_operator)]


async def on_login_required(request: Request, exc: Exception) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    target = urllib.parse.quote(request.url.path + query)
    return RedirectResponse(f"/dashboard/login?next={target}", status_code=303)


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_PAGES.get_template(name).render(**context))


# -- signing in -----------------------------------------------------------------------


@router.get("/login")
async def login_page(next: str = "/dashboard", error: str = "") -> HTMLResponse:
    return _render("login.html", next=_local(next), error=error, page="login")


@router.post("/login")
async def login(request: Request, gw: GatewayDep) -> Response:
    form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
    key = form.get("key", [""])[0].strip()
    target = _local(form.get("next", ["/dashboard"])[0])
    caller = await gw.keys.caller_for(key) if key else None
    if caller is None or caller.operator_id is None:
        why = "That is not an operator's key." if caller else "Unknown key."
        return _render("login.html", next=target, error=why, page="login")
    token = secrets.token_urlsafe(32)
    await gw.idempotency.redis.set(_session_name(token), caller.operator_id, ex=SESSION_S)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, gw: GatewayDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        await gw.idempotency.redis.delete(_session_name(token))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


def _local(target: str) -> str:
    """``target`` if it is a path of the dashboard (no open redirect), else its home."""
    return target if target.startswith("/dashboard") and "//" not in target else "/dashboard"


# -- overview -------------------------------------------------------------------------


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
    return _render("overview.html", page="overview", data=data, windows=list(dashboard.WINDOWS))


@router.get("/api/overview")
async def overview_json(operator: DataOperator, gw: GatewayDep, window: Window = "1h") -> Any:
    return await overview_data(gw, window)


@router.get("/api/live")
async def live(
    operator: DataOperator,
    gw: GatewayDep,
    view: Literal["overview", "pipeline"] = "overview",
    window: Window = "1h",
) -> EventSourceResponse:
    """The page's figures again every 2 s, as ``event: <view>`` server-sent events."""

    async def snapshots() -> AsyncIterator[dict[str, str]]:
        while True:
            data = await (overview_data(gw, window) if view == "overview" else pipeline_data(gw))
            yield {"event": view, "data": json.dumps(data)}
            await asyncio.sleep(LIVE_INTERVAL_S)

    return EventSourceResponse(snapshots(), ping=15)


# -- pipeline -------------------------------------------------------------------------


async def pipeline_data(gw: Gateway) -> dict[str, Any]:
    snapshot = await gw.pipeline.snapshot()
    return {
        "at": datetime.datetime.now(datetime.UTC).isoformat(),
        "groups": [
            {
                "role": g.role,
                "group": g.group,
                "topic": g.topic,
                "partition": g.partition,
                "committed": g.committed,
                "end": g.end,
                "lag": g.lag,
            }
            for g in snapshot.groups
        ],
        "topics": {topic: sum(ends.values()) for topic, ends in snapshot.ends.items()},
        "ends": snapshot.ends,
    }


@router.get("/pipeline")
async def pipeline_page(operator: PageOperator, gw: GatewayDep) -> HTMLResponse:
    return _render("pipeline.html", page="pipeline", data=await pipeline_data(gw))


@router.get("/api/pipeline")
async def pipeline_json(operator: DataOperator, gw: GatewayDep) -> Any:
    return await pipeline_data(gw)


# -- turns ----------------------------------------------------------------------------


def _cursor(before: str | None) -> tuple[datetime.datetime, str] | None:
    """A page's key: ``<requested_at ISO 8601>|<turn id>``."""
    if not before:
        return None
    when, _, turn_id = before.partition("|")
    try:
        at = datetime.datetime.fromisoformat(when)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None or not turn_id:
        raise ProblemError(ErrorCode.INVALID_CURSOR, "before: not a cursor this page gave")
    return at, turn_id


async def turns_data(
    gw: Gateway,
    tenant: str | None,
    agent: str | None,
    status: Status | None,
    before: str | None,
) -> dict[str, Any]:
    rows = await dashboard.turns_page(
        gw.operator_db,
        tenant_id=tenant or None,
        agent_id=agent or None,
        status=status,
        before=_cursor(before),
        limit=PAGE_SIZE + 1,
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    last = rows[-1] if rows else None
    return {
        "items": [r.model_dump(mode="json") for r in rows],
        "next": f"{last.requested_at.isoformat()}|{last.turn_id}" if more and last else None,
    }


_TenantQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")]


@router.get("/turns")
async def turns_page(
    request: Request,
    operator: PageOperator,
    gw: GatewayDep,
    tenant: _TenantQuery = None,
    agent: _TenantQuery = None,
    status: Status | None = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    data = await turns_data(gw, tenant, agent, status, before)
    filters = {"tenant": tenant or "", "agent": agent or "", "status": status or ""}
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v})
    return _render(
        "turns.html",
        page="turns",
        data=data,
        filters=filters,
        statuses=list(Status.__args__),  # type: ignore[attr-defined]
        query=query,
    )


@router.get("/api/turns")
async def turns_json(
    operator: DataOperator,
    gw: GatewayDep,
    tenant: _TenantQuery = None,
    agent: _TenantQuery = None,
    status: Status | None = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    return await turns_data(gw, tenant, agent, status, before)


@router.get("/turns/{turn_id}")
async def turn_page(turn_id: str, operator: PageOperator, gw: GatewayDep) -> HTMLResponse:
    found = await dashboard.turn_anywhere(gw.operator_db, turn_id)
    if found is None:
        raise ProblemError(ErrorCode.TURN_NOT_FOUND, f"no turn {turn_id}")
    steps = await turns.steps(gw.operator_db, found.tenant_id, turn_id)
    timeline = _timeline(found.requested_at, steps)
    trace_id = await dashboard.trace_of(gw.operator_billing_db, turn_id)
    trace_url = gw.settings.trace_url.format(trace_id=trace_id) if trace_id else ""
    return _render(
        "turn.html",
        page="turns",
        turn=found,
        timeline=timeline,
        trace_id=trace_id,
        trace_url=trace_url if gw.settings.trace_url else "",
    )


def _timeline(start: datetime.datetime, steps: list[turns.StepRow]) -> list[dict[str, Any]]:
    """Each step with its time since the turn was requested, and for a call's result
    the call's duration, tokens and error."""
    requested: dict[str, datetime.datetime] = {}
    timeline = []
    for step in steps:
        kind = step.type.split(".")[1:3]  # e.g. ["model_call", "completed"]
        detail = step.detail
        call = detail.get("call_id") or detail.get("tool_call_id")
        entry: dict[str, Any] = {
            "what": " ".join(kind).replace("_", " "),
            "kind": kind[0] if kind else "",
            "at_ms": (step.recorded_at - start).total_seconds() * 1000,
            "detail": "",
            "error": detail.get("code"),
        }
        if kind[1:] == ["requested"] and call:
            requested[call] = step.recorded_at
            entry["detail"] = detail.get("model") or detail.get("tool") or ""
        elif call and call in requested:
            entry["duration_ms"] = (step.recorded_at - requested[call]).total_seconds() * 1000
        usage = detail.get("usage")
        if isinstance(usage, dict) and kind and kind[0] == "model_call":
            entry["tokens"] = (
                f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out"
            )
        timeline.append(entry)
    return timeline


# -- dead letters ---------------------------------------------------------------------


def _dead_letter_cursor(before: str | None) -> dict[int, int] | None:
    """A page's key: ``<partition>:<offset>`` per partition, comma-separated."""
    if not before:
        return None
    try:
        pairs = [part.split(":") for part in before.split(",")]
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise ProblemError(
            ErrorCode.INVALID_CURSOR, "before: not a cursor this page gave"
        ) from None


async def dead_letters_data(gw: Gateway, before: str | None) -> dict[str, Any]:
    letters, cursor = await gw.dead_letters.page(_dead_letter_cursor(before), PAGE_SIZE)
    redriven = await dead_letters.redrives(gw.operator_billing_db, [d.id for d in letters])
    processed = await dashboard.command_outcomes(
        gw.operator_db, [d.record_id for d in letters if d.id in redriven and d.record_id]
    )
    items = []
    for letter in letters:
        redrive = redriven.get(letter.id)
        items.append(
            {
                **asdict(letter),
                "id": letter.id,
                "at": letter.at.isoformat(),
                "redrive": redrive.model_dump(mode="json") if redrive else None,
                "outcome": processed.get(letter.record_id) if redrive else None,
            }
        )
    next_ = ",".join(f"{p}:{o}" for p, o in sorted(cursor.items())) if cursor else None
    return {"items": items, "next": next_}


_Cursor = Annotated[str | None, Query(max_length=2000)]


@router.get("/dead-letters")
async def dead_letters_page(
    operator: PageOperator, gw: GatewayDep, before: _Cursor = None
) -> HTMLResponse:
    data = await dead_letters_data(gw, before)
    return _render("dead_letters.html", page="dead-letters", data=data)


@router.get("/api/dead-letters")
async def dead_letters_json(operator: DataOperator, gw: GatewayDep, before: _Cursor = None) -> Any:
    return await dead_letters_data(gw, before)


# How long a re-drive that has not recorded where it went is taken to be under way.
REDRIVE_STALE = datetime.timedelta(minutes=1)


@router.post("/dead-letters/{partition}/{offset}/redrive")
async def redrive(
    partition: int, offset: int, request: Request, operator: DataOperator, gw: GatewayDep
) -> Any:
    """Write a dead letter again to its topic: audited (``DeadLetterRedriveRequested``)
    before, recorded (``DeadLetterRedriven``) after. Once per dead letter; a re-drive
    asked for more than ``REDRIVE_STALE`` ago that never recorded where it went (its
    gateway stopped half-way) may be asked for again: consumers drop a record they have
    seen, so writing it twice does no harm."""
    if bearer_key(request.headers.get("authorization", "")) is None and (
        request.headers.get("x-agentlog-dashboard") != "1"
    ):
        raise ProblemError(ErrorCode.DASHBOARD_HEADER_REQUIRED, "send X-Agentlog-Dashboard: 1")
    letter = f"{partition}:{offset}"
    earlier = (await dead_letters.redrives(gw.operator_billing_db, [letter])).get(letter)
    if earlier is not None and (
        earlier.redriven_at is not None
        or datetime.datetime.now(datetime.UTC) - earlier.requested_at < REDRIVE_STALE
    ):
        raise ProblemError(ErrorCode.DEAD_LETTER_REDRIVEN, f"{letter} was re-driven already")
    try:
        record = await gw.dead_letters.record(partition, offset)
    except DeadLetterNotFoundError:
        raise ProblemError(ErrorCode.DEAD_LETTER_NOT_FOUND, f"no dead letter {letter}") from None
    origin = dict(record.headers).get("dlq.topic", b"").decode(errors="replace")
    asked = await gw.record(
        PLATFORM,
        billing.DeadLetterRedriveRequested(dead_letter=letter, operator_id=operator, topic=origin),
    )
    topic, to_partition, to_offset = await gw.dead_letters.redrive(gw.publisher, record)
    done = billing.DeadLetterRedriven(
        dead_letter=letter,
        operator_id=operator,
        topic=topic,
        partition=to_partition,
        offset=to_offset,
    )
    await gw.publisher.publish(asked.follow(done, step="redriven", source=asked.source))
    return {"dead_letter": letter, "topic": topic, "partition": to_partition, "offset": to_offset}


# -- tenants --------------------------------------------------------------------------


@router.get("/tenants")
async def tenants_page(
    operator: PageOperator,
    gw: GatewayDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    rows = await dashboard.tenants_page(gw.operator_db, after, PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    ids = [r.tenant_id for r in rows]
    today = datetime.datetime.now(datetime.UTC).date()
    month = today.replace(day=1)
    usage, invoices = await asyncio.gather(
        dashboard.usage_of(gw.operator_billing_db, ids, month, today + datetime.timedelta(days=1)),
        dashboard.invoices_of(gw.operator_billing_db, ids, 5 * len(ids) or 1),
    )
    return _render(
        "tenants.html",
        page="tenants",
        tenants=rows,
        usage={t: [u for u in usage if u.tenant_id == t] for t in ids},
        invoices={t: [i for i in invoices if i.tenant_id == t] for t in ids},
        month=month.strftime("%Y-%m"),
        next=rows[-1].tenant_id if more and rows else None,
    )


def mount(app: Any) -> None:
    """The dashboard's routes, its static files and its sign-in redirect, on ``app``."""
    app.include_router(router)
    app.mount("/dashboard/static", STATIC, name="dashboard-static")
    app.add_exception_handler(LoginRequiredError, on_login_required)
