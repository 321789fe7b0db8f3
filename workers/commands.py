"""The command handler: validates requested commands against projected state and records
the outcome (``AgentCreated``, ``TurnAccepted``, ``TurnRejected`` …).

It is the single writer of outcomes per key: commands are keyed like their aggregate,
and one group member owns a partition. Before reading state it waits for the projection
to have applied the log up to what it is about to decide on (the offset fence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.queries import ReadModel
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from streams.catalog import COMMANDS, EVENTS
from streams.consumer import Item

log = logging.getLogger(__name__)
SOURCE = "/workers/commands"
_UPDATABLE = set(events.AgentConfig.model_fields)


def create_agent(
    cmd: events.AgentCreateRequested, existing: dict[str, Any] | None, known_tools: set[str]
) -> Fact:
    if existing is not None:
        return _agent_rejected(cmd, "AGENT_EXISTS", f"agent {cmd.agent_id} already exists")
    unknown = sorted(set(cmd.config.tools) - known_tools)
    if unknown:
        return _agent_rejected(cmd, "TOOL_UNKNOWN", f"unknown tools: {', '.join(unknown)}")
    return events.AgentCreated(agent_id=cmd.agent_id, version=1, config=cmd.config)


def update_agent(
    cmd: events.AgentUpdateRequested, existing: dict[str, Any] | None, known_tools: set[str]
) -> Fact:
    if existing is None:
        return _agent_rejected(cmd, "AGENT_NOT_FOUND", f"no agent {cmd.agent_id}")
    if existing["status"] == "disabled":
        return _agent_rejected(cmd, "AGENT_DISABLED", f"agent {cmd.agent_id} is disabled")
    bad = sorted(set(cmd.changes) - _UPDATABLE)
    if bad:
        return _agent_rejected(cmd, "VALIDATION_FAILED", f"not updatable: {', '.join(bad)}")
    try:
        config = events.AgentConfig.model_validate({**existing["config"], **cmd.changes})
    except ValueError as exc:
        return _agent_rejected(cmd, "VALIDATION_FAILED", str(exc))
    unknown = sorted(set(config.tools) - known_tools)
    if unknown:
        return _agent_rejected(cmd, "TOOL_UNKNOWN", f"unknown tools: {', '.join(unknown)}")
    return events.AgentUpdated(
        agent_id=cmd.agent_id,
        version=existing["version"] + 1,
        config=config,
        changed=sorted(cmd.changes),
    )


def disable_agent(cmd: events.AgentDisableRequested, existing: dict[str, Any] | None) -> Fact:
    if existing is None:
        return _agent_rejected(cmd, "AGENT_NOT_FOUND", f"no agent {cmd.agent_id}")
    if existing["status"] == "disabled":
        return _agent_rejected(cmd, "AGENT_DISABLED", f"agent {cmd.agent_id} is disabled")
    return events.AgentDisabled(agent_id=cmd.agent_id, version=existing["version"] + 1)


def _agent_rejected(cmd: Any, code: str, detail: str) -> Fact:
    return events.AgentCommandRejected(
        agent_id=cmd.agent_id, command_id="", code=code, detail=detail
    )


def create_session(
    cmd: events.SessionCreateRequested,
    existing: dict[str, Any] | None,
    agent: dict[str, Any] | None,
) -> Fact:
    def rejected(code: str, detail: str) -> Fact:
        return events.SessionCommandRejected(
            session_id=cmd.session_id, command_id="", code=code, detail=detail
        )

    if existing is not None:
        return rejected("SESSION_EXISTS", f"session {cmd.session_id} already exists")
    if agent is None:
        return rejected("AGENT_NOT_FOUND", f"no agent {cmd.agent_id}")
    if agent["status"] == "disabled":
        return rejected("AGENT_DISABLED", f"agent {cmd.agent_id} is disabled")
    return events.SessionCreated(
        session_id=cmd.session_id, agent_id=cmd.agent_id, metadata=cmd.metadata
    )


@dataclass(frozen=True)
class TurnLimits:
    """The platform's limits on a turn. An agent's own ``max_steps`` and
    ``max_tool_calls`` apply within them: a turn records the smaller of the two."""

    max_message_bytes: int
    max_steps: int
    max_tool_calls: int
    history_messages: int = 100


def history_window(history: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The most recent ``limit`` messages at most, starting at a user message, so that
    no tool answer is cut from the call it answers."""
    recent = history[-limit:] if limit > 0 else []
    start = next((i for i, m in enumerate(recent) if m["role"] == "user"), len(recent))
    return recent[start:]


