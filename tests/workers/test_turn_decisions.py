"""The orchestrator's pure decision: each turn's next step from its state and one event.

Examples pin the facts recorded at each step of a turn; property tests hold the
invariants over generated turns: deterministic decisions, ids derived only from the
causing event and the step, and limits that no turn exceeds.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import events
from schemas.base import Fact
from schemas.envelope import derived_id
from schemas.errors import ErrorCode
from workers.turn_decisions import Decision, TurnState, decide

SESSION, TURN = "s-1", "t-1"
IDS: dict[str, Any] = {"session_id": SESSION, "turn_id": TURN}
REQUESTED_AT = datetime.datetime(2026, 11, 2, 9, 30, tzinfo=datetime.UTC)
# What a turn's end names besides the turn: its agent and when it was requested.
END: dict[str, Any] = {**IDS, "agent_id": "a-1", "requested_at": REQUESTED_AT}
ACCEPTED_ID = "evt-accepted"
Facts = list[tuple[str, Fact]]

WEATHER = events.ToolDefinition(
    tool_id="tool-weather",
    name="weather",
    description="Current weather for a city",
    url="http://tools.test/weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    timeout_s=5.0,
)
CLOCK = events.ToolDefinition(tool_id="tool-clock", name="clock", url="http://tools.test/clock")
CONFIG = events.AgentConfig(
    name="helper",
    model="m-1",
    system_prompt="Be brief.",
    tools=["weather", "clock"],
    max_steps=4,
    max_tool_calls=3,
)
SYSTEM = events.MessageValue(role="system", content="Be brief.")
HISTORY = (
    events.MessageValue(role="user", content="Hi"),
    events.MessageValue(role="assistant", content="Hello!"),
)
USER = events.MessageValue(role="user", content="Weather in Oslo?")


# -- building events -------------------------------------------------------------------


def accepted(config: events.AgentConfig = CONFIG) -> events.TurnAccepted:
    return events.TurnAccepted(
        **IDS,
        agent_id="a-1",
        agent_version=2,
        config=config,
        tools=[WEATHER, CLOCK],
        history=list(HISTORY),
        message="Weather in Oslo?",
        requested_at=REQUESTED_AT,
    )


def must(state: TurnState | None) -> TurnState:
    assert state is not None
    return state


def advance(state: TurnState | None, event: Fact, event_id: str) -> tuple[TurnState, Facts]:
    """``decide`` for a turn that exists."""
    after, facts = decide(state, event, event_id)
    return must(after), facts


def started(config: events.AgentConfig = CONFIG) -> TurnState:
    return advance(None, accepted(config), ACCEPTED_ID)[0]


def call(call_id: str, name: str, **arguments: Any) -> events.ToolCallValue:
    return events.ToolCallValue(id=call_id, name=name, arguments=arguments)


def answer(
    state: TurnState,
    *calls: events.ToolCallValue,
    text: str = "",
    usage: events.UsageValue | None = None,
) -> events.ModelCallCompleted:
    return events.ModelCallCompleted(
        **IDS,
        call_id=state.call_id,
        step=state.step,
        text=text,
        tool_calls=list(calls),
        usage=usage or events.UsageValue(),
    )


def model_failed(state: TurnState, usage: events.UsageValue) -> events.ModelCallFailed:
    return events.ModelCallFailed(
        **IDS,
        call_id=state.call_id,
        step=state.step,
        code="MODEL_UNAVAILABLE",
        detail="upstream returned 503",
        usage=usage,
    )


def tool_done(tool_call_id: str, result: str, step: int = 1) -> events.ToolCallCompleted:
    return events.ToolCallCompleted(
        **IDS, tool_call_id=tool_call_id, step=step, tool="weather", status_code=200, result=result
    )


def tool_failed(tool_call_id: str, step: int = 1) -> events.ToolCallFailed:
    return events.ToolCallFailed(
        **IDS,
        tool_call_id=tool_call_id,
        step=step,
        tool="weather",
        code="TOOL_TIMEOUT",
        detail="no answer in 5s",
    )


def appended(cause_id: str, message: events.MessageValue) -> tuple[str, Fact]:
    return (
        "message",
        events.MessageAppended(**IDS, message_id=derived_id(cause_id, "message"), message=message),
    )


def model_request(
    cause_id: str, step: int, messages: Sequence[events.MessageValue]
) -> tuple[str, Fact]:
    return (
        "model",
        events.ModelCallRequested(
            **IDS,
            call_id=derived_id(cause_id, f"model-call-{step}"),
            step=step,
            model="m-1",
            agent_id="a-1",  # the accepted turn's agent and version: usage names them
            agent_version=2,
            messages=list(messages),
            tools=[WEATHER, CLOCK],
        ),
    )


def assistant(*calls: events.ToolCallValue, text: str | None = None) -> events.MessageValue:
    return events.MessageValue(role="assistant", content=text, tool_calls=list(calls))


def tool_message(tool_call_id: str, content: str) -> events.MessageValue:
    return events.MessageValue(role="tool", content=content, tool_call_id=tool_call_id)


def refusal(cause_id: str, tool_call_id: str, content: str) -> tuple[str, Fact]:
    """A refused (or abandoned) call's answer, recorded in the conversation."""
    step = f"message-{tool_call_id}"
    return (
        step,
        events.MessageAppended(
            **IDS,
            message_id=derived_id(cause_id, step),
            message=tool_message(tool_call_id, content),
        ),
    )


