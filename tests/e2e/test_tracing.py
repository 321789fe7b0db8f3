"""One turn is one trace: a tool-calling turn over HTTP, exported over OTLP/HTTP to a real
receiver, forms one tree of spans from the HTTP request down, with GenAI spans that carry
the usage the log records."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import events
from schemas.envelope import Envelope, from_kafka
from schemas.usage import UsageRecorded
from streams.tracing import sampled
from tests.e2e.conftest import Platform, ToolServer, running_platform
from tests.e2e.test_turns import open_session, read_topic, setup_agent
from tests.otlp import OtlpReceiver, Span
from workers.providers.protocol_server import ModelServer

# The consumer groups a tool-calling turn passes through (group names end in the role).
ROLES = ("commands", "orchestrator", "model", "tool", "projector", "billing")
# A client's own trace context, sampled.
CLIENT = "00-c11e47c11e47c11e47c11e47c11e47c1-c11e47c11e47c11e-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced_platform(
    bootstrap: str, tmp_path: Path, model_server: ModelServer, receiver: OtlpReceiver
) -> Iterator[Platform]:
    with running_platform(
        bootstrap,
        tmp_path,
        model_server,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
    ) as platform:
        yield platform


def _group_role(span: Span) -> str:
    return str(span.attributes.get("messaging.consumer.group.name", "")).rpartition(".")[2]


def test_a_tool_calling_turn_is_one_trace_from_the_http_request_down(
    traced_platform: Platform, tool_server: ToolServer, receiver: OtlpReceiver
) -> None:
    platform = traced_platform
    with platform.client() as api:
        agent = setup_agent(api, tool_server)
        session_id = open_session(api, agent["agent_id"])
        turn = api.post(
            f"/v1/sessions/{session_id}/turns?wait=30",
            json={"message": 'call weather {"city": "Oslo"}'},
            headers={"traceparent": CLIENT},
        )
        assert turn.status_code == 200, turn.text
        assert turn.json()["status"] == "completed"
    turn_id = turn.json()["turn_id"]

    session_records = [
        r for r in read_topic(platform, "agentlog.events") if r.key == session_id.encode()
    ]
    turn_events: list[Envelope[Any]] = [
        env
        for env in (from_kafka(r.key, r.value, list(r.headers)) for r in session_records)
        if getattr(env.data, "turn_id", None) == turn_id
    ]
    usage = {
        env.data.call_id: env.data
        for env in (
            from_kafka(r.key, r.value, list(r.headers))
            for r in read_topic(platform, "agentlog.usage")
        )
        if isinstance(env.data, UsageRecorded) and env.data.turn_id == turn_id
    }
    turn_event_ids = {env.id for env in turn_events}
    completed = next(e for e in turn_events if isinstance(e.data, events.TurnCompleted))

    def arrived(spans: list[Span]) -> bool:
        """The turn's last event processed by the projector and the billing projector's
        usage, and the turn's span ended."""
        processed = {
            (_group_role(s), s.attributes.get("messaging.message.id"))
            for s in spans
            if s.kind_name == "consumer"
        }
        return (
            ("projector", completed.id) in processed
            and any(s.name.startswith("invoke_agent") for s in spans)
            and {r for r, _id in processed} >= set(ROLES)
        )

    receiver.wait_for(arrived)
    # What was buffered when the last awaited span left is exported within 100 ms.
    spans = receiver.wait_for(lambda spans: len(spans) == len(receiver.spans), timeout=1)

    [request] = [
        s
        for s in spans
        if s.kind_name == "server" and s.name == "POST /v1/sessions/{session_id}/turns"
    ]
    trace = [s for s in spans if s.trace_id == request.trace_id]
    by_id = {s.span_id: s for s in trace}
    assert len(by_id) == len(trace), "span ids are unique"

    # One trace: every span of the turn's records, and every GenAI span of the session.
    of_turn = [
        s
        for s in spans
        if s.attributes.get("messaging.message.id") in turn_event_ids
        or s.attributes.get("gen_ai.conversation.id") == session_id
    ]
    assert of_turn, "no span names the turn's records"
    assert {s.trace_id for s in of_turn} == {request.trace_id}

    # One tree: the request is the only root, and every other span's parent is in it.
    roots = [s for s in trace if not s.parent_id]
    assert roots == [request]
    # The client's traceparent is linked, not continued: the trace, and what the ledger
    # keeps of it, is ours.
    assert request.links == (tuple(CLIENT.split("-")[1:3]),)
    assert request.trace_id != CLIENT.split("-")[1]
    assert {u.trace_id for u in usage.values()} == {request.trace_id}
    orphans = [s.name for s in trace if s.parent_id and s.parent_id not in by_id]
    assert orphans == []

    def ancestors(span: Span) -> list[Span]:
        chain = []
        while span.parent_id:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    # Produce and process spans per topic, by the messaging conventions, across roles.
    sends = [s for s in trace if s.kind_name == "producer"]
    processes = [s for s in trace if s.kind_name == "consumer"]
    topics = {s.attributes["messaging.destination.name"] for s in sends}
    assert {f"{platform.prefix}agentlog.commands", f"{platform.prefix}agentlog.events"} <= topics
    assert all(s.name == f"send {s.attributes['messaging.destination.name']}" for s in sends)
    assert all(s.name == f"process {s.attributes['messaging.destination.name']}" for s in processes)
    assert all(s.attributes["messaging.system"] == "kafka" for s in sends + processes)
    assert {_group_role(s) for s in processes} >= set(ROLES)
    for process in processes:  # a record's processing continues its producer's span
        assert by_id[process.parent_id].kind_name == "producer", process.name

    # GenAI spans: the turn, its model calls and its tool call.
    [invoke] = [s for s in trace if s.name == "invoke_agent helper"]
    assert invoke.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert invoke.attributes["gen_ai.agent.id"] == agent["agent_id"]
    assert invoke.attributes["gen_ai.conversation.id"] == session_id
    chats = [s for s in trace if s.name == "chat dev"]
    assert len(chats) == 2  # the call that asks for the tool, and the answer
    requested = {e.id: e.data for e in turn_events if isinstance(e.data, events.ModelCallRequested)}
    for chat in chats:
        assert invoke in ancestors(chat)
        assert chat.kind_name == "client"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"] == "dev"
        assert chat.attributes["gen_ai.request.model"] == "dev"
        process = by_id[chat.parent_id]  # the model worker's, of the request
        assert (process.kind_name, _group_role(process)) == ("consumer", "model")
        request_id = process.attributes["messaging.message.id"]
        used = usage[requested[request_id].call_id].quantities
        assert chat.attributes["gen_ai.usage.input_tokens"] == (
            used["input_tokens"] + used["cached_input_tokens"]
        )
        assert chat.attributes["gen_ai.usage.output_tokens"] == used["output_tokens"]
        assert used["output_tokens"] > 0
    [tool] = [s for s in trace if s.name == "execute_tool weather"]
    assert invoke in ancestors(tool)
    assert _group_role(by_id[tool.parent_id]) == "tool"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    [tool_call] = [e.data for e in turn_events if isinstance(e.data, events.ToolCallRequested)]
    assert tool.attributes["gen_ai.tool.call.id"] == tool_call.tool_call_id
    assert request in ancestors(invoke)

    # Message content is not recorded on spans.
    values = " ".join(str(v) for s in trace for v in s.attributes.values())
    assert "Oslo" not in values
    assert "sunny" not in values


