"""What a client does besides a plain turn: cancel one, invoke an agent once, and stream
sessions whose output lies in different partitions side by side."""

from __future__ import annotations

import json

import httpx
from aiokafka.partitioner import DefaultPartitioner

from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_bad_input import problem
from tests.e2e.test_turns import SseReader, open_session, setup_agent
from tests.eventually import eventually

PARTITIONS = 3  # platform_env's AGENTLOG_TOPIC_PARTITIONS


def wait_for_status(api: httpx.Client, turn_id: str, statuses: set[str]) -> dict[str, object]:
    def turn() -> dict[str, object]:
        found: dict[str, object] = api.get(f"/v1/turns/{turn_id}").json()
        assert found["status"] in statuses, found
        return found

    return eventually(turn, f"turn {turn_id} in {sorted(statuses)}", timeout=30)


def test_a_cancelled_turn_ends_and_the_session_goes_on(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        slow = {"name": "slow", "url": f"{tool_server.url}/slow", "timeout_s": 10}
        assert api.post("/v1/tools", json=slow).status_code == 201
        agent = api.post("/v1/agents", json={"name": "a", "model": "dev", "tools": ["slow"]})
        session_id = open_session(api, agent.json()["agent_id"])

        turn = api.post(f"/v1/sessions/{session_id}/turns", json={"message": "call slow {}"})
        turn_id = turn.json()["turn_id"]
        wait_for_status(api, turn_id, {"running"})
        cancelled = api.post(f"/v1/turns/{turn_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json() == {"turn_id": turn_id, "status": "cancel_requested"}

        assert wait_for_status(api, turn_id, {"cancelled", "completed"})["status"] == "cancelled"
        problem(api.post(f"/v1/turns/{turn_id}/cancel"), 409, "TURN_NOT_ACTIVE")
        # The slow tool's answer, when it comes, changes nothing; the next turn runs.
        after = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": "next"})
        assert after.json()["answer"] == "echo: next"
        assert api.get(f"/v1/turns/{turn_id}").json()["status"] == "cancelled"


def test_invoke_runs_one_turn_in_a_new_session_and_is_idempotent(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent_id = setup_agent(api, tool_server)["agent_id"]
        once = {"Idempotency-Key": "invoke-1"}
        first = api.post(f"/v1/agents/{agent_id}/invoke", json={"message": "hi"}, headers=once)
        again = api.post(f"/v1/agents/{agent_id}/invoke", json={"message": "hi"}, headers=once)
        other = api.post(f"/v1/agents/{agent_id}/invoke", json={"message": "hi"})

        for response in (first, again, other):
            assert response.status_code == 200, response.text
            assert response.json()["answer"] == "echo: hi"
        assert again.json()["turn_id"] == first.json()["turn_id"]
        assert other.json()["session_id"] != first.json()["session_id"]
        session = api.get(f"/v1/sessions/{first.json()['session_id']}").json()
        assert session["metadata"] == {"mode": "invoke"}
        assert api.get(f"/v1/turns/{first.json()['turn_id']}").json()["mode"] == "invoke"
        problem(
            api.post("/v1/agents/no-such-agent/invoke", json={"message": "hi"}),
            404,
            "AGENT_NOT_FOUND",
        )


def partition_of(session_id: str) -> int:
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(session_id.encode(), partitions, partitions))


def test_streams_of_interleaved_sessions_on_different_partitions_stay_apart(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent_id = setup_agent(api, tool_server)["agent_id"]
        sessions: dict[int, str] = {}
        while len(sessions) < 2:
            session_id = open_session(api, agent_id)
            sessions.setdefault(partition_of(session_id), session_id)
        readers = {sid: SseReader(platform, sid) for sid in sessions.values()}
        try:
            for round_ in range(3):
                for partition, session_id in sessions.items():
                    message = f"round {round_} in {partition}"
                    turn = api.post(
                        f"/v1/sessions/{session_id}/turns?wait=30", json={"message": message}
                    )
                    assert turn.json()["answer"] == f"echo: {message}"
            for partition, session_id in sessions.items():
                reader = readers[session_id]
                reader.wait_for(lambda evs: sum(e["event"] == "message" for e in evs) == 3)
                finals = [
                    json.loads(e["data"])["text"] for e in reader.events if e["event"] == "message"
                ]
                assert finals == [f"echo: round {r} in {partition}" for r in range(3)]
                assert {e["id"].split(":")[0] for e in reader.events} == {str(partition)}
        finally:
            for reader in readers.values():
                reader.close()
