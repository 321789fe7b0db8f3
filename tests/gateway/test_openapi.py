"""The OpenAPI document documents every operation: a summary, a description saying what
it does, what it records where and which problems it may answer, and example answers."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from gateway.app import create_app
from gateway.billing_models import ReplayStatus
from projections.agent_state import AgentStatus
from projections.invoices import DraftStatus
from projections.turns import ToolCallStatus, TurnStatus
from schemas.errors import ErrorCode
from tests.gateway.conftest import Api
from tests.services import settings

SPEC = create_app(settings()).openapi()
OPERATIONS = [
    (f"{method.upper()} {path}", operation)
    for path, operations in SPEC["paths"].items()
    for method, operation in operations.items()
]
WRITES = [(name, op) for name, op in OPERATIONS if name.split()[0] in ("POST", "PATCH", "DELETE")]


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=[n for n, _ in OPERATIONS])
def test_every_operation_has_a_summary_and_a_description(
    name: str, operation: dict[str, Any]
) -> None:
    assert len(operation.get("summary", "")) > 5, name
    assert len(operation.get("description", "")) > 30, name
    codes = re.findall(r"`([A-Z][A-Z_]+)`", operation["description"].split("**Problems:**")[-1])
    assert all(code in ErrorCode.__members__ for code in codes), codes


@pytest.mark.parametrize(("name", "operation"), WRITES, ids=[n for n, _ in WRITES])
def test_every_write_says_what_it_records_on_which_topic(
    name: str, operation: dict[str, Any]
) -> None:
    # A write that records nothing (a replay reads the log, writes read models) says so.
    assert re.search(
        r"\*\*Records\*\* (`\w+`.* on `agentlog\.\w+`|nothing on a topic)",
        operation["description"],
    )


def test_every_answer_of_a_model_has_an_example() -> None:
    schemas = SPEC["components"]["schemas"]
    answered = {
        name
        for _name, operation in OPERATIONS
        for status, response in operation["responses"].items()
        if status.startswith("2")
        for content in response.get("content", {}).values()
        for name in re.findall(r"#/components/schemas/(\w+)", str(content.get("schema", {})))
    }
    assert answered >= {"AgentPublic", "TurnDetail", "SessionPublic", "Page"}
    assert sorted(name for name in answered if not schemas[name].get("examples")) == []


STREAMED = {
    "/v1/usage/export": {"text/csv", "application/x-ndjson"},
    "/v1/admin/usage/export": {"text/csv", "application/x-ndjson"},
    "/v1/sessions/{session_id}/stream": {"text/event-stream"},
}


@pytest.mark.parametrize(("path", "media_types"), STREAMED.items())
def test_a_file_or_stream_is_declared_as_the_media_types_it_is_sent_in(
    path: str, media_types: set[str]
) -> None:
    content = SPEC["paths"][path]["get"]["responses"]["200"]["content"]
    assert set(content) == media_types
    assert all(media["schema"].get("type") == "string" for media in content.values())


@pytest.mark.parametrize(("name", "operation"), OPERATIONS, ids=[n for n, _ in OPERATIONS])
def test_no_read_declares_json_it_does_not_describe(name: str, operation: dict[str, Any]) -> None:
    """An empty JSON schema is FastAPI's guess for a route that returns a response of its
    own: a file or stream declared that way says it is JSON."""
    if not name.startswith("GET "):
        return
    for status, response in operation["responses"].items():
        if status.startswith("2") and "application/json" in response.get("content", {}):
            assert response["content"]["application/json"].get("schema"), (name, status)


@pytest.mark.parametrize("format", ["csv", "jsonl"])
async def test_an_export_is_sent_in_a_media_type_its_operation_declares(
    api: Api, format: str
) -> None:
    for path, headers in (("/v1/usage/export", {}), ("/v1/admin/usage/export", api.as_operator)):
        response = await api.http.get(path, params={"format": format}, headers=headers)
        assert response.status_code == 200, response.text
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in SPEC["paths"][path]["get"]["responses"]["200"]["content"]


# Every status an answer carries, with the values its enum has. ``Problem.status`` is an
# HTTP status code (RFC 9457), not one of ours.
STATUSES: dict[tuple[str, str], list[str]] = {
    ("AgentPublic", "status"): list(AgentStatus),
    ("DraftRequested", "status"): [DraftStatus.REQUESTED],
    ("ReplayPublic", "status"): list(ReplayStatus),
    ("ToolCallPublic", "status"): list(ToolCallStatus),
    ("TurnDetail", "status"): list(TurnStatus),
    ("TurnPublic", "status"): list(TurnStatus),
}


def declared_values(schema: dict[str, Any]) -> list[str] | None:
    """The values a property's schema allows (``enum``, or ``const`` for one), following
    ``$ref`` and ``anyOf``; None when it allows any string."""
    if "$ref" in schema:
        return declared_values(SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    if "anyOf" in schema:
        found = [declared_values(option) for option in schema["anyOf"]]
        return None if None in found else [v for values in found if values for v in values]
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def status_fields(spec: dict[str, Any]) -> dict[tuple[str, str], list[str] | None]:
    return {
        (name, field): declared_values(prop)
        for name, model in spec["components"]["schemas"].items()
        for field, prop in model.get("properties", {}).items()
        if (field.endswith("status") or field.endswith("outcome")) and name != "Problem"
    }


def test_every_status_field_lists_the_values_of_its_enum() -> None:
    assert status_fields(SPEC) == STATUSES


def test_a_status_declared_as_any_string_is_reported() -> None:
    spec = copy.deepcopy(SPEC)
    spec["components"]["schemas"]["TurnPublic"]["properties"]["status"] = {"type": "string"}
    assert status_fields(spec)[("TurnPublic", "status")] is None
