"""SSE resume: the log is the buffer, so a client that reconnects with Last-Event-ID gets
exactly the rest, with no gap and no repeat."""

from __future__ import annotations

import json

from tests.e2e.conftest import Platform, ToolServer
from tests.e2e.test_turns import SseReader, open_session, setup_agent


def test_reconnect_with_last_event_id_resumes_exactly(
    platform: Platform, tool_server: ToolServer
) -> None:
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])
        first = SseReader(platform, session_id, stop_after=3)
        message = " ".join(f"word{i}" for i in range(30))
        done = api.post(f"/v1/sessions/{session_id}/turns?wait=30", json={"message": message})
        assert done.json()["status"] == "completed"
        first.thread.join(10)
        assert len(first.events) == 3, "the first client disconnected mid-turn"

        second = SseReader(platform, session_id, last_event_id=first.events[-1]["id"])
        second.wait_for(lambda evs: any(e["event"] == "message" for e in evs))
    combined = [e["id"] for e in first.events + second.events]
    assert len(combined) == len(set(combined)), "an event was delivered twice"
    offsets = [int(i.split(":")[1]) for i in combined]
    assert offsets == sorted(offsets)
    deltas = [e for e in first.events + second.events if e["event"] == "delta"]
    words = "".join(json.loads(e["data"])["text"] for e in deltas)
    assert words == f"echo: {message}", "no gap: every delta arrived"
