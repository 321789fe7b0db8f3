"""The tenants page: each tenant's usage of the month so far and its latest invoice
drafts."""

from __future__ import annotations

import asyncio
import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from projections import dashboard

from ...deps import GatewayDep
from ...fields import PRINTABLE
from .access import PageOperator
from .rendering import PAGE_SIZE, render

router = APIRouter()


@router.get("/tenants")
async def tenants_page(
    operator: PageOperator,
    gw: GatewayDep,
    after: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
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
    return render(
        "tenants.html",
        page="tenants",
        tenants=rows,
        usage={t: [u for u in usage if u.tenant_id == t] for t in ids},
        invoices={t: [i for i in invoices if i.tenant_id == t] for t in ids},
        month=month.strftime("%Y-%m"),
        next=rows[-1].tenant_id if more and rows else None,
    )
