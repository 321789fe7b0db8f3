"""Dependencies the routes share, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request

from schemas.errors import ErrorCode

from .connections import Gateway
from .problems import ProblemError


async def gateway(request: Request) -> Gateway:
    """The app's connections (made by ``create_app``). A coroutine, as every dependency
    here: FastAPI runs a plain function in a worker thread, a hop per request."""
    return cast(Gateway, request.app.state.gateway)


async def authenticated_tenant(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The tenant whose API key signed the request. ``Intake`` checked the key before
    the body was read; the header is declared here for the API's documentation."""
    tenant: str | None = getattr(request.state, "tenant_id", None)
    if tenant is None:
        raise ProblemError(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <api key>'")
    return tenant


GatewayDep = Annotated[Gateway, Depends(gateway)]
TenantDep = Annotated[str, Depends(authenticated_tenant)]
IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="retrying with the same key creates nothing new (for a day)",
    ),
]
