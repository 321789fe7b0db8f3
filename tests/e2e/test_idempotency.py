"""Idempotent writes: a request retried with its Idempotency-Key creates nothing new."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from schemas import events
from schemas.envelope import from_kafka
from tests.e2e.conftest import Platform
from tests.e2e.test_bad_input import problem
from tests.e2e.test_turns import read_topic
from workers.providers.protocol_server import ModelServer


def test_retried_writes_create_one_agent_one_session_and_run_one_turn(
    platform: Platform, model_server: ModelServer
) -> None:
    with platform.client() as api:
        agent_body = {"name": "once", "model": "openai:once"}
        first = api.post("/v1/agents", json=agent_body, headers={"Idempotency-Key": "agent-1"})
        again = api.post("/v1/agents", json=agent_body, headers={"Idempotency-Key": "agent-1"})
        assert first.status_code == again.status_code == 201, again.text
        assert first.json() == again.json()
        agent_id = first.json()["agent_id"]
        assert [a["agent_id"] for a in api.get("/v1/agents").json()["items"]] == [agent_id]

        session_body = {"agent_id": agent_id}
        sessions = {
            api.post(
                "/v1/sessions", json=session_body, headers={"Idempotency-Key": "session-1"}
            ).json()["session_id"]
            for _ in range(2)
        }
        assert len(sessions) == 1
        (session_id,) = sessions

        # The same turn sent three times at once, and once more after it finished.
        def send() -> dict[str, object]:
            response = api.post(
                f"/v1/sessions/{session_id}/turns?wait=30",
                json={"message": "only once"},
                headers={"Idempotency-Key": "turn-1"},
            )
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: send(), range(3)))
        answers.append(send())
        assert {a["turn_id"] for a in answers} == {answers[0]["turn_id"]}
        assert {a["status"] for a in answers} == {"completed"}

        problem(
            api.post(
                f"/v1/sessions/{session_id}/turns",
                json={"message": "something else"},
                headers={"Idempotency-Key": "turn-1"},
            ),
            422,
            "IDEMPOTENCY_KEY_REUSED",
        )
        # Without a key, the same message is a new turn.
        other = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": "only once"})
        assert other.json()["turn_id"] != answers[0]["turn_id"]

    facts = [
        from_kafka(r.key, r.value, list(r.headers))
        for r in read_topic(platform, "agentlog.events")
        if r.key == session_id.encode()
    ]
    accepted = [f for f in facts if isinstance(f.data, events.TurnAccepted)]
    assert len({f.id for f in accepted}) == 2, "the retried turn was accepted once"
    assert len(model_server.received) == 2, "its model was called once, the other turn's once"
