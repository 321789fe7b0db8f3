"""Dependencies the routes share, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request

from schemas.errors import ErrorCode

from .auth import Caller
from .connections import Gateway
from .problems import ProblemError


async def gateway(request: Request) -> Gateway:
    """The app's connections (made by ``create_app``). A coroutine, as every dependency
    here: FastAPI runs a plain function in a worker thread, a hop per request."""
    return cast(Gateway, request.app.state.gateway)


async def authenticated_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """Whom the request's key names. ``Intake`` checked the key before the body was
    read; the header is declared here for the API's documentation."""
    caller = Caller(
        tenant_id=getattr(request.state, "tenant_id", None),
        operator_id=getattr(request.state, "operator_id", None),
    )
    if caller.tenant_id is None and caller.operator_id is None:
        raise ProblemError(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <api key>'")
    return caller


async def authenticated_tenant(caller: Annotated[Caller, Depends(authenticated_caller)]) -> str:
    """The tenant whose API key signed the request."""
    if caller.tenant_id is None:
        raise ProblemError(ErrorCode.TENANT_KEY_REQUIRED, "send a tenant's API key")
    return caller.tenant_id


async def authenticated_operator(caller: Annotated[Caller, Depends(authenticated_caller)]) -> str:
    """The operator whose key signed the request; a tenant's key is refused (403)."""
    if caller.operator_id is None:
        raise ProblemError(ErrorCode.OPERATOR_REQUIRED, "send an operator's key")
    return caller.operator_id


GatewayDep = Annotated[Gateway, Depends(gateway)]
TenantDep = Annotated[str, Depends(authenticated_tenant)]
OperatorDep = Annotated[str, Depends(authenticated_operator)]
CallerDep = Annotated[Caller, Depends(authenticated_caller)]
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