def usage(input_tokens: int, output_tokens: int) -> events.UsageValue:
    return events.UsageValue(input_tokens=input_tokens, output_tokens=output_tokens)


PROMPT = (SYSTEM, *HISTORY, USER)


# -- starting a turn -------------------------------------------------------------------


def test_an_accepted_turn_starts_records_the_user_message_and_asks_the_model() -> None:
    state, facts = advance(None, accepted(), ACCEPTED_ID)

    assert facts == [
        ("started", events.TurnStarted(**IDS)),
        appended(ACCEPTED_ID, USER),
        model_request(ACCEPTED_ID, 1, PROMPT),
    ]
    assert (state.step, state.call_id, state.done) == (
        1,
        derived_id(ACCEPTED_ID, "model-call-1"),
        False,
    )
    assert state.tools == {"weather": WEATHER, "clock": CLOCK}


def test_without_a_system_prompt_the_model_sees_only_history_and_message() -> None:
    _, facts = decide(None, accepted(CONFIG.model_copy(update={"system_prompt": ""})), "e")

    assert facts[2] == model_request("e", 1, (*HISTORY, USER))


def test_a_duplicate_acceptance_of_a_running_turn_changes_nothing() -> None:
    state = started()

    again, facts = advance(state, accepted(), "evt-accepted-again")

    assert facts == []
    assert again is state


def test_events_of_a_turn_never_accepted_decide_nothing() -> None:
    state = started()
    stray: list[Fact] = [
        answer(state, text="hi"),
        model_failed(state, usage(1, 1)),
        tool_done("c1", "sunny"),
        events.TurnCancelled(**IDS),
    ]
    for event in stray:
        assert decide(None, event, "e") == (None, [])


# -- answers without tool calls --------------------------------------------------------


def test_a_plain_answer_is_recorded_and_completes_the_turn() -> None:
    state = started()

    after, facts = advance(state, answer(state, text="Sunny.", usage=usage(10, 5)), "evt-answer")

    message_id = derived_id("evt-answer", "message")
    assert facts == [
        appended("evt-answer", assistant(text="Sunny.")),
        (
            "completed",
            events.TurnCompleted(**END, message_id=message_id, usage=usage(10, 5), steps=1),
        ),
    ]
    assert after.done


