"""The orchestrator's decisions: each turn's next step, as a pure state machine.

``decide(state, event)`` takes a turn's state and the next event of its session, and
returns the new state and the facts to record. It never calls a model, a tool or the
database, and never reads the clock. Effects are requested as facts
(``ModelCallRequested``, ``ToolCallRequested``) and their results come back as facts, so
after a crash the orchestrator (``orchestrator``) rebuilds this state from the log and
never redoes a step whose result is already there.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema

from schemas import events
from schemas.base import Fact
from schemas.envelope import derived_id
from schemas.errors import ErrorCode


@dataclass(frozen=True)
class TurnState:
    turn_id: str
    session_id: str
    config: events.AgentConfig
    agent_id: str
    tools: dict[str, events.ToolDefinition]
    messages: tuple[events.MessageValue, ...]
    step: int = 0
    call_id: str = ""
    pending: frozenset[str] = frozenset()
    tool_calls_made: int = 0
    usage: events.UsageValue = field(default_factory=events.UsageValue)
    done: bool = False
    agent_version: int = 0
    progress: str = ""  # the id of the last event that moved the turn on
    requested_at: datetime.datetime | None = None


Decision = tuple[TurnState | None, list[tuple[str, Fact]]]
Step = tuple[TurnState, list[tuple[str, Fact]]]


def decide(state: TurnState | None, data: Fact, event_id: str) -> Decision:
    """The next state and the facts to record, each with its step name (for its id)."""
    after, facts = _decide(state, data, event_id)
    if after is not None and after is not state:
        after = replace(after, progress=event_id)
    return after, facts


def _decide(state: TurnState | None, data: Fact, event_id: str) -> Decision:
    if isinstance(data, events.TurnAccepted):
        return _start(data, event_id) if state is None else (state, [])
    if state is None or state.done:
        return state, []
    if isinstance(data, events.TurnCancelled):
        return _cancelled(state, event_id)
    if isinstance(data, events.TurnStepUnprocessable):
        detail = f"{data.consumer} could not process {data.record_type}: {data.reason}"
        return _failed(state, event_id, ErrorCode.STEP_UNPROCESSABLE, detail)
    if isinstance(data, events.TurnDeadlinePassed):
        if data.progress != state.progress:
            return state, []  # the turn moved on after the deadline was set
        detail = f"no progress for {data.deadline_s:g} s"
        return _failed(state, event_id, ErrorCode.TURN_TIMED_OUT, detail)
    if isinstance(data, events.ModelCallCompleted) and data.call_id == state.call_id:
        return _model_answered(state, data, event_id)
    if isinstance(data, events.ModelCallFailed) and data.call_id == state.call_id:
        usage = state.usage + data.usage
        return _failed(replace(state, usage=usage), event_id, data.code, data.detail)
    if isinstance(data, events.ToolCallCompleted | events.ToolCallFailed) and (
        data.tool_call_id in state.pending
    ):
        content = (
            data.result
            if isinstance(data, events.ToolCallCompleted)
            else f"error {data.code}: {data.detail}"
        )
        return _tool_answered(state, data.tool_call_id, content, event_id)
    return state, []


def _failed(state: TurnState, event_id: str, code: ErrorCode | str, detail: str) -> Step:
    """``code``: ours, or one a model worker recorded (passed on as it was recorded)."""
    failed = events.TurnFailed(**_end(state), code=code, detail=detail, usage=state.usage)
    return _ended(state, event_id, "the turn failed", [("failed", failed)])


def _end(state: TurnState) -> dict[str, Any]:
    """What every end of the turn names: the turn, its agent and when it was requested."""
    return {
        "session_id": state.session_id,
        "turn_id": state.turn_id,
        "agent_id": state.agent_id,
        "requested_at": state.requested_at,
    }


def _start(data: events.TurnAccepted, event_id: str) -> Step:
    user = events.MessageValue(role="user", content=data.message)
    system = (
        [events.MessageValue(role="system", content=data.config.system_prompt)]
        if data.config.system_prompt
        else []
    )
    state = TurnState(
        turn_id=data.turn_id,
        session_id=data.session_id,
        config=data.config,
        agent_id=data.agent_id,
        agent_version=data.agent_version,
        tools={t.name: t for t in data.tools},
        messages=(*system, *data.history, user),
        requested_at=data.requested_at,
    )
    ids: dict[str, Any] = {"session_id": data.session_id, "turn_id": data.turn_id}
    started = events.TurnStarted(**ids)
    appended = events.MessageAppended(
        **ids, message_id=derived_id(event_id, "message"), message=user
    )
    state, request = _request_model(state, event_id)
    return state, [("started", started), ("message", appended), *request]


def _request_model(state: TurnState, cause_id: str) -> Step:
    if state.step >= state.config.max_steps:
        detail = f"the turn took more than {state.config.max_steps} model calls"
        return _failed(state, cause_id, ErrorCode.MAX_STEPS_EXCEEDED, detail)
    step = state.step + 1
    call_id = derived_id(cause_id, f"model-call-{step}")
    request = events.ModelCallRequested(
        session_id=state.session_id,
        turn_id=state.turn_id,
        call_id=call_id,
        step=step,
        model=state.config.model,
        agent_id=state.agent_id,
        agent_version=state.agent_version,
        messages=list(state.messages),
        tools=list(state.tools.values()),
    )
    return replace(state, step=step, call_id=call_id, pending=frozenset()), [("model", request)]


def _model_answered(state: TurnState, data: events.ModelCallCompleted, event_id: str) -> Step:
    ids: dict[str, Any] = {"session_id": state.session_id, "turn_id": state.turn_id}
    answer = events.MessageValue(
        role="assistant", content=data.text or None, tool_calls=data.tool_calls
    )
    message_id = derived_id(event_id, "message")
    state = replace(state, messages=(*state.messages, answer), usage=state.usage + data.usage)
    facts: list[tuple[str, Fact]] = [
        ("message", events.MessageAppended(**ids, message_id=message_id, message=answer))
    ]
    if not data.tool_calls:
        done = events.TurnCompleted(
            **_end(state), message_id=message_id, usage=state.usage, steps=state.step
        )
        return replace(state, done=True), [*facts, ("completed", done)]
    pending: set[str] = set()
    rejected: list[tuple[str, str]] = []
    made = state.tool_calls_made
    for call in data.tool_calls:
        tool = state.tools.get(call.name)
        common: dict[str, Any] = {
            **ids,
            "tool_call_id": call.id,
            "step": state.step,
            "tool": call.name,
        }
        problem = _reject_reason(call, tool, made, state.config.max_tool_calls)
        if problem is not None:
            code, detail = problem
            facts.append(
                (
                    f"tool-{call.id}",
                    events.ToolCallRejected(
                        **common, code=code, detail=detail, arguments=call.arguments
                    ),
                )
            )
            rejected.append((call.id, f"error {code}: {detail}"))
            continue
        assert tool is not None
        made += 1
        pending.add(call.id)
        facts.append(
            (
                f"tool-{call.id}",
                events.ToolCallRequested(
                    **common,
                    tool_id=tool.tool_id,
                    agent_id=state.agent_id,
                    agent_version=state.agent_version,
                    url=tool.url,
                    arguments=call.arguments,
                    timeout_s=tool.timeout_s,
                ),
            )
        )
    state = replace(state, pending=frozenset(pending), tool_calls_made=made)
    for call_id, content in rejected:
        # The refusal is the call's answer: recorded, so the history stays well formed.
        refusal = events.MessageValue(role="tool", content=content, tool_call_id=call_id)
        state = replace(state, messages=(*state.messages, refusal))
        facts.append(
            (
                f"message-{call_id}",
                events.MessageAppended(
                    **ids,
                    message_id=derived_id(event_id, f"message-{call_id}"),
                    message=refusal,
                ),
            )
        )
    if pending:
        return state, facts
    state, request = _request_model(state, event_id)
    return state, [*facts, *request]


def _reject_reason(
    call: events.ToolCallValue, tool: events.ToolDefinition | None, made: int, limit: int
) -> tuple[events.ToolRejectCode, str] | None:
    if tool is None:
        return ErrorCode.TOOL_NOT_ALLOWED, f"tool {call.name!r} is not allowed for this agent"
    if made >= limit:
        return ErrorCode.TOOL_CALL_LIMIT, f"more than {limit} tool calls in one turn"
    try:
        jsonschema.validate(call.arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        return ErrorCode.TOOL_SCHEMA_INVALID, exc.message
    except jsonschema.SchemaError as exc:
        detail = f"the tool's parameter schema is invalid: {exc.message}"
        return ErrorCode.TOOL_SCHEMA_INVALID, detail
    return None


def _cancelled(state: TurnState, event_id: str) -> Step:
    return _ended(state, event_id, "the turn was cancelled", [])


def _ended(state: TurnState, event_id: str, why: str, facts: list[tuple[str, Fact]]) -> Step:
    """The turn ends with ``facts``; tool calls still running get an answer in the
    history first, so that the session's next turn shows the model no call without its
    answer."""
    ids: dict[str, Any] = {"session_id": state.session_id, "turn_id": state.turn_id}
    answers: list[tuple[str, Fact]] = []
    for call_id in sorted(state.pending):
        answer = events.MessageValue(
            role="tool",
            content=f"error: {why} before this tool call finished",
            tool_call_id=call_id,
        )
        answers.append(
            (
                f"message-{call_id}",
                events.MessageAppended(
                    **ids, message_id=derived_id(event_id, f"message-{call_id}"), message=answer
                ),
            )
        )
    return replace(state, done=True, pending=frozenset()), [*answers, *facts]


def _tool_answered(state: TurnState, tool_call_id: str, content: str, event_id: str) -> Step:
    message = events.MessageValue(role="tool", content=content, tool_call_id=tool_call_id)
    ids: dict[str, Any] = {"session_id": state.session_id, "turn_id": state.turn_id}
    facts: list[tuple[str, Fact]] = [
        (
            "message",
            events.MessageAppended(
                **ids, message_id=derived_id(event_id, "message"), message=message
            ),
        )
    ]
    state = replace(
        state, messages=(*state.messages, message), pending=state.pending - {tool_call_id}
    )
    if state.pending:
        return state, facts
    state, request = _request_model(state, event_id)
    return state, [*facts, *request]
