"""Request and response bodies of the HTTP API, in families (Create, Update, Public)."""

from __future__ import annotations

import datetime
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from workers.providers.registry import MODEL_PATTERN


class ToolCreate(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    url: HttpUrl
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    timeout_s: float = Field(10.0, gt=0, le=300)
    secret_headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every call; never stored in events"
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "weather",
                    "description": "Current weather for a city",
                    "url": "https://tools.example.com/weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                    "timeout_s": 5,
                    "secret_headers": {"Authorization": "Bearer …"},
                }
            ]
        }
    )

    @field_validator("parameters")
    @classmethod
    def _is_a_json_schema(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
        return parameters


class ToolPublic(BaseModel):
    tool_id: str
    name: str
    description: str
    url: str
    parameters: dict[str, Any]
    timeout_s: float
    secret_header_names: list[str]


class AgentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    model: str = Field(
        "dev", pattern=MODEL_PATTERN, description="`dev`, `openai:<model>` or `anthropic:<model>`"
    )
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)
    max_steps: int = Field(8, ge=1, le=64)
    max_tool_calls: int = Field(16, ge=0, le=256)

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
    name: str | None = Field(None, min_length=1, max_length=200)
    model: str | None = Field(None, pattern=MODEL_PATTERN)
    system_prompt: str | None = None
    tools: list[str] | None = None
    max_steps: int | None = Field(None, ge=1, le=64)
    max_tool_calls: int | None = Field(None, ge=0, le=256)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"system_prompt": "Answer in one sentence.", "tools": ["weather"]}]
        }
    )


class AgentPublic(BaseModel):
    agent_id: str
    version: int
    status: str
    name: str
    model: str
    system_prompt: str
    tools: list[str]
    max_steps: int
    max_tool_calls: int
    created_at: datetime.datetime
    updated_at: datetime.datetime


class AgentVersionPublic(BaseModel):
    version: int
    change: str
    changed: list[str]
    config: dict[str, Any]
    recorded_at: datetime.datetime


class SessionCreate(BaseModel):
    agent_id: str
    metadata: dict[str, str] = Field(default_factory=dict)

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


class StepPublic(BaseModel):
    type: str
    detail: dict[str, Any]
    recorded_at: datetime.datetime


class ToolCallPublic(BaseModel):
    tool_call_id: str
    tool: str
    arguments: dict[str, Any]
    status: str
    code: str | None
    detail: str | None
    result: str | None


class TurnPublic(BaseModel):
    turn_id: str
    session_id: str
    status: str
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


class TurnDetail(TurnPublic):
    events: list[StepPublic]
    tool_calls: list[ToolCallPublic]


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


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
                    "code": "SESSION_NOT_FOUND",
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