def test_an_empty_answer_is_recorded_without_content() -> None:
    state = started()

    _, facts = decide(state, answer(state, text=""), "evt-answer")

    assert facts[0] == appended("evt-answer", assistant(text=None))


def test_completion_sums_usage_and_counts_steps_across_model_calls() -> None:
    state = started()
    state, _ = advance(
        state, answer(state, call("c1", "weather", city="Oslo"), usage=usage(100, 20)), "a1"
    )
    state, _ = advance(state, tool_done("c1", "sunny"), "r1")

    _, facts = decide(state, answer(state, text="Sunny.", usage=usage(150, 30)), "a2")

    assert facts[-1] == (
        "completed",
        events.TurnCompleted(
            **END, message_id=derived_id("a2", "message"), usage=usage(250, 50), steps=2
        ),
    )


# -- tool calls ------------------------------------------------------------------------


def test_allowed_tool_calls_are_requested_and_the_turn_waits_for_them() -> None:
    state = started()
    oslo, now = call("c1", "weather", city="Oslo"), call("c2", "clock")

    after, facts = advance(state, answer(state, oslo, now, text="Looking."), "a1")

    assert facts == [
        appended("a1", assistant(oslo, now, text="Looking.")),
        (
            "tool-c1",
            events.ToolCallRequested(
                **IDS,
                tool_call_id="c1",
                step=1,
                tool="weather",
                tool_id="tool-weather",
                agent_id="a-1",
                agent_version=2,
                url="http://tools.test/weather",
                arguments={"city": "Oslo"},
                timeout_s=5.0,
            ),
        ),
        (
            "tool-c2",
            events.ToolCallRequested(
                **IDS,
                tool_call_id="c2",
                step=1,
                tool="clock",
                tool_id="tool-clock",
                agent_id="a-1",
                agent_version=2,
                url="http://tools.test/clock",
                arguments={},
                timeout_s=10.0,
            ),
        ),
    ]
    assert (after.pending, after.tool_calls_made, after.step) == (frozenset({"c1", "c2"}), 2, 1)


def test_the_next_model_call_waits_for_every_tool_result() -> None:
    state = started()
    oslo, now = call("c1", "weather", city="Oslo"), call("c2", "clock")
    state, _ = advance(state, answer(state, oslo, now), "a1")

    state, first = advance(state, tool_done("c2", "12:00"), "r2")
    assert first == [appended("r2", tool_message("c2", "12:00"))]
    assert state.pending == frozenset({"c1"})

    state, last = advance(state, tool_failed("c1"), "r1")
    failure = tool_message("c1", "error TOOL_TIMEOUT: no answer in 5s")
    assert last == [
        appended("r1", failure),
        model_request(
            "r1", 2, (*PROMPT, assistant(oslo, now), tool_message("c2", "12:00"), failure)
        ),
    ]
    assert (state.step, state.pending) == (2, frozenset())


def test_a_tool_the_agent_may_not_use_is_rejected_and_reported_to_the_model() -> None:
    state = started()
    shell = call("c1", "shell", cmd="rm -rf /")

    after, facts = advance(state, answer(state, shell), "a1")

    detail = "tool 'shell' is not allowed for this agent"
    assert facts == [
        appended("a1", assistant(shell)),
        (
            "tool-c1",
            events.ToolCallRejected(
                **IDS,
                tool_call_id="c1",
                step=1,
                tool="shell",
                code=ErrorCode.TOOL_NOT_ALLOWED,
                detail=detail,
                arguments={"cmd": "rm -rf /"},
            ),
        ),
        refusal("a1", "c1", f"error TOOL_NOT_ALLOWED: {detail}"),
        model_request(
            "a1",
            2,
            (*PROMPT, assistant(shell), tool_message("c1", f"error TOOL_NOT_ALLOWED: {detail}")),
        ),
    ]
    assert after.tool_calls_made == 0


