"""SSE resume: the log is the buffer, so a client that reconnects with Last-Event-ID gets
exactly the rest, with no gap and no repeat."""

from __future__ import annotations

import json

from tests.e2e.conftest import Platform
from tests.e2e.test_turns import SseReader, open_session
from workers.providers.protocol_server import ModelServer, Reply

WORDS = [f"word{i} " for i in range(30)]


def test_reconnect_with_last_event_id_resumes_exactly(
    platform: Platform, model_server: ModelServer
) -> None:
    with platform.client() as api:
        agent = api.post("/v1/agents", json={"name": "slow", "model": "openai:paced"}).json()
        session_id = open_session(api, agent["agent_id"])
        # The model streams 30 chunks over about 0.9 s: the first client leaves mid-turn.
        # Well inside the platform's model timeout (2 s a call): at 1.5 s, a loaded
        # machine let the call time out after its last chunk, and the retry's deltas
        # followed.
        model_server.script(Reply(chunks=tuple(WORDS), chunk_delay_s=0.03))
        first = SseReader(platform, session_id, stop_after=3)
        turn = api.post(f"/v1/sessions/{session_id}/turns", json={"message": "go"}).json()
        first.thread.join(10)
        assert len(first.events) == 3, "the first client disconnected"
        assert api.get(f"/v1/turns/{turn['turn_id']}").json()["status"] != "completed"

        with SseReader(platform, session_id, last_event_id=first.events[-1]["id"]) as second:
            second.wait_for(lambda evs: any(e["event"] == "message" for e in evs))
    combined = [e["id"] for e in first.events + second.events]
    assert len(combined) == len(set(combined)), "an event was delivered twice"
    offsets = [int(i.split(":")[1]) for i in combined]
    assert offsets == sorted(offsets)
    deltas = [json.loads(e["data"]) for e in first.events + second.events if e["event"] == "delta"]
    assert [d["index"] for d in deltas] == list(range(len(WORDS))), "no gap: every delta arrived"
    assert "".join(d["text"] for d in deltas) == "".join(WORDS)
