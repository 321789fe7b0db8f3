"""The one registry of error codes: documented, rendered as RFC 9457 problem details, and
the only source of the codes any part of agentlog records or answers with."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.problems import problem_response
from schemas.errors import ERRORS, DomainError, ErrorCode
from tests.kafka import REPO
from tests.services import settings

# Where codes are emitted: everything but the registry itself and the broker (whose
# error codes are Kafka's).
EMITTERS = ("workers", "projections", "gateway", "streams", "agentlog_cli")
CODE_LIKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


def test_every_code_is_registered_and_documented_with_its_status() -> None:
    assert set(ERRORS) == set(ErrorCode)
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", (REPO / "docs/api.md").read_text(), re.M)
    assert dict((code, int(status)) for code, status in rows) == {
        code.value: spec.status for code, spec in ERRORS.items()
    }


def bare_codes(path: Path) -> list[str]:
    """String constants in a module that look like error codes: a code written as a
    string, not as an ``ErrorCode`` member, could be one the registry lacks."""
    return [
        f"{path.name}:{node.lineno}: {node.value}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and CODE_LIKE.match(node.value)
        and not node.value.startswith(("AGENTLOG_", "OTEL_"))  # environment variables
    ]


def test_every_code_a_worker_or_the_gateway_can_emit_is_a_registered_member() -> None:
    modules = [
        path
        for package in EMITTERS
        for path in sorted((REPO / package).rglob("*.py"))
        if "broker" not in path.parts
    ]
    assert len(modules) > 40
    assert [code for path in modules for code in bare_codes(path)] == []


def test_a_bare_code_string_is_found(tmp_path: Path) -> None:
    module = tmp_path / "worker.py"
    module.write_text('FAILED = ToolCallFailed(code="TOOL_EXPLODED", detail=f"{SETTING}")\n')
    assert bare_codes(module) == ["worker.py:1: TOOL_EXPLODED"]


def test_a_problem_is_rfc_9457_with_a_stable_code() -> None:
    response = problem_response(ErrorCode.TURN_IN_PROGRESS, "turn t1 is still running", "/v1/x")
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"
    assert json.loads(bytes(response.body)) == {
        "type": "https://agentlog.dev/problems/turn-in-progress",
        "title": "Another turn of this session is running",
        "status": 409,
        "detail": "turn t1 is still running",
        "instance": "/v1/x",
        "code": "TURN_IN_PROGRESS",
    }


def test_an_unregistered_code_cannot_be_raised() -> None:
    with pytest.raises(KeyError):
        DomainError("SOMETHING_NEW", "not in the registry")


def test_the_openapi_document_declares_problem_responses() -> None:
    spec = create_app(settings()).openapi()
    operations = [op for ops in spec["paths"].values() for op in ops.values()]
    assert operations
    for operation in operations:
        for status in ("4XX", "5XX"):
            content = operation["responses"][status]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