def test_a_client_cannot_choose_the_trace_or_have_it_recorded_when_we_sample_none(
    bootstrap: str, tmp_path: Path, model_server: ModelServer, receiver: OtlpReceiver
) -> None:
    with (
        running_platform(
            bootstrap,
            tmp_path,
            model_server,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG="0",
        ) as platform,
        platform.client() as api,
    ):
        response = api.post("/v1/agents", json={"name": "helper"}, headers={"traceparent": CLIENT})
        assert response.status_code == 201, response.text
        session_id = open_session(api, response.json()["agent_id"])
        turn = api.post(
            f"/v1/sessions/{session_id}/turns?wait=30",
            json={"message": "hello"},
            headers={"traceparent": CLIENT},
        )
        assert turn.json()["status"] == "completed", turn.text
        records = [
            from_kafka(r.key, r.value, list(r.headers))
            for topic in ("agentlog.commands", "agentlog.events", "agentlog.usage")
            for r in read_topic(platform, topic)
        ]
    # Every record is in a trace of ours, unsampled: the sampler's word, not the client's
    # flag.
    assert not [env for env in records if env.traceparent.split("-")[1] == CLIENT.split("-")[1]]
    # Not the CLI's (the tenant, its key's request) nor what follows them (the key).
    cli = {env.id for env in records if env.source == "/cli"}
    served = [env for env in records if env.source != "/cli" and env.correlation_id not in cli]
    assert {env.type for env in served} >= {"agentlog.turn.completed.v1"}
    assert not [env.type for env in served if sampled(env.traceparent)]
    usage = [env.data for env in records if isinstance(env.data, UsageRecorded)]
    assert usage
    assert CLIENT.split("-")[1] not in {u.trace_id for u in usage}
    time.sleep(1)  # a span made would have been exported within 100 ms
    ours = {env.traceparent.split("-")[1] for env in served} | {CLIENT.split("-")[1]}
    assert not [span.name for span in receiver.spans if span.trace_id in ours]
