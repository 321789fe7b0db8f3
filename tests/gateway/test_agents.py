"""``/v1/agents`` routes: a write records its command and answers with what the command
handler decided, once projected; reads page through the projection."""

from __future__ import annotations

import asyncio
import base64
import datetime

import pytest

from schemas import events

from .conftest import Api, problem

CONFIG = events.AgentConfig(name="helper", model="dev")


async def test_creating_an_agent_records_the_command_and_answers_with_the_agent(
    api: Api,
) -> None:
    async def command_handler() -> events.AgentCreateRequested:
        cmd = await api.recorded(events.AgentCreateRequested)
        created = events.AgentCreated(agent_id=cmd.data.agent_id, config=cmd.data.config)
        await api.fold(cmd, api.fact(created, cause=cmd))
        data: events.AgentCreateRequested = cmd.data
        return data

    deciding = asyncio.create_task(command_handler())
    response = await api.http.post(
        "/v1/agents", json={"name": "helper", "model": "dev"}, headers={"Idempotency-Key": "k-1"}
    )
    recorded = await deciding

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["agent_id"] == recorded.agent_id
    assert (body["name"], body["version"], body["status"]) == ("helper", 1, "active")
    assert recorded.config == events.AgentConfig(name="helper", model="dev")


async def test_a_rejected_command_answers_with_its_problem(api: Api) -> None:
    async def command_handler() -> None:
        cmd = await api.recorded(events.AgentCreateRequested)
        rejected = events.AgentCommandRejected(
            agent_id=cmd.data.agent_id,
            command_id=cmd.id,
            code="TOOL_UNKNOWN",
            detail="unknown tools: shell",
        )
        await api.fold(cmd, api.fact(rejected, cause=cmd))

    deciding = asyncio.create_task(command_handler())
    response = await api.http.post("/v1/agents", json={"name": "a", "tools": ["shell"]})
    await deciding

    assert problem(response, 422, "TOOL_UNKNOWN")["detail"] == "unknown tools: shell"


async def seed_agents(api: Api, count: int) -> list[str]:
    """Agents created one second apart, oldest first."""
    start = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    ids = [f"agent-{n}" for n in range(count)]
    await api.fold(
        *(
            api.fact(events.AgentCreated(agent_id=agent_id, config=CONFIG)).at(
                start + datetime.timedelta(seconds=n)
            )
            for n, agent_id in enumerate(ids)
        )
    )
    return ids


async def test_agents_are_listed_a_page_at_a_time_in_creation_order(api: Api) -> None:
    ids = await seed_agents(api, 5)

    first = (await api.http.get("/v1/agents", params={"limit": 2})).json()
    second = (
        await api.http.get("/v1/agents", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    last = (
        await api.http.get("/v1/agents", params={"limit": 2, "cursor": second["next_cursor"]})
    ).json()

    pages = [[a["agent_id"] for a in page["items"]] for page in (first, second, last)]
    assert pages == [ids[0:2], ids[2:4], ids[4:]]
    assert last["next_cursor"] is None


@pytest.mark.parametrize("token", ["5", '{"a": 1}', '["x", 5]', '["not a time", "id"]', "[[[]]]"])
async def test_a_cursor_of_another_shape_is_refused(api: Api, token: str) -> None:
    cursor = base64.urlsafe_b64encode(token.encode()).decode()

    problem(await api.http.get("/v1/agents", params={"cursor": cursor}), 400, "INVALID_CURSOR")


async def test_an_unknown_agent_is_a_404_problem(api: Api) -> None:
    response = await api.http.get("/v1/agents/nobody")

    assert problem(response, 404, "AGENT_NOT_FOUND")["detail"] == "no agent nobody"


async def test_an_update_with_nothing_to_change_records_nothing(api: Api) -> None:
    (agent_id,) = await seed_agents(api, 1)

    response = await api.http.patch(f"/v1/agents/{agent_id}", json={})

    problem(response, 422, "VALIDATION_FAILED")
    assert await api.commands() == []


async def test_versions_are_the_agents_audit_trail(api: Api) -> None:
    (agent_id,) = await seed_agents(api, 1)
    updated = CONFIG.model_copy(update={"system_prompt": "Be brief."})
    await api.fold(
        api.fact(
            events.AgentUpdated(
                agent_id=agent_id, version=2, config=updated, changed=["system_prompt"]
            )
        ),
        api.fact(events.AgentDisabled(agent_id=agent_id, version=3)),
    )

    versions = (await api.http.get(f"/v1/agents/{agent_id}/versions")).json()
    agent = (await api.http.get(f"/v1/agents/{agent_id}")).json()

    assert [(v["version"], v["change"], v["changed"]) for v in versions] == [
        (1, "created", sorted(events.AgentConfig.model_fields)),
        (2, "updated", ["system_prompt"]),
        (3, "disabled", ["status"]),
    ]
    assert (agent["version"], agent["status"], agent["system_prompt"]) == (
        3,
        "disabled",
        "Be brief.",
    )