def test_arguments_that_break_the_tools_schema_are_rejected() -> None:
    state = started()
    wrong_type, missing = call("c1", "weather", city=42), call("c2", "weather")

    _, facts = decide(state, answer(state, wrong_type, missing), "a1")

    rejections = [
        (step, f.code, f.detail) for step, f in facts if isinstance(f, events.ToolCallRejected)
    ]
    assert rejections == [
        ("tool-c1", "TOOL_SCHEMA_INVALID", "42 is not of type 'string'"),
        ("tool-c2", "TOOL_SCHEMA_INVALID", "'city' is a required property"),
    ]
    assert facts[-1] == model_request(
        "a1",
        2,
        (
            *PROMPT,
            assistant(wrong_type, missing),
            tool_message("c1", "error TOOL_SCHEMA_INVALID: 42 is not of type 'string'"),
            tool_message("c2", "error TOOL_SCHEMA_INVALID: 'city' is a required property"),
        ),
    )


def test_tool_calls_beyond_the_turns_limit_are_rejected() -> None:
    state = started(CONFIG.model_copy(update={"max_tool_calls": 2}))
    calls = [call("c1", "clock"), call("c2", "clock"), call("c3", "clock")]

    after, facts = advance(state, answer(state, *calls), "a1")

    assert [(step, type(f).__name__) for step, f in facts] == [
        ("message", "MessageAppended"),
        ("tool-c1", "ToolCallRequested"),
        ("tool-c2", "ToolCallRequested"),
        ("tool-c3", "ToolCallRejected"),
        ("message-c3", "MessageAppended"),
    ]
    rejected = facts[3][1]
    assert isinstance(rejected, events.ToolCallRejected)
    assert (rejected.code, rejected.detail) == (
        "TOOL_CALL_LIMIT",
        "more than 2 tool calls in one turn",
    )
    assert (after.pending, after.tool_calls_made) == (frozenset({"c1", "c2"}), 2)
    assert after.messages[-1] == tool_message(
        "c3", "error TOOL_CALL_LIMIT: more than 2 tool calls in one turn"
    )


def test_the_tool_call_limit_counts_across_the_steps_of_a_turn() -> None:
    state = started(CONFIG.model_copy(update={"max_tool_calls": 1}))
    state, _ = advance(state, answer(state, call("c1", "clock")), "a1")
    state, _ = advance(state, tool_done("c1", "12:00"), "r1")

    _, facts = decide(state, answer(state, call("c2", "clock")), "a2")

    codes = [f.code for _, f in facts if isinstance(f, events.ToolCallRejected)]
    assert codes == ["TOOL_CALL_LIMIT"]


def test_rejected_calls_do_not_count_toward_the_limit() -> None:
    state = started(CONFIG.model_copy(update={"max_tool_calls": 1}))
    calls = [call("c1", "shell"), call("c2", "weather", city=1), call("c3", "clock")]

    after, facts = advance(state, answer(state, *calls), "a1")

    assert [type(f).__name__ for step, f in facts if step.startswith("tool-")] == [
        "ToolCallRejected",
        "ToolCallRejected",
        "ToolCallRequested",
    ]
    assert after.pending == frozenset({"c3"})


def test_with_some_calls_rejected_the_turn_still_waits_for_the_requested_ones() -> None:
    state = started()
    shell, oslo = call("c1", "shell"), call("c2", "weather", city="Oslo")
    state, facts = advance(state, answer(state, shell, oslo), "a1")
    assert [step for step, _ in facts] == ["message", "tool-c1", "tool-c2", "message-c1"]

    _, facts = decide(state, tool_done("c2", "sunny"), "r2")

    refusal = tool_message(
        "c1", "error TOOL_NOT_ALLOWED: tool 'shell' is not allowed for this agent"
    )
    assert facts == [
        appended("r2", tool_message("c2", "sunny")),
        model_request(
            "r2", 2, (*PROMPT, assistant(shell, oslo), refusal, tool_message("c2", "sunny"))
        ),
    ]


