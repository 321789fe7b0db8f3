"""Invoice drafts: requested by an operator, drafted by the invoicer, read by the tenant
and the operator, with a drill-down from each line to the usage events behind it."""

from __future__ import annotations

import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from projections import invoices, plans
from projections.invoices import DraftStatus, InvoiceRow, RevisionRow
from projections.rows import ALL_TENANTS
from schemas import billing
from schemas.billing import period_bounds
from schemas.envelope import derived_id
from schemas.errors import DomainError, ErrorCode

from ..auth import Caller
from ..billing_models import (
    DraftRequested,
    InvoiceDetail,
    InvoiceDraftCreate,
    InvoicePublic,
    RevisionPublic,
    UsageEventPublic,
)
from ..connections import Gateway
from ..deps import CallerDep, GatewayDep, OperatorDep
from ..fields import Id, StoredText
from ..models import Page
from ..openapi import documented
from ..pagination import BY_TIME, Key, page
from ..problems import ProblemError
from .plans import tenant_or_404

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])
DRAFT_WAIT_S = 10.0
_BY_PERIOD: Key[tuple[str, str]] = Key(tuple[StoredText, Id])


def invoice_id_of(tenant_id: str, period: str) -> str:
    """One invoice per tenant and period; each draft of it is a revision."""
    return derived_id(tenant_id, f"invoice/{period}")


def _scope(caller: Caller) -> str:
    return caller.tenant_id or ALL_TENANTS


async def _detail(gw: Gateway, scope: str, row: InvoiceRow) -> InvoiceDetail:
    revisions = await invoices.revisions(gw.billing_db, scope, row.invoice_id)
    return InvoiceDetail(
        **InvoicePublic.model_validate(row, from_attributes=True).model_dump(),
        revisions=[RevisionPublic.model_validate(r, from_attributes=True) for r in revisions],
    )


async def _invoice_or_404(gw: Gateway, scope: str, invoice_id: str) -> InvoiceRow:
    row = await invoices.invoice(gw.billing_db, scope, invoice_id)
    if row is None:
        raise ProblemError(ErrorCode.INVOICE_NOT_FOUND, f"no invoice {invoice_id}")
    return row


@router.post(
    "/drafts",
    status_code=201,
    response_model=InvoiceDetail,
    responses={202: {"model": DraftRequested, "description": "requested, not drafted yet"}},
    **documented(
        "Draft a tenant's invoice",
        "Drafts the tenant's invoice for the period from every usage event recorded so"
        " far, priced by the plan versions in force when each was used. Drafting again"
        " makes a new revision that lists how it differs. Answers with the invoice once"
        " drafted, or 202 with the request if that takes longer.",
        records="`InvoiceDraftRequested` on `agentlog.billing`, keyed by the tenant;"
        " the invoicer records `InvoiceDrafted` or `InvoiceDraftRejected`",
        problems=[
            ErrorCode.TENANT_NOT_FOUND,
            ErrorCode.PERIOD_IN_FUTURE,
            ErrorCode.PLAN_MISSING,
            ErrorCode.CURRENCY_MISMATCH,
        ],
    ),
)
async def request_draft(
    body: InvoiceDraftCreate, operator_id: OperatorDep, gw: GatewayDep
) -> InvoiceDetail | JSONResponse:
    await tenant_or_404(gw, body.tenant_id)
    start, end = period_bounds(body.period)
    if start > datetime.datetime.now(datetime.UTC):
        raise ProblemError(ErrorCode.PERIOD_IN_FUTURE, f"{body.period} has not begun")
    assigned = await plans.assignments(gw.billing_db, body.tenant_id)
    if not any(a.effective_from < end for a in assigned):
        raise ProblemError(ErrorCode.PLAN_MISSING, f"the tenant has no plan in {body.period}")
    invoice_id = invoice_id_of(body.tenant_id, body.period)
    fact = billing.InvoiceDraftRequested(
        tenant_id=body.tenant_id,
        invoice_id=invoice_id,
        period=body.period,
        operator_id=operator_id,
    )
    env = await gw.record(body.tenant_id, fact)

    async def decided() -> invoices.DraftRequestRow | None:
        found = await invoices.draft_request(gw.billing_db, ALL_TENANTS, env.id)
        return None if found is None or found.status is DraftStatus.REQUESTED else found

    request = await gw.billing_waiter.until(f"draft:{env.id}", decided, DRAFT_WAIT_S)
    if request is None:
        pending = DraftRequested(
            request_id=env.id, invoice_id=invoice_id, status=DraftStatus.REQUESTED
        )
        location = f"/v1/invoices/{invoice_id}"
        return JSONResponse(pending.model_dump(), status_code=202, headers={"Location": location})
    if request.status is DraftStatus.REJECTED:
        raise DomainError(request.code or ErrorCode.VALIDATION_FAILED, request.detail or "")
    return await _detail(gw, ALL_TENANTS, await _invoice_or_404(gw, ALL_TENANTS, invoice_id))


