"""The orchestrator: a process manager that decides each turn's next step.

``decide(state, event)`` is pure: given a turn's state and the next event of its session,
it returns the new state and the facts to record. It never calls a model, a tool or the
database. Effects are requested as facts (``ModelCallRequested``, ``ToolCallRequested``)
and their results come back as facts, so after a crash the orchestrator rebuilds its
state from the log and never redoes a step whose result is already there.

State is rebuilt on partition assignment behind an offset fence: once the projection
has applied the partition up to the committed offset, the oldest still-running turn
tells where to replay from (with outputs suppressed: they are already in the log).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jsonschema
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.queries import ReadModel
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, derived_id
from streams.catalog import EVENTS, group_id
from streams.consumer import Item, Position, SeenIds, read_range

log = logging.getLogger(__name__)
SOURCE = "/workers/orchestrator"


@dataclass(frozen=True)
class TurnState:
    turn_id: str
    session_id: str
    config: events.AgentConfig
    tools: dict[str, events.ToolDefinition]
    messages: tuple[events.MessageValue, ...]
    step: int = 0
    call_id: str = ""
    pending: frozenset[str] = frozenset()
    tool_calls_made: int = 0
    usage: events.UsageValue = field(default_factory=events.UsageValue)
    done: bool = False
    progress: str = ""  # the id of the last event that moved the turn on


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
        return _failed(state, event_id, "STEP_UNPROCESSABLE", detail)
    if isinstance(data, events.TurnDeadlinePassed):
        if data.progress != state.progress:
            return state, []  # the turn moved on after the deadline was set
        detail = f"no progress for {data.deadline_s:g} s"
        return _failed(state, event_id, "TURN_TIMED_OUT", detail)
    if isinstance(data, events.ModelCallCompleted) and data.call_id == state.call_id:
        return _model_answered(state, data, event_id)
    if isinstance(data, events.ModelCallFailed) and data.call_id == state.call_id:
        usage = _add(state.usage, data.usage)
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


def _failed(state: TurnState, event_id: str, code: str, detail: str) -> Step:
    failed = events.TurnFailed(
        session_id=state.session_id,
        turn_id=state.turn_id,
        code=code,
        detail=detail,
        usage=state.usage,
    )
    return _ended(state, event_id, "the turn failed", [("failed", failed)])


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
        tools={t.name: t for t in data.tools},
        messages=(*system, *data.history, user),
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
        return _failed(state, cause_id, "MAX_STEPS_EXCEEDED", detail)
    step = state.step + 1
    call_id = derived_id(cause_id, f"model-call-{step}")
    request = events.ModelCallRequested(
        session_id=state.session_id,
        turn_id=state.turn_id,
        call_id=call_id,
        step=step,
        model=state.config.model,
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
    state = replace(state, messages=(*state.messages, answer), usage=_add(state.usage, data.usage))
    facts: list[tuple[str, Fact]] = [
        ("message", events.MessageAppended(**ids, message_id=message_id, message=answer))
    ]
    if not data.tool_calls:
        done = events.TurnCompleted(
            **ids, message_id=message_id, usage=state.usage, steps=state.step
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


RejectCode = Literal["TOOL_NOT_ALLOWED", "TOOL_SCHEMA_INVALID", "TOOL_CALL_LIMIT"]


def _reject_reason(
    call: events.ToolCallValue, tool: events.ToolDefinition | None, made: int, limit: int
) -> tuple[RejectCode, str] | None:
    if tool is None:
        return "TOOL_NOT_ALLOWED", f"tool {call.name!r} is not allowed for this agent"
    if made >= limit:
        return "TOOL_CALL_LIMIT", f"more than {limit} tool calls in one turn"
    try:
        jsonschema.validate(call.arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        return "TOOL_SCHEMA_INVALID", exc.message
    except jsonschema.SchemaError as exc:
        return "TOOL_SCHEMA_INVALID", f"the tool's parameter schema is invalid: {exc.message}"
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


def _add(a: events.UsageValue, b: events.UsageValue) -> events.UsageValue:
    return events.UsageValue(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
    )


class Orchestrator:
    name = "orchestrator"
    topics: Sequence[str] = (EVENTS.name,)
    # The facts ``decide`` acts on.
    types = frozenset(
        t.ce_type()
        for t in (
            events.TurnAccepted,
            events.TurnCancelled,
            events.ModelCallCompleted,
            events.ModelCallFailed,
            events.ToolCallCompleted,
            events.ToolCallFailed,
            events.TurnStepUnprocessable,
            events.TurnDeadlinePassed,
        )
    )

    def __init__(
        self, bootstrap_servers: str, read_model: ReadModel, *, deadline_s: float = 600.0
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.read = read_model
        self.deadline_s = deadline_s
        self.turns: dict[str, TurnState] = {}
        # Per open turn, the event that last moved it on: the deadline runs from its time.
        self._progress: dict[str, Envelope[Any]] = {}
        self._deadline_sent: dict[str, str] = {}  # turn id -> the progress it was sent for
        # Per partition: the log end at assignment and the event ids found up to it.
        self._published: dict[int, tuple[int, set[str]]] = {}
        self._seen = SeenIds()
        self._committed = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id("orchestrator"),
            enable_auto_commit=False,
        )
        self._started = False

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self._started:
            await self._committed.start()
            self._started = True
        # Every rebalance hands out the whole assignment again: what was kept of turns
        # is dropped (another member may have moved them on meanwhile) and rebuilt.
        self.turns, self._seen, self._published = {}, SeenIds(), {}
        self._progress, self._deadline_sent = {}, {}
        for tp in partitions:
            committed = await self._committed.committed(tp) or 0
            if committed > 0:
                await self.read.wait_for_positions(
                    [(tp.topic, tp.partition, committed - 1)], timeout=60
                )
            start = await self.read.open_turns_from(tp.partition, committed)
            if start is not None:
                turns, seen = dict(self.turns), set[str]()
                for env in await read_range(
                    self.bootstrap_servers, tp, start, committed, self.types
                ):
                    self._apply(env, turns, seen)  # outputs are in the log: state only
                self._commit(turns, seen)
                log.info(
                    "orchestrator state rebuilt",
                    extra={"partition": tp.partition, "from": start, "to": committed},
                )
            await self._learn_published(tp, committed)
        return {}

    async def _learn_published(self, tp: TopicPartition, committed: int) -> None:
        """Remember which events past the committed offset are in the log already: a
        predecessor that crashed before committing published its decisions on them, and
        they are not published again. Decisions go to the partition they were made on
        (same session key), so reading this partition to its end finds them all."""
        (end,) = (await self._committed.end_offsets([tp])).values()
        ids = {env.id for env in await read_range(self.bootstrap_servers, tp, committed, end)}
        if ids:
            self._published[tp.partition] = (end, ids)

    def _already_published(self, env: Envelope[Any], position: Position) -> bool:
        window = self._published.get(position.partition)
        if window is None:
            return False
        end, ids = window
        if position.offset >= end:
            del self._published[position.partition]  # past everything the predecessor wrote
            return False
        return env.id in ids

    def _apply(
        self, env: Envelope[Any], turns: dict[str, TurnState], seen: set[str]
    ) -> list[tuple[str, Fact]]:
        """Decide on one event against ``turns`` (changed in place); ``seen`` collects
        the ids of the events decided on."""
        if env.id in self._seen or env.id in seen:
            return []
        seen.add(env.id)
        turn_id = getattr(env.data, "turn_id", None)
        if turn_id is None:
            return []
        state, facts = decide(turns.get(turn_id), env.data, env.id)
        if state is None or state.done:
            turns.pop(turn_id, None)
        else:
            turns[turn_id] = state
            if state.progress == env.id:
                self._progress[turn_id] = env
        return facts

    async def tick(self) -> list[Envelope[Any]]:
        """Record ``TurnDeadlinePassed`` for each turn that has not moved on for the
        deadline. The wall clock is read here, never in ``decide``: the turn fails when
        the orchestrator reads that fact back and finds the turn where it was."""
        now = datetime.datetime.now(datetime.UTC)
        due: list[Envelope[Any]] = []
        for turn_id, env in list(self._progress.items()):
            state = self.turns.get(turn_id)
            if state is None:  # finished
                del self._progress[turn_id]
                self._deadline_sent.pop(turn_id, None)
                continue
            if state.progress != env.id or self._deadline_sent.get(turn_id) == env.id:
                continue
            if (now - env.time).total_seconds() >= self.deadline_s:
                passed = events.TurnDeadlinePassed(
                    session_id=state.session_id,
                    turn_id=turn_id,
                    progress=env.id,
                    deadline_s=self.deadline_s,
                )
                due.append(env.follow(passed, step="deadline", source=SOURCE))
                self._deadline_sent[turn_id] = env.id
        return due

    def _commit(self, turns: dict[str, TurnState], seen: set[str]) -> None:
        self.turns = turns
        for event_id in seen:
            self._seen.add(event_id)

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        # Decided on a copy: a batch that fails half-way leaves the state as it was, so
        # handling it again decides the same again.
        turns, seen = dict(self.turns), set[str]()
        outputs: list[Envelope[Any]] = []
        for env, position in items:
            for step, fact in self._apply(env, turns, seen):
                output = env.follow(fact, step=step, source=SOURCE)
                if not self._already_published(output, position):
                    outputs.append(output)
        self._commit(turns, seen)
        return outputs

    async def close(self) -> None:
        if self._started:
            await self._committed.stop()
        await self.read.close()
