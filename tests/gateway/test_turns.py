"""``/v1/sessions`` and ``/v1/turns`` routes: a turn is recorded and answered at once or
when it finishes; sessions, messages and turns read back from the projection."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import events
from schemas.envelope import Envelope

from .conftest import Api, problem

CONFIG = events.AgentConfig(name="helper", model="dev")


async def open_session(api: Api, session_id: str = "s-1") -> None:
    await api.fold(
        api.fact(events.AgentCreated(agent_id="a-1", config=CONFIG)),
        api.fact(events.SessionCreated(session_id=session_id, agent_id="a-1")),
    )


async def test_a_turn_is_recorded_and_answered_at_once_with_its_links(api: Api) -> None:
    await open_session(api)

    response = await api.http.post("/v1/sessions/s-1/turns", json={"message": "hello"})

    assert response.status_code == 202, response.text
    body = response.json()
    (recorded,) = await api.commands()
    assert isinstance(recorded.data, events.TurnRequested)
    assert (recorded.data.session_id, recorded.data.message) == ("s-1", "hello")
    assert body == {
        "turn_id": recorded.data.turn_id,
        "session_id": "s-1",
        "status": "requested",
        "command_id": recorded.id,
        "links": {
            "self": f"/v1/turns/{body['turn_id']}",
            "stream": "/v1/sessions/s-1/stream",
            "messages": "/v1/sessions/s-1/messages",
            "cancel": f"/v1/turns/{body['turn_id']}/cancel",
        },
    }
    assert response.headers["location"] == f"/v1/turns/{body['turn_id']}"


def finished(api: Api, cmd: Envelope[Any], answer: str) -> list[Envelope[Any]]:
    """The facts of a turn that ran and answered ``answer``."""
    ids = {"session_id": cmd.data.session_id, "turn_id": cmd.data.turn_id}
    accepted = api.fact(
        events.TurnAccepted(
            **ids,
            agent_id="a-1",
            agent_version=1,
            config=CONFIG,
            tools=[],
            history=[],
            message=cmd.data.message,
            requested_at=cmd.time,
        ),
        cause=cmd,
    )
    message = events.MessageAppended(
        **ids, message_id="m-answer", message=events.MessageValue(role="assistant", content=answer)
    )
    done = events.TurnCompleted(
        **ids,
        agent_id="a-1",
        requested_at=cmd.time,
        message_id="m-answer",
        usage=events.UsageValue(input_tokens=3),
        steps=1,
    )
    return [cmd, accepted, api.fact(message), api.fact(done)]


async def test_a_turn_waited_for_answers_once_it_has_finished(api: Api) -> None:
    await open_session(api)

    async def platform() -> None:
        cmd = await api.recorded(events.TurnRequested)
        await api.fold(*finished(api, cmd, "echo: hello"))

    running = asyncio.create_task(platform())
    response = await api.http.post("/v1/sessions/s-1/turns?wait=10", json={"message": "hello"})
    await running

    assert response.status_code == 200, response.text
    turn = response.json()
    assert (turn["status"], turn["answer"], turn["input_tokens"]) == ("completed", "echo: hello", 3)


async def test_a_rejected_turn_waited_for_answers_with_its_problem(api: Api) -> None:
    await open_session(api)

    async def platform() -> None:
        cmd = await api.recorded(events.TurnRequested)
        rejected = events.TurnRejected(
            session_id="s-1", turn_id=cmd.data.turn_id, code="TURN_IN_PROGRESS", detail="busy"
        )
        await api.fold(cmd, api.fact(rejected, cause=cmd))

    running = asyncio.create_task(platform())
    response = await api.http.post("/v1/sessions/s-1/turns?wait=10", json={"message": "hi"})
    await running

    assert problem(response, 409, "TURN_IN_PROGRESS")["detail"] == "busy"


async def test_a_turn_reads_back_with_its_steps_and_a_finished_one_cannot_be_cancelled(
    api: Api,
) -> None:
    await open_session(api)
    response = await api.http.post("/v1/sessions/s-1/turns", json={"message": "hello"})
    turn_id = response.json()["turn_id"]
    (cmd,) = await api.commands()
    await api.fold(*finished(api, cmd, "echo: hello"))

    turn = (await api.http.get(f"/v1/turns/{turn_id}")).json()
    cancel = await api.http.post(f"/v1/turns/{turn_id}/cancel")

    assert [step["type"] for step in turn["events"]] == [
        "agentlog.turn.accepted.v1",
        "agentlog.message.appended.v1",
        "agentlog.turn.completed.v1",
    ]
    assert (turn["answer"], turn["tool_calls"]) == ("echo: hello", [])
    assert problem(cancel, 409, "TURN_NOT_ACTIVE")["detail"] == f"turn {turn_id} is completed"
    assert len(await api.commands()) == 1, "no cancel was recorded"


async def test_messages_are_paged_in_conversation_order(api: Api) -> None:
    await open_session(api)
    await api.fold(
        *(
            api.fact(
                events.MessageAppended(
                    session_id="s-1",
                    turn_id="t-1",
                    message_id=f"m-{n}",
                    message=events.MessageValue(role="user", content=f"message {n}"),
                )
            )
            for n in range(5)
        )
    )

    contents, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.http.get("/v1/sessions/s-1/messages", params=params)).json()
        contents.append([m["content"] for m in page["items"]])
        if (cursor := page["next_cursor"]) is None:
            break

    assert contents == [["message 0", "message 1"], ["message 2", "message 3"], ["message 4"]]
    problem(await api.http.get("/v1/sessions/s-1/messages?cursor=LTE="), 400, "INVALID_CURSOR")


async def test_an_unknown_session_takes_no_turn(api: Api) -> None:
    response = await api.http.post("/v1/sessions/nowhere/turns", json={"message": "hello"})

    problem(response, 404, "SESSION_NOT_FOUND")
    assert await api.commands() == []
