"""What a write does after it recorded its command: wait for the outcome, and answer with
it; and what it answers when it cannot read what follows (202: the command is recorded).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from projections import billing_outcomes, outcomes
from projections.billing_outcomes import BillingOutcomeRow
from projections.outcomes import Outcome
from schemas.envelope import Envelope
from schemas.errors import DomainError, ErrorCode

from .connections import Gateway
from .problems import OUTAGES

OUTCOME_WAIT_S = 10.0


class CommandRecordedError(Exception):
    """A command is on the log but what follows it cannot be read now: answered 202."""

    def __init__(self, body: dict[str, Any], location: str) -> None:
        super().__init__(location)
        self.body = body
        self.location = location


class OutcomeNotProjectedError(Exception):
    """A command's outcome was not projected within ``OUTCOME_WAIT_S`` (Kafka or the
    projector is down, or far behind): the resource as it stands is no answer."""


async def on_recorded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CommandRecordedError)
    return JSONResponse(exc.body, status_code=202, headers={"Location": exc.location})


async def settle(
    gw: Gateway, tenant_id: str, env: Envelope[Any], timeout: float = OUTCOME_WAIT_S
) -> None:
    """Wait for the command's outcome; raise its rejection, or, if it is not projected
    in time, ``OutcomeNotProjectedError`` (inside ``recorded``: a 202)."""
    found = await gw.waiter.until(
        f"command:{env.id}", lambda: outcomes.outcome(gw.db, tenant_id, env.id), timeout
    )
    if found is None:
        raise OutcomeNotProjectedError(env.id)
    if found.outcome is Outcome.REJECTED:
        raise DomainError(found.code or ErrorCode.VALIDATION_FAILED, found.detail or "")


@contextlib.asynccontextmanager
async def recorded(env: Envelope[Any], location: str, **ids: str) -> AsyncIterator[None]:
    """Around what a request reads after recording ``env``: an outage there, or an
    outcome not projected in time, answers 202 with what was recorded (a 503 would
    invite a duplicate, and the resource as it stands, a 404, would be false)."""
    try:
        yield
    except (*OUTAGES, OutcomeNotProjectedError) as exc:
        raise CommandRecordedError(
            {**ids, "command_id": env.id, "status": "requested"}, location
        ) from exc


async def billing_decided(
    gw: Gateway, env: Envelope[Any], location: str, **ids: str
) -> BillingOutcomeRow:
    """Wait for the billing decider's outcome of the request ``env``; raise its
    rejection. An outcome not projected in time answers 202 with what was recorded."""
    async with recorded(env, location, **ids):
        row = await gw.billing_waiter.until(
            billing_outcomes.notification(env.id),
            lambda: billing_outcomes.outcome(gw.billing_db, env.id),
            OUTCOME_WAIT_S,
        )
        if row is None:
            raise OutcomeNotProjectedError(env.id)
    if not row.accepted:
        raise DomainError(row.code or ErrorCode.VALIDATION_FAILED, row.detail or "")
    return row
