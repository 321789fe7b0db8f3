"""The turns pages: the latest turns, filtered and paginated, and a turn's timeline."""

from __future__ import annotations

import datetime
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import TypeAdapter

from projections import dashboard, turns
from schemas.errors import ErrorCode

from ...connections import Gateway
from ...deps import GatewayDep
from ...fields import Id
from ...problems import ProblemError
from .access import DataOperator, PageOperator
from .rendering import PAGE_SIZE, render

router = APIRouter()
_TURN_ID: TypeAdapter[str] = TypeAdapter(Id)


def _cursor(before: str | None) -> tuple[datetime.datetime, str] | None:
    """A page's key: ``<requested_at ISO 8601>|<turn id>``."""
    if not before:
        return None
    when, _, turn_id = before.partition("|")
    try:
        at = datetime.datetime.fromisoformat(when)
        _TURN_ID.validate_python(turn_id)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ProblemError(ErrorCode.INVALID_CURSOR, "before: not a cursor this page gave")
    return at, turn_id


async def turns_data(
    gw: Gateway,
    tenant: str | None,
    agent: str | None,
    status: dashboard.TurnFilter | None,
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
    status: dashboard.TurnFilter | None = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    data = await turns_data(gw, tenant, agent, status, before)
    filters = {"tenant": tenant or "", "agent": agent or "", "status": status or ""}
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v})
    return render(
        "turns.html",
        page="turns",
        data=data,
        filters=filters,
        statuses=list(dashboard.TURN_FILTERS),
        query=query,
    )


@router.get("/api/turns")
async def turns_json(
    operator: DataOperator,
    gw: GatewayDep,
    tenant: _TenantQuery = None,
    agent: _TenantQuery = None,
    status: dashboard.TurnFilter | None = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    return await turns_data(gw, tenant, agent, status, before)


@router.get("/turns/{turn_id}")
async def turn_page(turn_id: Id, operator: PageOperator, gw: GatewayDep) -> HTMLResponse:
    found = await dashboard.turn_anywhere(gw.operator_db, turn_id)
    if found is None:
        raise ProblemError(ErrorCode.TURN_NOT_FOUND, f"no turn {turn_id}")
    steps = await turns.steps(gw.operator_db, found.tenant_id, turn_id)
    timeline = _timeline(found.requested_at, steps)
    trace_id = await dashboard.trace_of(gw.operator_billing_db, turn_id)
    trace_url = gw.settings.trace_url.format(trace_id=trace_id) if trace_id else ""
    return render(
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