def request_turn(
    cmd: events.TurnRequested,
    session: dict[str, Any] | None,
    agent: dict[str, Any] | None,
    active_turn: dict[str, Any] | None,
    tools: list[dict[str, Any]],
    history: list[dict[str, Any]],
    limits: TurnLimits,
) -> Fact:
    def rejected(code: str, detail: str) -> Fact:
        return events.TurnRejected(
            session_id=cmd.session_id, turn_id=cmd.turn_id, code=code, detail=detail
        )

    if session is None:
        return rejected("SESSION_NOT_FOUND", f"no session {cmd.session_id}")
    if agent is None:
        return rejected("AGENT_NOT_FOUND", f"no agent {session['agent_id']}")
    if agent["status"] == "disabled":
        return rejected("AGENT_DISABLED", f"agent {agent['agent_id']} is disabled")
    if len(cmd.message.encode()) > limits.max_message_bytes:
        return rejected("MESSAGE_TOO_LARGE", f"message exceeds {limits.max_message_bytes} bytes")
    if active_turn is not None and active_turn["turn_id"] != cmd.turn_id:
        return rejected("TURN_IN_PROGRESS", f"turn {active_turn['turn_id']} is still running")
    config = events.AgentConfig.model_validate(agent["config"])
    config = config.model_copy(
        update={
            "max_steps": min(config.max_steps, limits.max_steps),
            "max_tool_calls": min(config.max_tool_calls, limits.max_tool_calls),
        }
    )
    allowed = set(config.tools)
    return events.TurnAccepted(
        session_id=cmd.session_id,
        turn_id=cmd.turn_id,
        agent_id=agent["agent_id"],
        agent_version=agent["version"],
        config=config,
        tools=[
            events.ToolDefinition.model_validate(t["definition"])
            for t in tools
            if t["name"] in allowed
        ],
        history=[
            events.MessageValue(
                role=m["role"],
                content=m["content"],
                tool_calls=m["tool_calls"],
                tool_call_id=m["tool_call_id"],
            )
            for m in history_window(history, limits.history_messages)
        ],
        message=cmd.message,
    )


