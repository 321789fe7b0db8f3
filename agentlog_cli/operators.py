"""Operators of the platform, from the command line: a new operator is a request the
billing decider decides (a name names one operator), waited for until the billing
projection shows its outcome, so a key printed here works at once."""

from __future__ import annotations

from pydantic import ValidationError

from gateway.auth import issue_operator_key
from projections import billing_outcomes
from projections.ops import BILLING
from schemas.billing import PLATFORM
from schemas.envelope import envelope
from schemas.errors import ErrorCode
from streams.settings import Settings

from .recording import SOURCE, record_and_wait


async def create_operator(settings: Settings, name: str) -> str:
    """Ask for an operator and its key; return the key (shown once, stored hashed), or
    exit with the rejection's code and reason."""
    try:
        key, request = issue_operator_key(name)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"]  # the schema's own limits
        raise SystemExit(f"{ErrorCode.VALIDATION_FAILED}: the name: {why}") from exc
    env = envelope(request, source=SOURCE, tenant_id=PLATFORM)
    outcome = await record_and_wait(
        settings,
        [env],
        billing_outcomes.notification(env.id),
        lambda db: billing_outcomes.outcome(db, env.id),
        schema=settings.billing_schema,
        projection=BILLING,
    )
    if not outcome.accepted:
        raise SystemExit(f"{outcome.code}: {outcome.detail}")
    return key
