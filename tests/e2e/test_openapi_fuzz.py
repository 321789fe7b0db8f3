"""Schemathesis against the gateway's own OpenAPI document, with a tenant's key and with
an operator's: generated requests to every operation get no 5xx and no response that
breaks its schema. Besides what it generates from the schemas, every id, cursor, time
and period it sends is drawn half the time from real ones (so operations get past
their 404s) and from hostile ones (control characters, overlong ids, cursors of other
shapes, times past either end)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_billing import cli
from tests.e2e.test_turns import open_session, setup_agent

# Bounded to fit the suite's budget; deterministic, so a failure reproduces.
MAX_EXAMPLES = 50
BAD_IDS = ["a\u0000b", "\u0001", "x\u001f", "\u007f", "a\u0085", "a" * 201]
TIMES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1969-12-31T23:59:59Z",
    "9998-12-31T23:59:59Z",
]


def _cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


CURSORS = [
    _cursor(["2026-01-01T00:00:00+00:00", "a\u0000b"]),
    _cursor(["0001-01-01T00:00:00+01:00", "x"]),
    _cursor(["not a day"]),
    _cursor(["std", "\u00b2"]),
    _cursor(2**63),
    _cursor(["2026-11", "x"]),
    base64.urlsafe_b64encode(b"[" * 1000).decode(),
    "%%%",
]
PATH_IDS = ("agent_id", "session_id", "turn_id", "key_id", "invoice_id", "plan_id", "replay_id")


def config(ids: list[str]) -> str:
    """schemathesis.toml: dictionaries of real and hostile values, bound to the
    parameters and body members that take them."""

    def values(name: str, entries: list[str]) -> str:
        return f"[dictionaries.{name}]\nvalues = {json.dumps(entries)}\n"

    bindings = {
        **{f"path.{name}": "ids" for name in (*PATH_IDS, "tenant_id")},
        **{f"body.{name}": "ids" for name in ("agent_id", "tenant_id", "usage_id")},
        "query.tenant_id": "ids",
        "query.cursor": "cursors",
        "query.from": "days",
        "query.to": "days",
        "body.effective_from": "times",
        "body.used_at": "times",
        "body.period": "periods",
    }
    return "\n".join(
        [
            values("ids", [*ids, *BAD_IDS]),
            values("cursors", CURSORS),
            values("times", TIMES),
            values("days", ["0001-01-01", "1970-01-01", "9999-12-31"]),
            values("periods", ["0000-01", "1969-12", "2026-11", "9999-12"]),
            values("hostile", [*BAD_IDS, *TIMES, *CURSORS]),
            "[generation.dictionaries.string]",
            'dictionary = "hostile"',
            "probability = 0.1",
            "",
            "[parameters]",
            *(
                f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}'
                for key, name in bindings.items()
            ),
        ]
    )


def _operator_key(platform: Platform) -> str:
    return cli(platform, "operators", "create", "fuzz").stdout.strip().splitlines()[-1]


def _seed(platform: Platform, operator: str, tool_server: ToolServer) -> list[str]:
    """Something to find for the operations that read: an agent, a session, a plan
    assigned to the tenant. Their ids, and the tenant's."""
    with platform.client() as api:
        agent = setup_agent(api, tool_server)["agent_id"]
        session = open_session(api, agent)
        tenant = api.get("/v1/tenant").json()["tenant_id"]
    admin = {"Authorization": f"Bearer {operator}"}
    with httpx.Client(base_url=platform.url, timeout=30, headers=admin) as api:
        plan = {"plan_id": "std", "currency": "USD", "tools": {"weather": {"per_call": "0.01"}}}
        assert api.post("/v1/admin/price-plans", json=plan).status_code == 201
        at = {"plan_id": "std", "version": 1, "effective_from": "2026-01-01T00:00:00Z"}
        assert api.post(f"/v1/admin/tenants/{tenant}/plan", json=at).status_code == 201
    return [agent, session, tenant, "std"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("holder", ["tenant", "operator"])
def test_the_api_holds_its_openapi_contract(
    platform: Platform, tool_server: ToolServer, tmp_path: Path, holder: str
) -> None:
    operator = _operator_key(platform)
    (tmp_path / "schemathesis.toml").write_text(config(_seed(platform, operator, tool_server)))
    key = platform.key if holder == "tenant" else operator
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            f"{platform.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
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
        ],
        cwd=tmp_path,  # where it keeps its cache
        capture_output=True,
        text=True,
        timeout=840,
    )
    summary = run.stdout[-6000:] + run.stderr[-2000:]
    assert "Server error" not in run.stdout, summary
    assert run.returncode == 0, summary
    # Every selected operation was tested (all but the event stream).
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    cases = re.search(r"(\d+) generated, \1 passed", run.stdout)
    assert selected, summary
    assert tested, summary
    assert cases, summary
    assert int(tested[1]) == int(selected[1]) == int(selected[2]) - 1
