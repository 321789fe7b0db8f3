"""Usage: summed by the dimensions asked for, or exported event by event (CSV or JSON
lines, streamed). A tenant sees its own; an operator every tenant's
(``/v1/admin/usage``)."""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from projections import usage
from projections.rows import ALL_TENANTS
from projections.usage import Dimension, LedgerRow
from schemas.errors import ErrorCode
from schemas.usage import Unit, UsageKind

from ..billing_models import UsageEventPublic, UsageGroupPublic
from ..connections import Gateway
from ..deps import GatewayDep, OperatorDep, TenantDep
from ..fields import Id, StoredText
from ..models import Page
from ..openapi import documented, sent_as
from ..pagination import key_of, page
from ..problems import ProblemError

router = APIRouter(tags=["usage"])
EXPORT_PAGE = 1000
_GROUPS = (
    "Comma-separated, any of: tenant (operators), day, agent, kind, resource, unit;"
    " nothing: one total"
)
GroupBy = Annotated[str, Query(description=_GROUPS, max_length=100)]
From = Annotated[datetime.date | None, Query(alias="from", description="first day (UTC)")]
To = Annotated[datetime.date | None, Query(description="day after the last; default tomorrow")]
Format = Annotated[Literal["csv", "jsonl"], Query()]
_EXPORT_COLUMNS = tuple(UsageEventPublic.model_fields)
# What each group's part of a page's key is, so a cursor is read back as a page gave it.
_KEY_PARTS: dict[str, Any] = {
    "tenant": Id,
    "day": datetime.date,
    "agent": StoredText,
    "kind": UsageKind,
    "resource": StoredText,
    "unit": Unit,
}


def _days(
    start: datetime.date | None, end: datetime.date | None
) -> tuple[datetime.date, datetime.date]:
    today = datetime.datetime.now(datetime.UTC).date()
    start = start or today.replace(day=1)
    end = end or today + datetime.timedelta(days=1)
    if end <= start:
        raise ProblemError(ErrorCode.VALIDATION_FAILED, "'to' must be after 'from'")
    return start, end


def _dimensions(group_by: str, scope: str) -> list[Dimension]:
    names = [n.strip() for n in group_by.split(",") if n.strip()]
    allowed = set(get_args(Dimension)) - ({"tenant"} if scope != ALL_TENANTS else set())
    unknown = [n for n in names if n not in allowed]
    if unknown or len(set(names)) != len(names):
        raise ProblemError(
            ErrorCode.VALIDATION_FAILED, f"group_by: {', '.join(unknown) or 'repeated'}"
        )
    return names  # type: ignore[return-value]


async def usage_page(
    gw: Gateway,
    scope: str,
    start: datetime.date | None,
    end: datetime.date | None,
    group_by: str,
    limit: int,
    cursor: str | None,
) -> Page:
    first, last = _days(start, end)
    dimensions = _dimensions(group_by, scope)
    after = key_of(*(_KEY_PARTS[d] for d in dimensions)).after(cursor) if dimensions else None
    rows = await usage.usage_summary(
        gw.billing_db,
        scope,
        first,
        last,
        dimensions,
        limit + 1,
        None if after is None else list(after),
    )
    columns = [usage.COLUMNS[d] for d in dimensions]

    def key(row: usage.UsageGroup) -> list[str]:
        return [str(getattr(row, c)) for c in columns]

    return page(
        rows, limit, key, lambda r: UsageGroupPublic.model_validate(r, from_attributes=True)
    )


def _export_line(row: LedgerRow, fmt: str) -> str:
    public = UsageEventPublic.model_validate(row, from_attributes=True)
    if fmt == "jsonl":
        return public.model_dump_json() + "\n"
    out = io.StringIO()
    values: dict[str, Any] = public.model_dump(mode="json")
    values["quantities"] = json.dumps(values["quantities"], sort_keys=True)
    csv.writer(out).writerow([values[c] for c in _EXPORT_COLUMNS])
    return out.getvalue()


def export_response(
    gw: Gateway, scope: str, start: datetime.date | None, end: datetime.date | None, fmt: str
) -> StreamingResponse:
    first, last = _days(start, end)
    since = datetime.datetime.combine(first, datetime.time(), datetime.UTC)
    until = datetime.datetime.combine(last, datetime.time(), datetime.UTC)

    async def lines() -> AsyncIterator[str]:
        if fmt == "csv":
            yield ",".join(_EXPORT_COLUMNS) + "\r\n"
        after: tuple[datetime.datetime, str] | None = None
        while True:
            rows = await usage.ledger_page(gw.billing_db, scope, since, until, EXPORT_PAGE, after)
            for row in rows:
                yield _export_line(row, fmt)
            if len(rows) < EXPORT_PAGE:
                return
            after = (rows[-1].used_at, rows[-1].event_id)

    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    name = f"usage-{first}-{last}.{fmt}"
    return StreamingResponse(
        lines(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


_EXPORTED = sent_as(
    "the usage events, one a line, as `format` says",
    {
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "`format=csv`: a header line naming the columns "
                + ", ".join(f"`{c}`" for c in _EXPORT_COLUMNS)
                + ", then one line per event (`quantities` as a JSON object)",
            }
        },
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "description": "`format=jsonl`: one JSON object per event and line,"
                " with the same members as the CSV's columns",
            }
        },
    },
)
_SUMMARY = (
    "Usage of the days [from, to) summed by `group_by`, in the order of its key; a page"
    " of `limit` groups, then `next_cursor`."
)
_EXPORT = (
    "Every usage event of the days [from, to) in order of use, with the turn, call and"
    " trace behind it; streamed, so any range can be exported."
)


@router.get("/v1/usage", response_model=Page, **documented("Summarise usage", _SUMMARY))
async def tenant_usage(
    tenant_id: TenantDep,
    gw: GatewayDep,
    start: From = None,
    to: To = None,
    group_by: GroupBy = "day",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page:
    return await usage_page(gw, tenant_id, start, to, group_by, limit, cursor)


@router.get("/v1/usage/export", **_EXPORTED, **documented("Export usage events", _EXPORT))
async def tenant_export(
    tenant_id: TenantDep, gw: GatewayDep, start: From = None, to: To = None, format: Format = "csv"
) -> StreamingResponse:
    return export_response(gw, tenant_id, start, to, format)


@router.get(
    "/v1/admin/usage",
    response_model=Page,
    tags=["admin"],
    **documented("Summarise every tenant's usage", _SUMMARY + " Groups by `tenant` too."),
)
async def operator_usage(
    operator_id: OperatorDep,
    gw: GatewayDep,
    start: From = None,
    to: To = None,
    group_by: GroupBy = "tenant,day",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page:
    return await usage_page(gw, ALL_TENANTS, start, to, group_by, limit, cursor)


@router.get(
    "/v1/admin/usage/export",
    tags=["admin"],
    **_EXPORTED,
    **documented("Export every tenant's usage events", _EXPORT),
)
async def operator_export(
    operator_id: OperatorDep,
    gw: GatewayDep,
    start: From = None,
    to: To = None,
    format: Format = "csv",
) -> StreamingResponse:
    return export_response(gw, ALL_TENANTS, start, to, format)
