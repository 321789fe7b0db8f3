"""Schemathesis against the gateway's own OpenAPI document, authenticated: generated
requests to every operation get no 5xx and no response that breaks its schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_turns import open_session, setup_agent

# Bounded to fit the suite's budget; deterministic, so a failure reproduces.
MAX_EXAMPLES = 50


@pytest.mark.timeout(600)
def test_the_api_holds_its_openapi_contract(
    platform: Platform, tool_server: ToolServer, tmp_path: Path
) -> None:
    with platform.client() as api:  # something to find for the operations that read
        open_session(api, setup_agent(api, tool_server)["agent_id"])
    report = tmp_path / "schemathesis.xml"
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{platform.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {platform.key}",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            # An event stream never ends: its contract is tested in test_streaming.
            "--exclude-path-regex",
            "/stream$",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        cwd=tmp_path,  # where it keeps its cache
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Every selected operation was tested (all but the event stream).
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected, run.stdout[-3000:]
    assert tested, run.stdout[-3000:]
    assert int(tested[1]) == int(selected[1]) == int(selected[2]) - 1
