"""The one registry of error codes: documented, rendered as RFC 9457 problem details."""

from __future__ import annotations

import json
import re

import pytest

from gateway.app import create_app
from gateway.problems import PROBLEMS, ProblemError, problem_response
from tests.kafka import REPO


def test_every_code_is_documented_with_its_status() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", (REPO / "docs/api.md").read_text(), re.M)
    assert dict((code, int(status)) for code, status in rows) == {
        code: problem.status for code, problem in PROBLEMS.items()
    }


def test_a_problem_is_rfc_9457_with_a_stable_code() -> None:
    response = problem_response("TURN_IN_PROGRESS", "turn t1 is still running", "/v1/x")
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
        ProblemError("SOMETHING_NEW", "not in the registry")


def test_the_openapi_document_declares_problem_responses() -> None:
    spec = create_app().openapi()
    operations = [op for ops in spec["paths"].values() for op in ops.values()]
    assert operations
    for operation in operations:
        for status in ("4XX", "5XX"):
            content = operation["responses"][status]["content"]
            assert content == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
