"""The core read models as a pure fold: plain values in, row operations out, no I/O."""

from __future__ import annotations

import dataclasses
import datetime
import string
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.core import Context, Notify, Op, Update, Upsert, project
from schemas import events
from schemas.base import Fact

T = datetime.datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=datetime.UTC)
CTX = Context(
    event_id="evt-1",
    tenant_id="tenant-a",
    causation_id="cmd-1",
    time=T,
    partition=2,
    offset=41,
)
CONFIG = events.AgentConfig(name="calculator", model="dev:echo", tools=["lookup"])
CONFIG_JSON = {
    "name": "calculator",
    "model": "dev:echo",
    "system_prompt": "",
    "tools": ["lookup"],
    "max_steps": 8,
    "max_tool_calls": 16,
}


# -- what representative events project to ------------------------------------------


def test_agent_created_adds_the_agent_its_first_version_and_the_command_outcome() -> None:
    data = events.AgentCreated(agent_id="agent-1", version=1, config=CONFIG)

    assert project(data, CTX) == [
        Upsert(
            "agents",
            ("agent_id",),
            {
                "agent_id": "agent-1",
                "tenant_id": "tenant-a",
                "version": 1,
                "config": CONFIG_JSON,
                "status": "active",
                "created_at": T,
                "updated_at": T,
            },
        ),
        Upsert(
            "agent_versions",
            ("agent_id", "version"),
            {
                "agent_id": "agent-1",
                "version": 1,
                "tenant_id": "tenant-a",
                "config": CONFIG_JSON,
                "change": "created",
                "changed": [
                    "max_steps",
                    "max_tool_calls",
                    "model",
                    "name",
                    "system_prompt",
                    "tools",
                ],
                "event_id": "evt-1",
                "recorded_at": T,
            },
        ),
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "agent-1",
                "outcome": "accepted",
                "code": None,
                "detail": None,
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


def test_agent_command_rejected_records_only_the_outcome_with_its_code() -> None:
    data = events.AgentCommandRejected(
        agent_id="agent-1", command_id="cmd-1", code="AGENT_NOT_FOUND", detail="no agent-1"
    )

    assert project(data, CTX) == [
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "agent-1",
                "outcome": "rejected",
                "code": "AGENT_NOT_FOUND",
                "detail": "no agent-1",
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


def test_turn_requested_adds_the_turn_and_wakes_nobody() -> None:
    data = events.TurnRequested(session_id="session-1", turn_id="turn-1", message="hi")

    assert project(data, CTX) == [
        Upsert(
            "turns",
            ("turn_id",),
            {
                "turn_id": "turn-1",
                "tenant_id": "tenant-a",
                "session_id": "session-1",
                "status": "requested",
                "mode": "chat",
                "request": "hi",
                "requested_at": T,
            },
        )
    ]


def test_turn_accepted_records_where_in_the_log_it_was_accepted() -> None:
    data = events.TurnAccepted(
        session_id="session-1",
        turn_id="turn-1",
        agent_id="agent-1",
        agent_version=3,
        config=CONFIG,
        tools=[],
        history=[],
        message="hi",
    )

    ops = project(data, CTX)

    assert ops[0] == Update(
        "turns",
        {"turn_id": "turn-1", "tenant_id": "tenant-a"},
        {"status": "accepted", "agent_version": 3, "accepted_partition": 2, "accepted_offset": 41},
    )
    # Only a finished turn wakes its waiters; the accepted command wakes its own.
    assert ops[2:] == [
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "session-1",
                "outcome": "accepted",
                "code": None,
                "detail": None,
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


def test_turn_completed_finishes_the_turn_records_a_step_and_wakes_its_waiters() -> None:
    data = events.TurnCompleted(
        session_id="session-1",
        turn_id="turn-1",
        message_id="msg-9",
        usage=events.UsageValue(input_tokens=120, output_tokens=45),
        steps=3,
    )

    assert project(data, CTX) == [
        Update(
            "turns",
            {"turn_id": "turn-1", "tenant_id": "tenant-a"},
            {
                "status": "completed",
                "answer_message_id": "msg-9",
                "steps": 3,
                "input_tokens": 120,
                "output_tokens": 45,
                "finished_at": T,
            },
        ),
        Upsert(
            "turn_steps",
            ("event_id",),
            {
                "event_id": "evt-1",
                "tenant_id": "tenant-a",
                "turn_id": "turn-1",
                "position": 41,
                "type": "agentlog.turn.completed.v1",
                "detail": {
                    "session_id": "session-1",
                    "turn_id": "turn-1",
                    "message_id": "msg-9",
                    "usage": {"input_tokens": 120, "output_tokens": 45},
                    "steps": 3,
                },
                "recorded_at": T,
            },
        ),
        Notify("turn:turn-1"),
    ]


def test_a_message_is_positioned_by_its_offset_in_the_log() -> None:
    data = events.MessageAppended(
        session_id="session-1",
        turn_id="turn-1",
        message_id="msg-1",
        message=events.MessageValue(
            role="assistant",
            tool_calls=[events.ToolCallValue(id="call-1", name="lookup", arguments={"q": 1})],
        ),
    )

    message, step = project(data, CTX)

    assert message == Upsert(
        "messages",
        ("message_id",),
        {
            "message_id": "msg-1",
            "tenant_id": "tenant-a",
            "session_id": "session-1",
            "turn_id": "turn-1",
            "position": 41,
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call-1", "name": "lookup", "arguments": {"q": 1}}],
            "tool_call_id": None,
            "created_at": T,
        },
    )
    assert isinstance(step, Upsert)
    assert (step.table, step.row["position"], step.row["type"]) == (
        "turn_steps",
        41,
        "agentlog.message.appended.v1",
    )


def test_a_registered_tool_overwrites_its_definition_and_wakes_its_waiters() -> None:
    tool = events.ToolDefinition(tool_id="tool-1", name="lookup", url="http://tools.test/l")
    data = events.ToolRegistered(tenant_id="tenant-a", tool=tool, secret_header_names=["X-Token"])

    assert project(data, CTX) == [
        Upsert(
            "tools",
            ("tool_id",),
            {
                "tool_id": "tool-1",
                "tenant_id": "tenant-a",
                "name": "lookup",
                "definition": {
                    "tool_id": "tool-1",
                    "name": "lookup",
                    "description": "",
                    "url": "http://tools.test/l",
                    "parameters": {"type": "object"},
                    "timeout_s": 10.0,
                },
                "secret_header_names": ["X-Token"],
                "created_at": T,
            },
            overwrite=("definition", "secret_header_names"),
        ),
        Notify("tool:tool-1"),
    ]


def test_facts_without_a_read_model_project_to_nothing() -> None:
    unprojected: list[Fact] = [
        events.AgentCreateRequested(agent_id="agent-1", config=CONFIG),
        events.TurnCancelRequested(session_id="session-1", turn_id="turn-1"),
        events.OutputDelta(
            session_id="session-1", turn_id="turn-1", call_id="c", index=0, text="4"
        ),
        events.UsageRecorded(
            tenant_id="tenant-a",
            usage_id="u-1",
            session_id="session-1",
            turn_id="turn-1",
            source="model",
            resource="dev:echo",
        ),
    ]

    assert [project(data, CTX) for data in unprojected] == [[], [], [], []]


# -- properties over every fact the fold handles -------------------------------------

ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
texts = st.text(max_size=20)
counts = st.integers(min_value=0, max_value=2**31 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
arguments = st.dictionaries(ids, json_values, max_size=3)
usages = st.builds(events.UsageValue, input_tokens=counts, output_tokens=counts)
configs = st.builds(
    events.AgentConfig,
    name=ids,
    model=ids,
    system_prompt=texts,
    tools=st.lists(ids, max_size=3),
    max_steps=st.integers(1, 64),
    max_tool_calls=st.integers(0, 64),
)
tool_definitions = st.builds(
    events.ToolDefinition,
    tool_id=ids,
    name=ids,
    description=texts,
    url=ids.map(lambda path: f"http://tools.test/{path}"),
    parameters=arguments,
    timeout_s=st.floats(0.1, 60, allow_nan=False),
)
tool_call_values = st.builds(events.ToolCallValue, id=ids, name=ids, arguments=arguments)
messages = st.builds(
    events.MessageValue,
    role=st.sampled_from(["system", "user", "assistant", "tool"]),
    content=st.none() | texts,
    tool_calls=st.lists(tool_call_values, max_size=2),
    tool_call_id=st.none() | ids,
)
contexts = st.builds(
    Context,
    event_id=ids,
    tenant_id=ids,
    causation_id=ids,
    time=st.datetimes(
        min_value=datetime.datetime(1971, 1, 1),
        max_value=datetime.datetime(2100, 1, 1),
        timezones=st.just(datetime.UTC),
    ),
    partition=st.integers(0, 1023),
    offset=st.integers(0, 2**63 - 1),
)


def fact_strategies(tenant_id: str) -> dict[type[Fact], st.SearchStrategy[Fact]]:
    """A strategy per fact type; tenant facts name the event's own tenant, as every
    writer of them does."""
    turn = {"session_id": ids, "turn_id": ids}
    tool_call = {**turn, "tool_call_id": ids, "step": counts, "tool": ids}
    model_call = {**turn, "call_id": ids, "step": counts}
    rejected = {"command_id": ids, "code": ids, "detail": texts}
    return {
        events.TenantCreated: st.builds(
            events.TenantCreated, tenant_id=st.just(tenant_id), display_name=texts
        ),
        events.ApiKeyCreated: st.builds(
            events.ApiKeyCreated,
            tenant_id=st.just(tenant_id),
            key_id=ids,
            key_prefix=ids,
            key_hash=ids,
        ),
        events.ApiKeyRevoked: st.builds(
            events.ApiKeyRevoked, tenant_id=st.just(tenant_id), key_id=ids
        ),
        events.ToolRegistered: st.builds(
            events.ToolRegistered,
            tenant_id=st.just(tenant_id),
            tool=tool_definitions,
            secret_header_names=st.lists(ids, max_size=2),
        ),
        events.AgentCreated: st.builds(
            events.AgentCreated, agent_id=ids, version=counts, config=configs
        ),
        events.AgentUpdated: st.builds(
            events.AgentUpdated,
            agent_id=ids,
            version=counts,
            config=configs,
            changed=st.lists(ids, max_size=3),
        ),
        events.AgentDisabled: st.builds(events.AgentDisabled, agent_id=ids, version=counts),
        events.AgentCommandRejected: st.builds(
            events.AgentCommandRejected, agent_id=ids, **rejected
        ),
        events.SessionCreated: st.builds(
            events.SessionCreated,
            session_id=ids,
            agent_id=ids,
            metadata=st.dictionaries(ids, texts, max_size=2),
        ),
        events.SessionCommandRejected: st.builds(
            events.SessionCommandRejected, session_id=ids, **rejected
        ),
        events.MessageAppended: st.builds(
            events.MessageAppended, **turn, message_id=ids, message=messages
        ),
        events.TurnRequested: st.builds(
            events.TurnRequested, **turn, message=texts, mode=st.sampled_from(["chat", "invoke"])
        ),
        events.TurnAccepted: st.builds(
            events.TurnAccepted,
            **turn,
            agent_id=ids,
            agent_version=counts,
            config=configs,
            tools=st.lists(tool_definitions, max_size=2),
            history=st.lists(messages, max_size=2),
            message=texts,
        ),
        events.TurnRejected: st.builds(events.TurnRejected, **turn, code=ids, detail=texts),
        events.TurnStarted: st.builds(events.TurnStarted, **turn),
        events.TurnCompleted: st.builds(
            events.TurnCompleted, **turn, message_id=ids, usage=usages, steps=counts
        ),
        events.TurnFailed: st.builds(
            events.TurnFailed, **turn, code=ids, detail=texts, usage=usages
        ),
        events.TurnCancelled: st.builds(events.TurnCancelled, **turn),
        events.TurnStepUnprocessable: st.builds(
            events.TurnStepUnprocessable,
            **turn,
            record_id=ids,
            record_type=ids,
            consumer=ids,
            reason=texts,
        ),
        events.TurnDeadlinePassed: st.builds(
            events.TurnDeadlinePassed, **turn, progress=ids, deadline_s=st.just(600.0)
        ),
        events.ModelCallRequested: st.builds(
            events.ModelCallRequested,
            **model_call,
            model=ids,
            messages=st.lists(messages, max_size=2),
            tools=st.lists(tool_definitions, max_size=1),
        ),
        events.ModelCallCompleted: st.builds(
            events.ModelCallCompleted,
            **model_call,
            text=texts,
            tool_calls=st.lists(tool_call_values, max_size=2),
            usage=usages,
            attempts=st.integers(1, 5),
        ),
        events.ModelCallFailed: st.builds(
            events.ModelCallFailed,
            **model_call,
            code=ids,
            detail=texts,
            usage=usages,
            attempts=st.integers(1, 5),
        ),
        events.ToolCallRequested: st.builds(
            events.ToolCallRequested,
            **tool_call,
            tool_id=ids,
            url=ids,
            arguments=arguments,
            timeout_s=st.floats(0.1, 60, allow_nan=False),
        ),
        events.ToolCallCompleted: st.builds(
            events.ToolCallCompleted,
            **tool_call,
            status_code=st.integers(100, 599),
            result=texts,
            truncated=st.booleans(),
        ),
        events.ToolCallFailed: st.builds(
            events.ToolCallFailed, **tool_call, code=ids, detail=texts
        ),
        events.ToolCallRejected: st.builds(
            events.ToolCallRejected,
            **tool_call,
            code=st.sampled_from(["TOOL_NOT_ALLOWED", "TOOL_SCHEMA_INVALID", "TOOL_CALL_LIMIT"]),
            detail=texts,
            arguments=arguments,
        ),
        # Facts the fold ignores belong in the properties too.
        events.TurnCancelRequested: st.builds(events.TurnCancelRequested, **turn),
        events.OutputDelta: st.builds(
            events.OutputDelta, **turn, call_id=ids, index=counts, text=texts
        ),
    }


@st.composite
def facts_in_context(draw: st.DrawFn) -> tuple[Fact, Context]:
    ctx = draw(contexts)
    fact = draw(st.one_of(*fact_strategies(ctx.tenant_id).values()))
    return fact, ctx


def datetimes_in(value: Any) -> list[datetime.date]:
    if isinstance(value, datetime.date):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in datetimes_in(v)]
    if isinstance(value, list | tuple):
        return [d for v in value for d in datetimes_in(v)]
    return []


def written(op: Op) -> dict[str, Any]:
    """The column values an operation writes (a Notify writes none)."""
    if isinstance(op, Upsert):
        return op.row
    if isinstance(op, Update):
        return op.values
    return {}


def test_the_properties_cover_every_fact_the_fold_handles() -> None:
    handled = {cls for cls in project.registry if cls is not object}

    assert handled <= set(fact_strategies("tenant-a"))


@settings(deadline=None)
@given(facts_in_context())
def test_the_fold_is_deterministic(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    first = project(fact, ctx)
    time.sleep(0.001)  # the wall clock moves on; the answer must not
    # As a rebuild sees it: the fact parsed anew from its JSON, an equal context.
    reread = type(fact).model_validate_json(fact.model_dump_json())
    again = project(reread, dataclasses.replace(ctx))

    assert again == first


@given(facts_in_context())
def test_the_fold_reads_no_wall_clock(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    stamps = [d for op in project(fact, ctx) for d in datetimes_in(written(op))]

    assert all(stamp == ctx.time for stamp in stamps), stamps


@given(facts_in_context())
def test_every_row_written_carries_the_events_tenant(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    ops = project(fact, ctx)

    for op in ops:
        if isinstance(op, Upsert):
            assert op.row["tenant_id"] == ctx.tenant_id, op
        elif isinstance(op, Update):
            # An update keeps the tenant its row was inserted with.
            assert "tenant_id" not in op.values, op


@given(facts_in_context())
def test_upserts_carry_their_key_and_overwritten_columns(example: tuple[Fact, Context]) -> None:
    fact, ctx = example

    for op in project(fact, ctx):
        if isinstance(op, Upsert):
            assert set(op.key) | set(op.overwrite) <= set(op.row), op
