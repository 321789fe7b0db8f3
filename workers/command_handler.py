"""The command handler: decides requested commands against projected state and records
the outcome (the decisions are ``command_decisions``).

It is the single writer of outcomes per key: commands are keyed like their aggregate,
and one group member owns a partition. Before reading state it waits for the projection
to have applied the log up to what it is about to decide on (the offset fence).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from projections import agents, outcomes, sessions, tenants, turns
from projections.agents import Agent
from projections.database import Database
from projections.sessions import Session
from projections.waiter import Waiter
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.handler import Closes, Item, RecordsUnprocessable, WatchesPublished
from streams.partitions import LogReader

from . import command_decisions as decide
from .command_decisions import TurnLimits

log = logging.getLogger(__name__)
SOURCE = "/workers/commands"


@dataclass
class _Decided:
    """What this batch decided, not projected yet: later commands of the batch see it."""

    agents: dict[str, Agent | None] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    active_turns: dict[str, str] = field(default_factory=dict)  # session id -> turn id

    def record(self, fact: Fact, agent_before: Agent | None) -> None:
        if isinstance(fact, events.AgentCreated | events.AgentUpdated | events.AgentDisabled):
            self.agents[fact.agent_id] = agents.evolve(agent_before, fact)
        elif isinstance(fact, events.SessionCreated):
            self.sessions[fact.session_id] = Session.created(fact)
        elif isinstance(fact, events.TurnAccepted):
            self.active_turns[fact.session_id] = fact.turn_id


class CommandHandler(WatchesPublished, RecordsUnprocessable, Closes):
    name = "commands"
    types = None  # every type

    def __init__(
        self, bootstrap_servers: str, catalog: Catalog, db: Database, limits: TurnLimits
    ) -> None:
        self.catalog = catalog
        self.topics = (catalog.commands,)
        self.db = db
        self.waiter = Waiter(db)
        self.limits = limits
        self._log = LogReader(bootstrap_servers)
        self._started = False
        # The last offset of this handler's outcomes per events partition; None until
        # the first fence after an assignment has found the topic's end.
        self._written: dict[tuple[str, int], int] | None = None

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._log.forget_partitions()  # partitions may have been added: look again
        self._written = None  # a previous owner's outcomes: the next fence finds them
        return {}

    def published(self, acks: list[tuple[str, int, int]]) -> None:
        """Where this handler's outcomes were written: the next batch's fence waits until
        the projection has applied them."""
        assert self._written is not None
        for topic, partition, offset in acks:
            key = (topic, partition)
            self._written[key] = max(self._written.get(key, -1), offset)

    async def _fence(self, items: list[Item]) -> None:
        """Wait until the projection has applied these commands and every outcome
        recorded for them so far, so decisions never rest on stale state, and an outcome
        recorded before a crash is seen (and not recorded twice).

        After an assignment, outcomes a previous owner of these partitions recorded (and
        crashed before committing) are somewhere below the events topic's end: the first
        fence asks for the end once (ListOffsets). From then on this handler is the only
        one recording outcomes for its commands, and knows where it wrote them: later
        fences wait on the projection's notified positions alone, with no round trip."""
        if not self._started:
            await self._log.start()
            self.waiter.start()
            self._started = True
        if self._written is None:
            ends = await self._log.ends(await self._log.partitions(self.catalog.events))
            self._written = {
                (tp.topic, tp.partition): end - 1 for tp, end in ends.items() if end > 0
            }
        positions = dict(self._written)
        for _env, position in items:
            key = (position.topic, position.partition)
            positions[key] = max(positions.get(key, -1), position.offset)
        await self.waiter.until_positions(
            [(topic, partition, offset) for (topic, partition), offset in positions.items()]
        )

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self._fence(items)
        outputs: list[Envelope[Any]] = []
        decided = _Decided()
        for env, _position in items:
            if await outcomes.outcome(self.db, env.tenant_id, env.id) is not None:
                continue  # decided before a crash or rebalance: the outcome is in the log
            fact = await self._decide(env, decided)
            if isinstance(fact, events.AgentCommandRejected | events.SessionCommandRejected):
                fact = fact.model_copy(update={"command_id": env.id})
            outputs.append(env.follow(fact, step="outcome", source=SOURCE))
        return outputs

    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """A command that could not be decided on is rejected, so that its requester
        (waiting on the outcome) gets an answer."""
        fact = decide.unprocessable(env.data, env.id, reason)
        return [] if fact is None else [env.follow(fact, step="outcome", source=SOURCE)]

    async def _agent(self, tenant_id: str, agent_id: str, decided: _Decided) -> Agent | None:
        if agent_id in decided.agents:
            return decided.agents[agent_id]
        return await agents.agent(self.db, tenant_id, agent_id)

    async def _decide(self, env: Envelope[Any], decided: _Decided) -> Fact:
        cmd, tenant = env.data, env.tenant_id
        if isinstance(cmd, decide.AgentCommand):
            agent = await self._agent(tenant, cmd.agent_id, decided)
            fact: Fact
            if isinstance(cmd, events.AgentDisableRequested):
                fact = decide.disable_agent(cmd, agent)
            else:
                known = {t.name for t in await tenants.tools(self.db, tenant)}
                if isinstance(cmd, events.AgentCreateRequested):
                    fact = decide.create_agent(cmd, agent, known)
                else:
                    fact = decide.update_agent(cmd, agent, known)
            decided.record(fact, agent)
            return fact
        if isinstance(cmd, events.SessionCreateRequested):
            exists = cmd.session_id in decided.sessions or (
                await sessions.session(self.db, tenant, cmd.session_id) is not None
            )
            agent = await self._agent(tenant, cmd.agent_id, decided)
            fact = decide.create_session(cmd, exists, agent)
            decided.record(fact, None)
            return fact
        if isinstance(cmd, events.TurnRequested):
            session: Session | None = decided.sessions.get(cmd.session_id)
            if session is None:  # not opened in this batch: as projected
                session = await sessions.session(self.db, tenant, cmd.session_id)
            agent = await self._agent(tenant, session.agent_id, decided) if session else None
            active = decided.active_turns.get(cmd.session_id)
            if active is None:
                running = await turns.active_turn(self.db, tenant, cmd.session_id)
                active = None if running is None else running.turn_id
            history = await sessions.recent_messages(
                self.db, tenant, cmd.session_id, self.limits.history_messages
            )
            tools = await tenants.tools(self.db, tenant)
            fact = decide.request_turn(
                cmd, session, agent, active, tools, history, self.limits, env.time
            )
            decided.record(fact, None)
            return fact
        if isinstance(cmd, events.TurnCancelRequested):
            turn = await turns.turn(self.db, tenant, cmd.turn_id)
            opened = await sessions.session(self.db, tenant, cmd.session_id)
            return decide.cancel_turn(cmd, turn, opened)
        raise TypeError(f"not a command: {type(cmd).__name__}")

    async def close(self) -> None:
        if self._started:
            await self.waiter.close()
            await self._log.stop()
        await self.db.close()
