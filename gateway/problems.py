"""Errors as RFC 9457 problem details: the gateway renders the codes of the one registry
(``schemas.errors``), never invents one. ``docs/api.md`` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from projections.database import OUTAGES as DATABASE_OUTAGES
from schemas.errors import ERRORS, DomainError, ErrorCode
from streams.publisher import WriteTimeoutError

log = logging.getLogger(__name__)

# Kafka or Postgres not answering: the client may retry. Nothing was recorded, unless
# Kafka took the record and did not acknowledge it in time (``WriteTimeoutError``).
OUTAGES = (KafkaError, *DATABASE_OUTAGES)

PROBLEM_BASE = "https://agentlog.dev/problems/"


class ProblemError(DomainError):
    """A domain error as the gateway answers it, with HTTP headers (``Retry-After``) or
    extra members of the problem."""

    def __init__(
        self,
        code: ErrorCode | str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(code, detail)
        self.headers = headers or {}
        self.extra = extra


def problem_response(code: ErrorCode, detail: str, instance: str, **extra: Any) -> JSONResponse:
    problem = ERRORS[code]
    body = {
        "type": PROBLEM_BASE + code.lower().replace("_", "-"),
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "instance": instance,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=problem.status, media_type="application/problem+json")


async def on_problem(request: Request, exc: Exception) -> JSONResponse:
    """A ``DomainError`` raised anywhere under a route (a ``ProblemError`` may add
    headers and members)."""
    assert isinstance(exc, DomainError)
    extra = exc.extra if isinstance(exc, ProblemError) else {}
    response = problem_response(exc.code, exc.detail, request.url.path, **extra)
    if isinstance(exc, ProblemError):
        response.headers.update(exc.headers)
    return response


_HTTP_ERRORS = {
    400: ErrorCode.MALFORMED_BODY,  # FastAPI: a body it cannot decode (bad UTF-8, say)
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
}


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors: an unknown route, a method a route does not
    have, a body that cannot be decoded. Its headers (``Allow`` on a 405) are kept."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_ERRORS.get(exc.status_code)
    if code is None:
        code = ErrorCode.BAD_REQUEST if 400 <= exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
    response = problem_response(code, str(exc.detail), request.url.path)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """The methods the request's path serves. Starlette names those of the first route
    on the path only, and a path may be served by several routes (GET and POST
    /v1/agents), of several routers. Of the route templates that match the path, the
    most specific names it: ``/v1/invoices/drafts`` is that route's path, not an
    invoice id of ``/v1/invoices/{invoice_id}``."""
    path = request.scope["path"]
    served = [
        (_specificity(route.path_format), method)
        for route in _flattened(request.app.router.routes)
        if route.path_regex.match(path)
        for method in _methods_of(route)
    ]
    best = min((rank for rank, _method in served), default=())
    return [method for method in _METHODS if (best, method) in served]


def _flattened(routes: list[BaseRoute]) -> Iterator[Any]:
    """Every route with its whole path (recent FastAPI keeps an included router as one
    route, with its own routes inside: ``effective_route_contexts``)."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            yield from contexts()
        elif getattr(route, "path_regex", None) is not None:
            yield route


def _methods_of(route: Any) -> list[str]:
    if isinstance(route, Mount):  # the gateway mounts static files only, read with GET
        return ["GET"] if isinstance(route.app, StaticFiles) else []
    return [method for method in _METHODS if method in (route.methods or ())]


def _specificity(template: str) -> tuple[bool, ...]:
    """Per segment of a path template, whether a parameter takes it: the least is the
    most specific (a literal segment before a parameter)."""
    return tuple("{" in segment for segment in template.split("/"))


async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Kafka or Postgres failed under the request, so the client may retry: a record is
    either on its topic or not, and the detail says when it may yet be."""
    return unavailable(request.url.path, exc)


def unavailable(path: str, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable", extra={"path": path, "error": repr(exc)})
    response = problem_response(ErrorCode.UNAVAILABLE, _unavailable_detail(exc), path)
    response.headers["Retry-After"] = "1"
    return response


def _unavailable_detail(exc: Exception) -> str:
    """What failed, by exception class (an exception's text may quote a secret); for a
    write Kafka did not acknowledge in time, whether its record may yet be written."""
    if not isinstance(exc, WriteTimeoutError):
        return type(exc).__name__
    if exc.pending:
        return (
            f"Kafka did not acknowledge the record within {exc.timeout_s:g} s; it may yet"
            " be written once Kafka answers: retry with the same Idempotency-Key"
        )
    return f"Kafka did not answer within {exc.timeout_s:g} s; the record was not written"


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return problem_response(ErrorCode.INTERNAL_ERROR, "see the gateway's log", request.url.path)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            ErrorCode.MALFORMED_BODY, "the body is not valid JSON", request.url.path, errors=errors
        )
    return problem_response(
        ErrorCode.VALIDATION_FAILED,
        "the request failed validation",
        request.url.path,
        errors=errors,
    )