@router.get(
    "",
    response_model=Page,
    **documented(
        "List invoices",
        "The tenant's invoices (every tenant's, for an operator, or `tenant_id`'s), by"
        " period, each with its latest revision's total.",
    ),
)
async def list_invoices(
    caller: CallerDep,
    gw: GatewayDep,
    tenant_id: Id | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page:
    scope = _scope(caller)
    if scope == ALL_TENANTS and tenant_id is not None:
        scope = tenant_id  # an operator may look at one tenant; a tenant sees its own only
    rows = await invoices.invoices(gw.billing_db, scope, limit + 1, _BY_PERIOD.after(cursor))
    return page(
        rows,
        limit,
        lambda r: [r.period, r.invoice_id],
        lambda r: InvoicePublic.model_validate(r, from_attributes=True),
    )


@router.get(
    "/{invoice_id}",
    response_model=InvoiceDetail,
    **documented(
        "Read an invoice",
        "The invoice with every revision: lines, totals, the plan versions used, the usage"
        " offsets it covers, and its content hash (docs/billing.md says how to recompute it).",
        problems=[ErrorCode.INVOICE_NOT_FOUND],
    ),
)
async def read_invoice(invoice_id: Id, caller: CallerDep, gw: GatewayDep) -> InvoiceDetail:
    scope = _scope(caller)
    return await _detail(gw, scope, await _invoice_or_404(gw, scope, invoice_id))


@router.get(
    "/{invoice_id}/lines/{number}/usage",
    response_model=Page,
    **documented(
        "List the usage events behind an invoice line",
        "The usage events a line counts (of the latest revision, or `revision`), in order"
        " of use, each with its turn, call and trace ids.",
        problems=[ErrorCode.INVOICE_NOT_FOUND, ErrorCode.NOT_FOUND],
    ),
)
async def line_usage(
    invoice_id: Id,
    number: int,
    caller: CallerDep,
    gw: GatewayDep,
    revision: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Page:
    scope = _scope(caller)
    await _invoice_or_404(gw, scope, invoice_id)
    revisions = await invoices.revisions(gw.billing_db, scope, invoice_id)
    chosen: RevisionRow | None = (
        revisions[-1]
        if revision is None
        else next((r for r in revisions if r.revision == revision), None)
    )
    line = None if chosen is None else next((x for x in chosen.lines if x.number == number), None)
    if chosen is None or line is None:
        raise ProblemError(ErrorCode.NOT_FOUND, f"no line {number} in that revision")
    after = BY_TIME.after(cursor)
    rows = await invoices.line_usage(gw.billing_db, chosen, line, limit + 1, after)
    return page(
        rows,
        limit,
        lambda r: [r.used_at.isoformat(), r.event_id],
        lambda r: UsageEventPublic.model_validate(r, from_attributes=True),
    )
