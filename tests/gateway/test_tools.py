"""Tool routes: a registration is a command, sealed secrets under the registration's own
tool id; the answer is the handler's outcome, and a refused registration's secrets are
dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import events

from .conftest import Api, problem

BODY: dict[str, Any] = {"url": "http://127.0.0.1:9/weather", "secret_headers": {"X-Key": "k-1"}}


async def decide(api: Api, refuse: bool = False) -> events.ToolRegisterRequested:
    """Play the command handler: take the registration recorded, and project its
    acceptance or its refusal."""
    cmd = await api.recorded(events.ToolRegisterRequested)
    outcome: events.ToolRegistered | events.TenantCommandRejected
    if refuse:
        outcome = events.TenantCommandRejected(
            tenant_id=api.tenant_id, command_id=cmd.id, code="TOOL_EXISTS", detail="taken"
        )
    else:
        outcome = events.ToolRegistered(
            tenant_id=api.tenant_id,
            tool=cmd.data.tool,
            secret_header_names=cmd.data.secret_header_names,
        )
    await api.fold(cmd, api.fact(outcome, cause=cmd))
    return cmd.data  # type: ignore[no-any-return]


async def test_a_registration_answers_with_the_tool_the_handler_accepted(api: Api) -> None:
    deciding = asyncio.create_task(decide(api))
    response = await api.http.post("/v1/tools", json={"name": "weather", **BODY})
    cmd = await deciding

    assert response.status_code == 201, response.text
    assert (cmd.tenant_id, cmd.replace, cmd.secret_header_names) == (
        api.tenant_id,
        False,
        ["X-Key"],
    )
    tool = response.json()
    assert tool["tool_id"] == cmd.tool.tool_id
    assert await api.gateway.secrets.get(api.tenant_id, cmd.tool.tool_id) == {"X-Key": "k-1"}
    read = await api.http.get("/v1/tools/weather")
    assert read.status_code == 200, read.text
    assert read.json() == tool


async def test_a_refused_registration_answers_its_problem_and_drops_its_secrets(
    api: Api,
) -> None:
    deciding = asyncio.create_task(decide(api, refuse=True))
    response = await api.http.post("/v1/tools", json={"name": "weather", **BODY})
    cmd = await deciding

    assert problem(response, 409, "TOOL_EXISTS")["detail"] == "taken"
    assert await api.gateway.secrets.get(api.tenant_id, cmd.tool.tool_id) == {}
    problem(await api.http.get("/v1/tools/weather"), 404, "TOOL_NOT_FOUND")


async def test_a_replacement_is_requested_under_the_paths_name(api: Api) -> None:
    deciding = asyncio.create_task(decide(api))
    response = await api.http.put("/v1/tools/weather", json=BODY)
    cmd = await deciding

    assert response.status_code == 200, response.text
    assert (cmd.tool.name, cmd.replace) == ("weather", True)
    assert response.json()["name"] == "weather"
