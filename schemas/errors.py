"""The one registry of error codes, and the domain error that carries one.

A code is stable: it is recorded in events (``TurnRejected.code``, ``ToolCallFailed.code``),
rendered by the gateway as RFC 9457 problem details, and listed in ``docs/api.md``. So a
rejection recorded in the log and the HTTP error a client sees never disagree. Code that
emits a code names an ``ErrorCode`` member, never a bare string.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    # Requests the gateway refuses before or while reading them.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    MALFORMED_BODY = "MALFORMED_BODY"
    BAD_REQUEST = "BAD_REQUEST"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    RECORD_TOO_LARGE = "RECORD_TOO_LARGE"
    JSON_TOO_DEEP = "JSON_TOO_DEEP"
    BODY_TIMEOUT = "BODY_TIMEOUT"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    INVALID_CURSOR = "INVALID_CURSOR"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_READY = "NOT_READY"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Resources, and commands the command handler rejects.
    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    KEY_REVOKED = "KEY_REVOKED"
    AGENT_EXISTS = "AGENT_EXISTS"
    AGENT_DISABLED = "AGENT_DISABLED"
    TOOL_UNKNOWN = "TOOL_UNKNOWN"
    TOOL_EXISTS = "TOOL_EXISTS"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    TOOL_ADDRESS_REFUSED = "TOOL_ADDRESS_REFUSED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_EXISTS = "SESSION_EXISTS"
    TURN_NOT_FOUND = "TURN_NOT_FOUND"
    TURN_IN_PROGRESS = "TURN_IN_PROGRESS"
    TURN_NOT_ACTIVE = "TURN_NOT_ACTIVE"
    # Billing: operators, plans, drafts.
    OPERATOR_REQUIRED = "OPERATOR_REQUIRED"
    TENANT_KEY_REQUIRED = "TENANT_KEY_REQUIRED"
    TENANT_NOT_FOUND = "TENANT_NOT_FOUND"
    CURRENCY_UNKNOWN = "CURRENCY_UNKNOWN"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    PLAN_NOT_FOUND = "PLAN_NOT_FOUND"
    PLAN_MISSING = "PLAN_MISSING"
    PLAN_VERSION_CONFLICT = "PLAN_VERSION_CONFLICT"
    PLAN_ASSIGNMENT_OVERLAPS = "PLAN_ASSIGNMENT_OVERLAPS"
    PERIOD_IN_FUTURE = "PERIOD_IN_FUTURE"
    PERIOD_DRAFTED = "PERIOD_DRAFTED"
    PLAN_ASSIGNMENT_NOT_FOUND = "PLAN_ASSIGNMENT_NOT_FOUND"
    USAGE_UNBILLABLE = "USAGE_UNBILLABLE"
    USAGE_ID_REUSED = "USAGE_ID_REUSED"
    AMOUNT_OUT_OF_RANGE = "AMOUNT_OUT_OF_RANGE"
    DRAFT_UNPROCESSABLE = "DRAFT_UNPROCESSABLE"
    INVOICE_NOT_FOUND = "INVOICE_NOT_FOUND"
    REPLAY_NOT_FOUND = "REPLAY_NOT_FOUND"
    REPLAY_RUNNING = "REPLAY_RUNNING"
    DEAD_LETTER_NOT_FOUND = "DEAD_LETTER_NOT_FOUND"
    DEAD_LETTER_REDRIVEN = "DEAD_LETTER_REDRIVEN"
    OPERATOR_NAME_TAKEN = "OPERATOR_NAME_TAKEN"
    DASHBOARD_HEADER_REQUIRED = "DASHBOARD_HEADER_REQUIRED"
    # Recorded on turns and tool calls by the workers.
    TOOL_NOT_ALLOWED = "TOOL_NOT_ALLOWED"
    TOOL_SCHEMA_INVALID = "TOOL_SCHEMA_INVALID"
    TOOL_CALL_LIMIT = "TOOL_CALL_LIMIT"
    TOOL_TIMEOUT = "TOOL_TIMEOUT"
    TOOL_HTTP_ERROR = "TOOL_HTTP_ERROR"
    TOOL_UNAVAILABLE = "TOOL_UNAVAILABLE"
    TOOL_HEADERS_INVALID = "TOOL_HEADERS_INVALID"
    MAX_STEPS_EXCEEDED = "MAX_STEPS_EXCEEDED"
    STEP_UNPROCESSABLE = "STEP_UNPROCESSABLE"
    TURN_TIMED_OUT = "TURN_TIMED_OUT"
    MODEL_TIMEOUT = "MODEL_TIMEOUT"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    MODEL_RATE_LIMITED = "MODEL_RATE_LIMITED"
    MODEL_BAD_REQUEST = "MODEL_BAD_REQUEST"
    MODEL_AUTH_FAILED = "MODEL_AUTH_FAILED"
    MODEL_BAD_RESPONSE = "MODEL_BAD_RESPONSE"
    MODEL_UNKNOWN = "MODEL_UNKNOWN"


@dataclass(frozen=True)
class ErrorSpec:
    """How a code reads to a client: the HTTP status it is served with, and a title."""

    status: int
    title: str


ERRORS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.UNAUTHENTICATED: ErrorSpec(401, "Missing or invalid API key"),
    ErrorCode.VALIDATION_FAILED: ErrorSpec(422, "The request is not valid"),
    ErrorCode.MALFORMED_BODY: ErrorSpec(400, "The request body is not valid JSON"),
    ErrorCode.BAD_REQUEST: ErrorSpec(400, "The request is not valid HTTP for this resource"),
    ErrorCode.MESSAGE_TOO_LARGE: ErrorSpec(413, "The message is too large"),
    ErrorCode.BODY_TOO_LARGE: ErrorSpec(413, "The request body is too large"),
    ErrorCode.RECORD_TOO_LARGE: ErrorSpec(413, "The command is too large to record"),
    ErrorCode.JSON_TOO_DEEP: ErrorSpec(422, "The request body nests too deeply"),
    ErrorCode.BODY_TIMEOUT: ErrorSpec(408, "The request body did not arrive in time"),
    ErrorCode.TOO_MANY_STREAMS: ErrorSpec(429, "Too many open streams for this tenant"),
    ErrorCode.AGENT_NOT_FOUND: ErrorSpec(404, "No such agent"),
    ErrorCode.KEY_NOT_FOUND: ErrorSpec(404, "No such API key"),
    ErrorCode.KEY_REVOKED: ErrorSpec(409, "The API key is revoked already"),
    ErrorCode.AGENT_EXISTS: ErrorSpec(409, "The agent already exists"),
    ErrorCode.AGENT_DISABLED: ErrorSpec(409, "The agent is disabled"),
    ErrorCode.TOOL_UNKNOWN: ErrorSpec(422, "The agent names a tool that is not registered"),
    ErrorCode.TOOL_EXISTS: ErrorSpec(409, "The tenant has a tool of that name already"),
    ErrorCode.TOOL_NOT_FOUND: ErrorSpec(404, "The tenant has no tool of that name"),
    ErrorCode.TOOL_ADDRESS_REFUSED: ErrorSpec(
        422, "The tool's address is on a network tools may not reach"
    ),
    ErrorCode.SESSION_NOT_FOUND: ErrorSpec(404, "No such session"),
    ErrorCode.SESSION_EXISTS: ErrorSpec(409, "The session already exists"),
    ErrorCode.TURN_NOT_FOUND: ErrorSpec(404, "No such turn"),
    ErrorCode.TURN_IN_PROGRESS: ErrorSpec(409, "Another turn of this session is running"),
    ErrorCode.TURN_NOT_ACTIVE: ErrorSpec(409, "The turn is not running"),
    ErrorCode.OPERATOR_REQUIRED: ErrorSpec(403, "This resource takes an operator's key"),
    ErrorCode.TENANT_KEY_REQUIRED: ErrorSpec(403, "This resource takes a tenant's API key"),
    ErrorCode.TENANT_NOT_FOUND: ErrorSpec(404, "No such tenant"),
    ErrorCode.CURRENCY_UNKNOWN: ErrorSpec(422, "The currency is not an ISO 4217 code we know"),
    ErrorCode.CURRENCY_MISMATCH: ErrorSpec(
        409, "The plan charges in another currency than the tenant's plan"
    ),
    ErrorCode.PLAN_NOT_FOUND: ErrorSpec(404, "No such price plan version"),
    ErrorCode.PLAN_MISSING: ErrorSpec(409, "The tenant has no price plan in the period"),
    ErrorCode.PLAN_VERSION_CONFLICT: ErrorSpec(
        409, "Another version of the plan was published at the same time; retry"
    ),
    ErrorCode.PLAN_ASSIGNMENT_OVERLAPS: ErrorSpec(
        409, "The assignment is not later than the tenant's latest one"
    ),
    ErrorCode.PERIOD_IN_FUTURE: ErrorSpec(422, "The billing period has not begun"),
    ErrorCode.PERIOD_DRAFTED: ErrorSpec(409, "The change would price a drafted period again"),
    ErrorCode.PLAN_ASSIGNMENT_NOT_FOUND: ErrorSpec(404, "No such plan assignment"),
    ErrorCode.USAGE_UNBILLABLE: ErrorSpec(422, "Billing cannot count this usage"),
    ErrorCode.USAGE_ID_REUSED: ErrorSpec(409, "The usage id was recorded with other values"),
    ErrorCode.AMOUNT_OUT_OF_RANGE: ErrorSpec(422, "An amount is beyond what can be priced"),
    ErrorCode.DRAFT_UNPROCESSABLE: ErrorSpec(422, "The draft request could not be processed"),
    ErrorCode.INVOICE_NOT_FOUND: ErrorSpec(404, "No such invoice"),
    ErrorCode.REPLAY_NOT_FOUND: ErrorSpec(404, "No such replay"),
    ErrorCode.REPLAY_RUNNING: ErrorSpec(409, "A replay is running already"),
    ErrorCode.DEAD_LETTER_NOT_FOUND: ErrorSpec(404, "No such record on the dead-letter topic"),
    ErrorCode.DEAD_LETTER_REDRIVEN: ErrorSpec(409, "The dead letter was re-driven already"),
    ErrorCode.OPERATOR_NAME_TAKEN: ErrorSpec(409, "An operator of that name exists"),
    ErrorCode.DASHBOARD_HEADER_REQUIRED: ErrorSpec(
        403, "A change made with the dashboard's cookie needs X-Agentlog-Dashboard: 1"
    ),
    ErrorCode.INVALID_CURSOR: ErrorSpec(400, "The pagination cursor is not valid"),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: ErrorSpec(
        422, "The Idempotency-Key was used for another request"
    ),
    ErrorCode.NOT_FOUND: ErrorSpec(404, "No such resource"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(405, "The resource does not support this method"),
    ErrorCode.NOT_READY: ErrorSpec(503, "A dependency is not reachable"),
    ErrorCode.UNAVAILABLE: ErrorSpec(503, "Kafka or Postgres did not answer; retry the request"),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(500, "An unexpected error; it was logged"),
    ErrorCode.TOOL_NOT_ALLOWED: ErrorSpec(422, "The model called a tool the agent may not use"),
    ErrorCode.TOOL_SCHEMA_INVALID: ErrorSpec(
        422, "The model's tool arguments fail the tool's schema"
    ),
    ErrorCode.TOOL_CALL_LIMIT: ErrorSpec(422, "Too many tool calls in one turn"),
    ErrorCode.TOOL_TIMEOUT: ErrorSpec(504, "The tool did not answer in time"),
    ErrorCode.TOOL_HTTP_ERROR: ErrorSpec(502, "The tool answered with an HTTP error"),
    ErrorCode.TOOL_UNAVAILABLE: ErrorSpec(502, "The tool could not be reached"),
    ErrorCode.TOOL_HEADERS_INVALID: ErrorSpec(422, "A secret header of the tool cannot be sent"),
    ErrorCode.MAX_STEPS_EXCEEDED: ErrorSpec(422, "The turn needed more model calls than allowed"),
    ErrorCode.STEP_UNPROCESSABLE: ErrorSpec(422, "A step of the turn could not be processed"),
    ErrorCode.TURN_TIMED_OUT: ErrorSpec(504, "The turn made no progress within its deadline"),
    ErrorCode.MODEL_TIMEOUT: ErrorSpec(504, "The model provider did not answer in time"),
    ErrorCode.MODEL_UNAVAILABLE: ErrorSpec(502, "The model provider failed"),
    ErrorCode.MODEL_RATE_LIMITED: ErrorSpec(429, "The model provider is rate limiting"),
    ErrorCode.MODEL_BAD_REQUEST: ErrorSpec(502, "The model provider refused the request"),
    ErrorCode.MODEL_AUTH_FAILED: ErrorSpec(502, "The model provider refused our credentials"),
    ErrorCode.MODEL_BAD_RESPONSE: ErrorSpec(
        502, "The model provider answered in an unknown format"
    ),
    ErrorCode.MODEL_UNKNOWN: ErrorSpec(422, "The agent names a model no provider serves"),
}


class DomainError(Exception):
    """A failure a caller can act on, with its stable code. Raised anywhere below the
    gateway; the gateway renders it as problem details, and never invents a code."""

    def __init__(self, code: ErrorCode | str, detail: str) -> None:
        super().__init__(detail)
        try:
            self.code = ErrorCode(code)
        except ValueError:
            raise KeyError(f"unregistered error code {code}") from None
        self.detail = detail