# -- failure, limits and cancellation ---------------------------------------------------


def test_a_failed_model_call_fails_the_turn_with_its_code_and_all_usage() -> None:
    state = started()
    state, _ = advance(state, answer(state, call("c1", "clock"), usage=usage(100, 20)), "a1")
    state, _ = advance(state, tool_done("c1", "12:00"), "r1")

    after, facts = advance(state, model_failed(state, usage(7, 0)), "f2")

    assert facts == [
        (
            "failed",
            events.TurnFailed(
                **END,
                code="MODEL_UNAVAILABLE",
                detail="upstream returned 503",
                usage=usage(107, 20),
            ),
        )
    ]
    assert (after.done, after.usage) == (True, usage(107, 20))


def test_a_turn_that_needs_more_model_calls_than_allowed_fails() -> None:
    state = started(CONFIG.model_copy(update={"max_steps": 1}))
    state, _ = advance(state, answer(state, call("c1", "clock"), usage=usage(9, 3)), "a1")

    after, facts = advance(state, tool_done("c1", "12:00"), "r1")

    assert facts == [
        appended("r1", tool_message("c1", "12:00")),
        (
            "failed",
            events.TurnFailed(
                **END,
                code="MAX_STEPS_EXCEEDED",
                detail="the turn took more than 1 model calls",
                usage=usage(9, 3),
            ),
        ),
    ]
    assert after.done


def test_only_rejected_calls_at_the_last_step_also_exceed_the_steps() -> None:
    state = started(CONFIG.model_copy(update={"max_steps": 1}))

    _, facts = decide(state, answer(state, call("c1", "shell")), "a1")

    assert [step for step, _ in facts] == ["message", "tool-c1", "message-c1", "failed"]
    failed = facts[-1][1]
    assert isinstance(failed, events.TurnFailed)
    assert failed.code == "MAX_STEPS_EXCEEDED"


def test_a_cancelled_turn_ignores_the_answer_it_was_waiting_for() -> None:
    state = started()

    cancelled, facts = advance(state, events.TurnCancelled(**IDS), "c")
    assert facts == []
    assert cancelled.done

    assert decide(cancelled, answer(state, text="late"), "a1") == (cancelled, [])
    assert decide(cancelled, model_failed(state, usage(1, 0)), "f1") == (cancelled, [])


def test_a_turn_cancelled_during_tool_calls_answers_them_and_ignores_their_results() -> None:
    state = started()
    state, _ = advance(state, answer(state, call("c2", "clock"), call("c1", "clock")), "a1")
    cancelled, facts = advance(state, events.TurnCancelled(**IDS), "c")

    # Every call still running gets an answer in the history, in a stable order.
    abandoned = "error: the turn was cancelled before this tool call finished"
    assert facts == [refusal("c", "c1", abandoned), refusal("c", "c2", abandoned)]
    assert decide(cancelled, tool_done("c1", "12:00"), "r1") == (cancelled, [])


def unprocessable(record_id: str = "r-1") -> events.TurnStepUnprocessable:
    return events.TurnStepUnprocessable(
        **IDS,
        record_id=record_id,
        record_type=events.ToolCallRequested.ce_type(),
        consumer="tool",
        reason="HANDLER_FAILED: UnicodeEncodeError",
    )


def test_a_step_no_worker_could_process_fails_the_turn_and_answers_its_calls() -> None:
    state = started()
    state, _ = advance(state, answer(state, call("c1", "clock")), "a1")

    failed, facts = advance(state, unprocessable(), "u")

    assert failed.done
    abandoned = "error: the turn failed before this tool call finished"
    (ended,) = [f for _, f in facts if isinstance(f, events.TurnFailed)]
    assert facts[0] == refusal("u", "c1", abandoned)
    assert ended.code == "STEP_UNPROCESSABLE"
    assert ended.detail == (
        f"tool could not process {events.ToolCallRequested.ce_type()}:"
        " HANDLER_FAILED: UnicodeEncodeError"
    )
    assert decide(failed, tool_done("c1", "12:00"), "r1") == (failed, [])
    assert decide(None, unprocessable(), "u") == (None, [])


