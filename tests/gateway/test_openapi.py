"""The OpenAPI document documents every operation: a summary, a description saying what
it does, what it records where and which problems it may answer, and example answers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.app import create_app
from schemas.errors import ErrorCode
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
