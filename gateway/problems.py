"""The one registry of error codes, rendered as RFC 9457 problem details.

Domain outcomes carry the same codes (``TurnRejected.code``), so a rejection recorded in
the log and the HTTP error a client sees never disagree. ``docs/api.md`` lists them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from aiokafka.errors import KafkaError
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

log = logging.getLogger(__name__)

# Kafka or Postgres not answering: nothing was recorded, the client may retry.
OUTAGES = (KafkaError, psycopg.OperationalError, PoolTimeout)

PROBLEM_BASE = "https://agentlog.dev/problems/"


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str


PROBLEMS: dict[str, ProblemType] = {
    "UNAUTHENTICATED": ProblemType(401, "Missing or invalid API key"),
    "VALIDATION_FAILED": ProblemType(422, "The request is not valid"),
    "MALFORMED_BODY": ProblemType(400, "The request body is not valid JSON"),
    "BAD_REQUEST": ProblemType(400, "The request is not valid HTTP for this resource"),
    "MESSAGE_TOO_LARGE": ProblemType(413, "The message is too large"),
    "BODY_TOO_LARGE": ProblemType(413, "The request body is too large"),
    "RECORD_TOO_LARGE": ProblemType(413, "The command is too large to record"),
    "JSON_TOO_DEEP": ProblemType(422, "The request body nests too deeply"),
    "BODY_TIMEOUT": ProblemType(408, "The request body did not arrive in time"),
    "TOO_MANY_STREAMS": ProblemType(429, "Too many open streams for this tenant"),
    "AGENT_NOT_FOUND": ProblemType(404, "No such agent"),
    "KEY_NOT_FOUND": ProblemType(404, "No such API key"),
    "AGENT_EXISTS": ProblemType(409, "The agent already exists"),
    "AGENT_DISABLED": ProblemType(409, "The agent is disabled"),
    "TOOL_UNKNOWN": ProblemType(422, "The agent names a tool that is not registered"),
    "TOOL_ADDRESS_REFUSED": ProblemType(
        422, "The tool's address is on a network tools may not reach"
    ),
    "SESSION_NOT_FOUND": ProblemType(404, "No such session"),
    "SESSION_EXISTS": ProblemType(409, "The session already exists"),
    "TURN_NOT_FOUND": ProblemType(404, "No such turn"),
    "TURN_IN_PROGRESS": ProblemType(409, "Another turn of this session is running"),
    "TURN_NOT_ACTIVE": ProblemType(409, "The turn is not running"),
    "INVALID_CURSOR": ProblemType(400, "The pagination cursor is not valid"),
    "IDEMPOTENCY_KEY_REUSED": ProblemType(422, "The Idempotency-Key was used for another request"),
    "NOT_FOUND": ProblemType(404, "No such resource"),
    "METHOD_NOT_ALLOWED": ProblemType(405, "The resource does not support this method"),
    "NOT_READY": ProblemType(503, "A dependency is not reachable"),
    "UNAVAILABLE": ProblemType(503, "Kafka or Postgres did not answer; retry the request"),
    "INTERNAL_ERROR": ProblemType(500, "An unexpected error; it was logged"),
    # Codes recorded on turns and tool calls (events), listed so clients know them all.
    "TOOL_NOT_ALLOWED": ProblemType(422, "The model called a tool the agent may not use"),
    "TOOL_SCHEMA_INVALID": ProblemType(422, "The model's tool arguments fail the tool's schema"),
    "TOOL_CALL_LIMIT": ProblemType(422, "Too many tool calls in one turn"),
    "TOOL_TIMEOUT": ProblemType(504, "The tool did not answer in time"),
    "TOOL_HTTP_ERROR": ProblemType(502, "The tool answered with an HTTP error"),
    "TOOL_UNAVAILABLE": ProblemType(502, "The tool could not be reached"),
    "TOOL_HEADERS_INVALID": ProblemType(422, "A secret header of the tool cannot be sent"),
    "MAX_STEPS_EXCEEDED": ProblemType(422, "The turn needed more model calls than allowed"),
    "STEP_UNPROCESSABLE": ProblemType(422, "A step of the turn could not be processed"),
    "TURN_TIMED_OUT": ProblemType(504, "The turn made no progress within its deadline"),
    "MODEL_TIMEOUT": ProblemType(504, "The model provider did not answer in time"),
    "MODEL_UNAVAILABLE": ProblemType(502, "The model provider failed"),
    "MODEL_RATE_LIMITED": ProblemType(429, "The model provider is rate limiting"),
    "MODEL_BAD_REQUEST": ProblemType(502, "The model provider refused the request"),
    "MODEL_AUTH_FAILED": ProblemType(502, "The model provider refused our credentials"),
    "MODEL_BAD_RESPONSE": ProblemType(502, "The model provider answered in an unknown format"),
    "MODEL_UNKNOWN": ProblemType(422, "The agent names a model no provider serves"),
}


class ProblemError(Exception):
    def __init__(
        self, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        if code not in PROBLEMS:
            raise KeyError(f"unregistered problem code {code}")
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(code: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    problem = PROBLEMS[code]
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
    assert isinstance(exc, ProblemError)
    response = problem_response(exc.code, exc.detail, request.url.path, **exc.extra)
    response.headers.update(exc.headers)
    return response


_HTTP_ERRORS = {
    400: "MALFORMED_BODY",  # FastAPI: a body it cannot decode (bad UTF-8, say)
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
}


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own errors: an unknown route, a method a route does not
    have, a body that cannot be decoded. Its headers (``Allow`` on a 405) are kept."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_ERRORS.get(exc.status_code)
    if code is None:
        code = "BAD_REQUEST" if 400 <= exc.status_code < 500 else "INTERNAL_ERROR"
    response = problem_response(code, str(exc.detail), request.url.path)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path; a path served by
        # several routes (GET and POST /v1/agents) allows them all.
        methods = {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.path_regex.match(request.url.path)
            for method in route.methods or ()
        }
        response.headers["Allow"] = ", ".join(sorted(methods - {"HEAD"}))
    return response


async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Kafka or Postgres failed under the request: nothing was half done (a command is
    either on its topic or not), so the client may retry."""
    return unavailable(request.url.path, exc)


def unavailable(path: str, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable", extra={"path": path, "error": repr(exc)})
    response = problem_response("UNAVAILABLE", type(exc).__name__, path)
    response.headers["Retry-After"] = "1"
    return response


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return problem_response("INTERNAL_ERROR", "see the gateway's log", request.url.path)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            "MALFORMED_BODY", "the body is not valid JSON", request.url.path, errors=errors
        )
    return problem_response(
        "VALIDATION_FAILED", "the request failed validation", request.url.path, errors=errors
    )