class CommandHandler:
    name = "commands"
    topics: Sequence[str] = (COMMANDS.name,)
    types = None  # every type

    def __init__(self, bootstrap_servers: str, read_model: ReadModel, limits: TurnLimits) -> None:
        self.read = read_model
        self.limits = limits
        self._offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._started = False

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    async def _fence(self, items: list[Item]) -> None:
        """Wait until the projection has applied these commands and every event written
        so far, so decisions never rest on stale state, and an outcome recorded before a
        crash is seen (and not recorded twice)."""
        if not self._started:
            await self._offsets.start()
            self._started = True
        commands: dict[tuple[str, int], int] = {}
        for _env, position in items:
            key = (position.topic, position.partition)
            commands[key] = max(commands.get(key, -1), position.offset)
        partitions = self._offsets.partitions_for_topic(EVENTS.name) or set()
        if not partitions:
            await self._offsets.topics()
            partitions = self._offsets.partitions_for_topic(EVENTS.name) or set()
        tps = [TopicPartition(EVENTS.name, p) for p in sorted(partitions)]
        ends = await self._offsets.end_offsets(tps)
        await self.read.wait_for_positions(
            [
                *((topic, partition, offset) for (topic, partition), offset in commands.items()),
                *((tp.topic, tp.partition, end - 1) for tp, end in ends.items() if end > 0),
            ]
        )

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self._fence(items)
        outputs: list[Envelope[Any]] = []
        decided: dict[str, Fact] = {}  # outcomes within this batch, by aggregate id
        for env, _position in items:
            if await self.read.command_outcome(env.tenant_id, env.id) is not None:
                continue  # decided before a crash or rebalance: the outcome is in the log
            fact = await self._decide(env, decided)
            if isinstance(fact, events.AgentCommandRejected | events.SessionCommandRejected):
                fact = fact.model_copy(update={"command_id": env.id})
            decided[fact.subject] = fact
            outputs.append(env.follow(fact, step="outcome", source=SOURCE))
        return outputs

    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """A command that could not be decided on is rejected, so that its requester
        (waiting on the outcome) gets an answer."""
        cmd, code = env.data, "STEP_UNPROCESSABLE"
        detail = f"the command could not be processed ({reason})"
        fact: Fact
        if isinstance(cmd, events.TurnRequested):
            fact = events.TurnRejected(
                session_id=cmd.session_id, turn_id=cmd.turn_id, code=code, detail=detail
            )
        elif isinstance(cmd, events.SessionCreateRequested | events.TurnCancelRequested):
            fact = events.SessionCommandRejected(
                session_id=cmd.session_id, command_id=env.id, code=code, detail=detail
            )
        elif isinstance(
            cmd,
            events.AgentCreateRequested
            | events.AgentUpdateRequested
            | events.AgentDisableRequested,
        ):
            fact = events.AgentCommandRejected(
                agent_id=cmd.agent_id, command_id=env.id, code=code, detail=detail
            )
        else:
            return []
        return [env.follow(fact, step="outcome", source=SOURCE)]

    async def _decide(self, env: Envelope[Any], decided: dict[str, Fact]) -> Fact:
        cmd, tenant = env.data, env.tenant_id
        if isinstance(
            cmd,
            events.AgentCreateRequested
            | events.AgentUpdateRequested
            | events.AgentDisableRequested,
        ):
            existing = await self.read.agent(tenant, cmd.agent_id)
            if cmd.agent_id in decided:
                existing = _overlay_agent(existing, decided[cmd.agent_id], tenant)
            if isinstance(cmd, events.AgentDisableRequested):
                return disable_agent(cmd, existing)
            known = {t["name"] for t in await self.read.tools(tenant)}
            if isinstance(cmd, events.AgentCreateRequested):
                return create_agent(cmd, existing, known)
            return update_agent(cmd, existing, known)
        if isinstance(cmd, events.SessionCreateRequested):
            existing_session = await self.read.session(tenant, cmd.session_id)
            if isinstance(decided.get(cmd.session_id), events.SessionCreated):
                existing_session = {"session_id": cmd.session_id}
            agent = await self.read.agent(tenant, cmd.agent_id)
            if cmd.agent_id in decided:
                agent = _overlay_agent(agent, decided[cmd.agent_id], tenant)
            return create_session(cmd, existing_session, agent)
        if isinstance(cmd, events.TurnRequested):
            session = await self.read.session(tenant, cmd.session_id)
            agent = await self.read.agent(tenant, session["agent_id"]) if session else None
            active = await self.read.active_turn(tenant, cmd.session_id)
            if isinstance(decided.get(cmd.session_id), events.TurnAccepted):
                active = {"turn_id": decided[cmd.session_id].turn_id}  # type: ignore[attr-defined]
            history = await self.read.recent_messages(
                tenant, cmd.session_id, self.limits.history_messages
            )
            tools = await self.read.tools(tenant)
            return request_turn(cmd, session, agent, active, tools, history, self.limits)
        if isinstance(cmd, events.TurnCancelRequested):
            turn = await self.read.turn(tenant, cmd.turn_id)
            if turn is None or turn["status"] not in ("accepted", "running"):
                return events.SessionCommandRejected(
                    session_id=cmd.session_id,
                    command_id="",
                    code="TURN_NOT_ACTIVE",
                    detail="only a running turn can be cancelled",
                )
            return events.TurnCancelled(session_id=cmd.session_id, turn_id=cmd.turn_id)
        raise TypeError(f"not a command: {type(cmd).__name__}")

    async def close(self) -> None:
        if self._started:
            await self._offsets.stop()
        await self.read.close()


def _overlay_agent(
    existing: dict[str, Any] | None, fact: Fact, tenant: str
) -> dict[str, Any] | None:
    """The agent as the projection will show it once this batch's outcome is applied."""
    if isinstance(fact, events.AgentCreated | events.AgentUpdated):
        return {
            "agent_id": fact.agent_id,
            "tenant_id": tenant,
            "version": fact.version,
            "config": fact.config.model_dump(mode="json"),
            "status": "active",
        }
    if isinstance(fact, events.AgentDisabled) and existing is not None:
        return {**existing, "status": "disabled", "version": fact.version}
    return existing