def test_every_event_that_moves_a_turn_on_is_its_progress() -> None:
    state = started()
    assert state.progress == ACCEPTED_ID
    moved, _ = advance(state, answer(state, call("c1", "clock")), "a1")
    assert moved.progress == "a1"
    # An event that changes nothing is no progress.
    assert decide(moved, tool_done("c-unknown", "x"), "e")[0] is moved


def test_a_deadline_fails_the_turn_only_if_it_has_not_moved_on_since() -> None:
    state = started()
    passed = events.TurnDeadlinePassed(**IDS, progress=ACCEPTED_ID, deadline_s=600)

    failed, facts = advance(state, passed, "d")
    assert failed.done
    assert [f.code for _, f in facts if isinstance(f, events.TurnFailed)] == ["TURN_TIMED_OUT"]

    moved, _ = advance(state, answer(state, call("c1", "clock")), "a1")
    assert decide(moved, passed, "d") == (moved, [])


def test_a_tool_whose_own_schema_is_invalid_is_refused_not_crashed_on() -> None:
    broken = WEATHER.model_copy(update={"parameters": {"type": "objekt"}})
    state = replace(started(), tools={**started().tools, "weather": broken})

    _, facts = decide(state, answer(state, call("c1", "weather", city="Oslo")), "a1")

    (rejected,) = [f for _, f in facts if isinstance(f, events.ToolCallRejected)]
    assert rejected.code == "TOOL_SCHEMA_INVALID"
    assert rejected.detail.startswith("the tool's parameter schema is invalid: ")


def test_results_for_unknown_or_stale_calls_decide_nothing() -> None:
    state = started()
    stale = answer(state, text="old").model_copy(update={"call_id": "an-earlier-call"})
    stale_failure = model_failed(state, usage(1, 1)).model_copy(update={"call_id": "other"})

    for event in (stale, stale_failure, tool_done("c-unknown", "x"), tool_failed("c-unknown")):
        assert decide(state, event, "e") == (state, [])


def test_a_result_for_a_rejected_call_decides_nothing() -> None:
    state = started()
    state, _ = advance(state, answer(state, call("c1", "shell"), call("c2", "clock")), "a1")

    assert decide(state, tool_done("c1", "surprise"), "r1") == (state, [])


def test_a_finished_turn_ignores_everything_after() -> None:
    state = started()
    done, _ = advance(state, answer(state, text="Bye."), "a1")

    for event in (answer(state, text="again"), tool_done("c1", "x"), events.TurnCancelled(**IDS)):
        assert decide(done, event, "e") == (done, [])


# -- properties over generated turns ----------------------------------------------------

ARGUMENTS: list[dict[str, Any]] = [{"city": "Oslo"}, {"city": 42}, {}]


@dataclass(frozen=True)
class Script:
    """Events of one turn, each with its id, as the log might hold them."""

    config: events.AgentConfig
    steps: tuple[tuple[Fact, str], ...]


