"""Health, readiness and metrics, for orchestrators and operators; no API key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.errors import ErrorCode
from streams.logs import redact

from ..deps import GatewayDep
from ..openapi import documented
from ..problems import ProblemError

router = APIRouter(tags=["ops"])


@router.get(
    "/healthz",
    **documented("Liveness", "Answers while the process serves requests; checks nothing else."),
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    **documented(
        "Readiness",
        "Ready when Postgres answers a query and Kafka a metadata request, each within"
        " 2 s; until then a load balancer should send this gateway no traffic.",
        problems=[ErrorCode.NOT_READY],
    ),
)
async def readyz(gw: GatewayDep) -> dict[str, str]:
    for dependency, ping in (("postgres", gw.db.ping), ("kafka", gw.publisher.ping)):
        try:
            async with asyncio.timeout(2):
                await ping()
        except Exception as exc:
            raise ProblemError(ErrorCode.NOT_READY, redact(f"{dependency}: {exc!r}")) from exc
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "metrics in the Prometheus text format"}},
    **documented(
        "Prometheus metrics",
        "The gateway's requests and their latency per route, in the Prometheus text"
        " exposition format.",
    ),
)
async def metrics() -> PlainTextResponse:
    return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)
