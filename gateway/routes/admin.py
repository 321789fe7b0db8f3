"""The platform operator's resources: usage recorded from outside, and billing replays
(price plans and assignments are ``plans``'s). Only an operator's key is accepted here
(403 otherwise)."""

from __future__ import annotations

import datetime
import hashlib

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from projections import usage
from schemas.envelope import derived_id
from schemas.errors import ErrorCode
from schemas.usage import UsageRecorded, unbillable

from ..billing_models import (
    ReplayCreate,
    ReplayPublic,
    UsageCreate,
    UsageRecordedPublic,
)
from ..connections import Gateway
from ..deps import GatewayDep, OperatorDep
from ..fields import Id
from ..openapi import documented
from ..problems import ProblemError
from .plans import tenant_or_404

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/usage",
    status_code=202,
    response_model=UsageRecordedPublic,
    **documented(
        "Record usage",
        "Usage the platform's own workers do not see (an import, stored bytes). The"
        " event's id derives from the tenant and `usage_id`: recording it again is the same"
        " event, counted once.",
        records="`UsageRecorded` on `agentlog.usage`, keyed by the tenant",
        problems=[ErrorCode.TENANT_NOT_FOUND, ErrorCode.VALIDATION_FAILED],
    ),
)
async def record_usage(
    body: UsageCreate, operator_id: OperatorDep, gw: GatewayDep
) -> UsageRecordedPublic:
    await tenant_or_404(gw, body.tenant_id)
    fact = UsageRecorded(
        tenant_id=body.tenant_id,
        kind=body.kind,
        resource=body.resource,
        quantities=body.quantities,
        used_at=body.used_at,
        call_id=body.usage_id,
    )
    reason = unbillable(fact)
    if reason is not None:
        raise ProblemError(ErrorCode.USAGE_UNBILLABLE, reason)
    fact = fact.model_copy(update={"used_at": fact.used_at.astimezone(datetime.UTC)})
    event_id = derived_id(body.tenant_id, body.usage_id)
    await _refuse_other_usage(gw, fact, event_id)
    env = await gw.record(body.tenant_id, fact, id=event_id)
    return UsageRecordedPublic(event_id=env.id)


async def _refuse_other_usage(gw: Gateway, fact: UsageRecorded, event_id: str) -> None:
    """Refuse a ``usage_id`` recorded before with other values: the event is the same
    (its id derives from the usage id), so its first values would count and these be
    dropped unseen. The ledger has every applied one; Redis, for a day, those recorded
    but not yet applied."""
    values = (fact.kind, fact.resource, dict(sorted(fact.quantities.items())), fact.used_at)
    found = await usage.ledger_event(gw.billing_db, fact.tenant_id, event_id)
    if found is not None and (found.kind, found.resource, found.quantities, found.used_at) != (
        values
    ):
        raise ProblemError(
            ErrorCode.USAGE_ID_REUSED, f"usage {fact.call_id!r} was recorded with other values"
        )
    fingerprint = hashlib.sha256(repr(values).encode()).hexdigest()
    # A space: no Idempotency-Key of the tenant's can name this entry.
    await gw.idempotency.check(
        fact.tenant_id, f"usage {fact.call_id}", fingerprint, ErrorCode.USAGE_ID_REUSED
    )


@router.post(
    "/replays",
    status_code=202,
    response_model=ReplayPublic,
    **documented(
        "Replay the billing read models",
        "Rebuilds the usage and invoice read models from offset 0 into tables beside the"
        " live ones, compares them with the live tables, computes every draft again from"
        " them, and with `swap` swaps them in, while the platform serves. Runs in the"
        " background: read its progress at `GET /v1/admin/replays/{id}`.",
        records="nothing on a topic: a replay reads the log and writes read models",
        problems=[ErrorCode.REPLAY_RUNNING],
    ),
)
async def start_replay(
    body: ReplayCreate, operator_id: OperatorDep, gw: GatewayDep
) -> JSONResponse:
    report = await gw.replays.start(body.swap, operator_id)
    return JSONResponse(
        report, status_code=202, headers={"Location": f"/v1/admin/replays/{report['replay_id']}"}
    )


@router.get(
    "/replays/{replay_id}",
    response_model=ReplayPublic,
    **documented(
        "Read a replay",
        "Its status (`running`, `succeeded`, `differs`, `failed`, `cancelled`), records"
        " read of how many, and once done what it found.",
        problems=[ErrorCode.REPLAY_NOT_FOUND],
    ),
)
async def read_replay(replay_id: Id, operator_id: OperatorDep, gw: GatewayDep) -> ReplayPublic:
    return ReplayPublic.model_validate(await gw.replays.status(replay_id))