def run(script: Script) -> list[Decision]:
    decisions: list[Decision] = []
    state: TurnState | None = None
    for event, event_id in script.steps:
        decision = decide(state, event, event_id)
        decisions.append(decision)
        state = decision[0]
    return decisions


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    """A turn driven by a model that answers, calls tools (allowed, forbidden, with bad
    arguments), fails, or is interrupted, plus strays: stale ids and duplicates."""
    config = events.AgentConfig(
        name="gen",
        model="m-1",
        system_prompt=draw(st.sampled_from(["", "Be brief."])),
        tools=["weather", "clock"],
        max_steps=draw(st.integers(1, 4)),
        max_tool_calls=draw(st.integers(0, 3)),
    )
    prefix = draw(st.text(min_size=1, max_size=8))
    first = accepted(config)
    steps: list[tuple[Fact, str]] = [(first, f"{prefix}/0")]
    state, _ = advance(None, first, f"{prefix}/0")
    for i in range(1, draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["answer", "answer", "tool", "tool", "fail", "stray"]))
        event: Fact
        if kind == "answer":
            calls = [
                call(f"c{i}-{j}", draw(st.sampled_from(["weather", "clock", "shell"]))).model_copy(
                    update={"arguments": draw(st.sampled_from(ARGUMENTS))}
                )
                for j in range(draw(st.integers(0, 3)))
            ]
            event = answer(
                state,
                *calls,
                text=draw(st.sampled_from(["", "ok"])),
                usage=usage(draw(st.integers(0, 50)), draw(st.integers(0, 50))),
            )
        elif kind == "tool" and state.pending:
            tool_call_id = draw(st.sampled_from(sorted(state.pending)))
            event = draw(st.sampled_from([tool_done(tool_call_id, "r"), tool_failed(tool_call_id)]))
        elif kind == "fail":
            event = model_failed(state, usage(draw(st.integers(0, 9)), 0))
        else:
            event = draw(
                st.sampled_from(
                    [
                        accepted(config),
                        events.TurnCancelled(**IDS),
                        tool_done("c-unknown", "r"),
                        answer(state, text="x").model_copy(update={"call_id": "stale"}),
                    ]
                )
            )
        steps.append((event, f"{prefix}/{i}"))
        state, _ = advance(state, event, f"{prefix}/{i}")
    return Script(config, tuple(steps))


@settings(max_examples=150)
@given(scripts())
def test_decisions_are_deterministic(script: Script) -> None:
    assert run(script) == run(script)


@settings(max_examples=150)
@given(scripts())
def test_ids_in_outputs_derive_only_from_the_cause_and_the_step(script: Script) -> None:
    event_ids: list[str] = []
    for (_event, cause), (_state, facts) in zip(script.steps, run(script), strict=True):
        names = [step for step, _ in facts]
        assert len(names) == len(set(names))  # distinct envelope ids within a decision
        event_ids.extend(derived_id(cause, step) for step in names)
        for step, fact in facts:
            if isinstance(fact, events.MessageAppended):
                assert fact.message_id == derived_id(cause, step)
                answered = fact.message.tool_call_id
                assert step == (
                    "message" if answered is None or step == "message" else f"message-{answered}"
                )
            if isinstance(fact, events.ModelCallRequested):
                assert (step, fact.call_id) == (
                    "model",
                    derived_id(cause, f"model-call-{fact.step}"),
                )
            if isinstance(fact, events.ToolCallRequested | events.ToolCallRejected):
                assert step == f"tool-{fact.tool_call_id}"
    assert len(event_ids) == len(set(event_ids))  # no output is mistaken for a duplicate


@settings(max_examples=150)
@given(scripts())
def test_a_turn_ends_once_and_keeps_within_its_limits(script: Script) -> None:
    facts = [fact for _state, decided in run(script) for _step, fact in decided]
    ends = [
        i for i, f in enumerate(facts) if isinstance(f, events.TurnCompleted | events.TurnFailed)
    ]
    assert len(ends) <= 1
    if ends:
        assert ends[0] == len(facts) - 1
    model_steps = [f.step for f in facts if isinstance(f, events.ModelCallRequested)]
    assert model_steps == list(range(1, len(model_steps) + 1))
    assert len(model_steps) <= script.config.max_steps
    requested = [f for f in facts if isinstance(f, events.ToolCallRequested)]
    assert len(requested) <= script.config.max_tool_calls
    assert isinstance(facts[0], events.TurnStarted)
    assert sum(isinstance(f, events.TurnStarted) for f in facts) == 1
