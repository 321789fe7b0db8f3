"""Request and response bodies of the HTTP API, in families (Create, Update, Public)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Annotated, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from projections.agent_state import AgentStatus
from projections.turns import ToolCallStatus, TurnStatus
from schemas.errors import ErrorCode
from schemas.headers import header_problem
from schemas.values import MODEL_PATTERN

from . import examples
from .fields import Id

# Caps on what is stored, so every command fits its topic and every read stays small.
MAX_NAME = 200
MAX_TEXT = 32 * 1024  # a system prompt, a tool's description
MAX_SCHEMA_BYTES = 32 * 1024
MAX_ENTRIES = 64  # tools of an agent, metadata entries, secret headers
MAX_METADATA_VALUE = 1024
MAX_HEADER_VALUE = 8 * 1024
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
MetadataKey = Annotated[str, Field(min_length=1, max_length=128)]
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]
HeaderValue = Annotated[str, Field(max_length=MAX_HEADER_VALUE)]


class ToolReplace(BaseModel):
    """A tool as ``PUT /v1/tools/{name}`` takes it: the name is the path's."""

    description: str = Field("", max_length=MAX_TEXT)
    url: HttpUrl
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    timeout_s: float = Field(10.0, gt=0, le=300, strict=True)
    secret_headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_ENTRIES,
        description="sent with every call; never stored in events",
    )

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TOOL_BODY]})

    @field_validator("secret_headers")
    @classmethod
    def _are_sendable(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            problem = header_problem(name, value)
            if problem is not None:
                raise ValueError(problem)
        return headers

    @field_validator("parameters")
    @classmethod
    def _is_a_json_schema(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(parameters)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"the schema exceeds {MAX_SCHEMA_BYTES} bytes")
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        # Arguments are checked against it offline: every reference must resolve within.
        base = "urn:agentlog:tool-parameters"
        registry: Registry[Any] = Registry().with_resource(
            base, Resource.from_contents(parameters, default_specification=DRAFT202012)
        )
        resolver = registry.resolver(base_uri=base)
        for ref in json_references(parameters):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise ValueError(
                    f"not a valid JSON Schema: the reference {ref!r} does not resolve within it"
                ) from None
        return parameters


class ToolCreate(ToolReplace):
    name: ToolName

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "weather", **examples.TOOL_BODY}]}
    )


def json_references(schema: Any) -> Iterator[str]:
    """Every ``$ref`` in a JSON document, depth first."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from json_references(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from json_references(value)


class ToolPublic(BaseModel):
    tool_id: str
    name: str
    description: str
    url: str
    parameters: dict[str, Any]
    timeout_s: float
    secret_header_names: list[str]

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TOOL]})


class AgentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    model: str = Field(
        "dev",
        pattern=MODEL_PATTERN,
        max_length=MAX_NAME,
        description="`dev`, `openai:<model>` or `anthropic:<model>`",
    )
    system_prompt: str = Field("", max_length=MAX_TEXT)
    tools: list[ToolName] = Field(default_factory=list, max_length=MAX_ENTRIES)
    max_steps: int = Field(8, ge=1, le=64, strict=True)
    max_tool_calls: int = Field(16, ge=0, le=256, strict=True)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "helper",
                    "model": "dev",
                    "system_prompt": "Be brief.",
                    "tools": ["weather"],
                }
            ]
        }
    )


class AgentUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME)
    model: str | None = Field(None, pattern=MODEL_PATTERN, max_length=MAX_NAME)
    system_prompt: str | None = Field(None, max_length=MAX_TEXT)
    tools: list[ToolName] | None = Field(None, max_length=MAX_ENTRIES)
    max_steps: int | None = Field(None, ge=1, le=64, strict=True)
    max_tool_calls: int | None = Field(None, ge=0, le=256, strict=True)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"system_prompt": "Answer in one sentence.", "tools": ["weather"]}]
        }
    )


class AgentPublic(BaseModel):
    agent_id: str
    version: int
    status: AgentStatus
    name: str
    model: str
    system_prompt: str
    tools: list[str]
    max_steps: int
    max_tool_calls: int
    created_at: datetime.datetime
    updated_at: datetime.datetime

    model_config = ConfigDict(json_schema_extra={"examples": [examples.AGENT]})


class AgentVersionPublic(BaseModel):
    version: int
    change: str
    changed: list[str]
    config: dict[str, Any]
    recorded_at: datetime.datetime

    model_config = ConfigDict(json_schema_extra={"examples": [examples.AGENT_VERSION]})


class SessionCreate(BaseModel):
    agent_id: Id
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=MAX_ENTRIES)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "0b6e2f0c-3c1e-4a35-9a0e-5d1f4c3b2a10",
                    "metadata": {"user": "u-42"},
                }
            ]
        }
    )


class SessionPublic(BaseModel):
    session_id: str
    agent_id: str
    metadata: dict[str, str]
    created_at: datetime.datetime

    model_config = ConfigDict(json_schema_extra={"examples": [examples.SESSION]})


class TurnCreate(BaseModel):
    message: str = Field(min_length=1)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": 'call weather {"city": "Oslo"}'}]}
    )


class MessagePublic(BaseModel):
    message_id: str
    turn_id: str
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]]
    tool_call_id: str | None
    created_at: datetime.datetime

    model_config = ConfigDict(json_schema_extra={"examples": [examples.MESSAGE]})


class StepPublic(BaseModel):
    type: str
    detail: dict[str, Any]
    recorded_at: datetime.datetime

    model_config = ConfigDict(json_schema_extra={"examples": [examples.STEP]})


class ToolCallPublic(BaseModel):
    tool_call_id: str
    tool: str
    arguments: dict[str, Any]
    status: ToolCallStatus
    code: str | None
    detail: str | None
    result: str | None

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TOOL_CALL]})


class TurnPublic(BaseModel):
    turn_id: str
    session_id: str
    status: TurnStatus
    mode: str
    request: str
    answer: str | None = None
    error_code: str | None
    error_detail: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    requested_at: datetime.datetime
    finished_at: datetime.datetime | None
    links: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TURN]})


class TurnDetail(TurnPublic):
    events: list[StepPublic]
    tool_calls: list[ToolCallPublic]

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TURN_DETAIL]})


class TenantPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.TENANT]})

    tenant_id: str
    display_name: str
    created_at: datetime.datetime


class ApiKeyPublic(BaseModel):
    key_id: str
    key_prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None

    model_config = ConfigDict(json_schema_extra={"examples": [examples.API_KEY]})


class ApiKeyIssued(ApiKeyPublic):
    key: str = Field(description="the key itself, shown only in this answer")

    model_config = ConfigDict(json_schema_extra={"examples": [examples.API_KEY_ISSUED]})


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")

    model_config = ConfigDict(json_schema_extra={"examples": [examples.PAGE]})


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is stable, ``type`` a URI made from it."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="per-field failures, for VALIDATION_FAILED and MALFORMED_BODY"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://agentlog.dev/problems/session-not-found",
                    "title": "No such session",
                    "status": 404,
                    "detail": "no session 4f1c…",
                    "instance": "/v1/sessions/4f1c…/turns",
                    "code": ErrorCode.SESSION_NOT_FOUND.value,
                }
            ]
        }
    )


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": description}
    for status, description in (
        ("4XX", "The request cannot be served; `code` says why (docs/api.md lists them all)"),
        ("5XX", "A dependency is unavailable (UNAVAILABLE: retry) or an unexpected error"),
    )
}
