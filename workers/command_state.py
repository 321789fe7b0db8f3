"""What the command handler decides on, in memory, folded from the events topic.

- **Reference tables, every tenant's, folded in full** by every instance from every
  partition: each agent (``agent_state.evolve``) and each tenant's tools by name. An agent's
  facts are keyed by the agent, so a session's turn needs agents from any partition.
- **Conversations** (``conversations.evolve``) of the sessions on the partitions this
  instance owns, the API keys of the tenants on them, and which of their commands have
  an outcome: a command's outcome is keyed like the command, so it is on the events
  partition of the command's number.

``load`` reads a snapshot (``projections.snapshots``): the read models at the core
projection's positions, in one transaction. The handler then follows the topic from
those positions with ``fold``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from projections import agent_state, conversations, snapshots
from projections.agent_state import Agent
from projections.conversations import Conversation
from projections.database import Database
from projections.waiter import positions
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, EnvelopeError, from_kafka
from streams.dedupe import SeenIds
from streams.partitions import Record, is_wanted

AGENT_FACTS = (events.AgentCreated, events.AgentUpdated, events.AgentDisabled)
# The facts that are a command's outcome: their cause is the command.
OUTCOMES: tuple[type[Fact], ...] = (
    *AGENT_FACTS,
    events.AgentCommandRejected,
    events.SessionCreated,
    events.SessionCommandRejected,
    events.TurnAccepted,
    events.TurnRejected,
    events.TurnCancelled,
    events.ToolRegistered,
    events.ApiKeyCreated,
    events.ApiKeyRevoked,
    events.TenantCommandRejected,
)
# How far back before the snapshot's position a repeated fact is recognised: a writer
# that crashed repeats what it had in flight, moments after it first wrote it.
REPEATS_WITHIN = 10_000
_REFERENCE = frozenset(t.ce_type() for t in (*AGENT_FACTS, events.ToolRegistered))
_OWNED = _REFERENCE | frozenset(t.ce_type() for t in (*OUTCOMES, *conversations.FACTS))


@dataclass
class CommandState:
    history_limit: int
    owned: frozenset[int] = frozenset()  # events partitions whose sessions are kept
    agents: dict[str, tuple[str, Agent]] = field(default_factory=dict)  # id -> tenant, agent
    tools: dict[str, dict[str, events.ToolDefinition]] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    # The keys of the tenants on the partitions owned: key id -> revoked.
    keys: dict[str, dict[str, bool]] = field(default_factory=dict)
    decided: SeenIds = field(default_factory=SeenIds)  # commands with an outcome
    folded: SeenIds = field(default_factory=SeenIds)  # facts folded, by event id

    def agent(self, tenant_id: str, agent_id: str) -> Agent | None:
        found = self.agents.get(agent_id)
        return found[1] if found is not None and found[0] == tenant_id else None

    def conversation(self, tenant_id: str, session_id: str) -> Conversation | None:
        found = self.conversations.get(session_id)
        return found if found is not None and found.tenant_id == tenant_id else None

    def key_revoked(self, tenant_id: str, key_id: str) -> bool | None:
        """Whether the tenant's key is revoked; None if it has no such key."""
        return self.keys.get(tenant_id, {}).get(key_id)

    def tool(self, tenant_id: str, name: str) -> events.ToolDefinition | None:
        return self.tools.get(tenant_id, {}).get(name)

    def tools_of(self, tenant_id: str) -> list[events.ToolDefinition]:
        """The tenant's tools in the order of their names."""
        found = self.tools.get(tenant_id, {})
        return [found[name] for name in sorted(found)]

    def fold_records(self, records: Iterable[Record]) -> None:
        """Records of the events topic, as the follower reads them."""
        for record in records:
            owned = record.partition in self.owned
            if not is_wanted(record, _OWNED if owned else _REFERENCE):
                continue
            with contextlib.suppress(EnvelopeError):  # dead-lettered by its consumers
                env = from_kafka(record.key, record.value, list(record.headers))
                self.fold(env, owned=owned)

    def fold(self, env: Envelope[Any], *, owned: bool = True) -> None:
        """A fact into the state, once; of a session only if its partition is owned (a
        command's outcome always is)."""
        if env.id in self.folded:
            return
        self.folded.add(env.id)
        fact = env.data
        if isinstance(fact, AGENT_FACTS):
            before = self.agent(env.tenant_id, fact.agent_id)
            if before is not None or fact.agent_id not in self.agents:
                after = agent_state.evolve(before, fact)
                if after is not None:
                    self.agents[fact.agent_id] = (env.tenant_id, after)
        elif isinstance(fact, events.ToolRegistered):
            self.tools.setdefault(fact.tenant_id, {})[fact.tool.name] = fact.tool
        if not owned:
            return
        if isinstance(fact, OUTCOMES):
            self.decided.add(env.causation_id)
        if isinstance(fact, events.ApiKeyCreated):
            self.keys.setdefault(fact.tenant_id, {}).setdefault(fact.key_id, False)
        elif isinstance(fact, events.ApiKeyRevoked) and fact.key_id in self.keys.get(
            fact.tenant_id, {}
        ):
            self.keys[fact.tenant_id][fact.key_id] = True
        if isinstance(fact, conversations.ConversationFact):
            before_conversation = self.conversations.get(fact.session_id)
            if before_conversation is not None and before_conversation.tenant_id != env.tenant_id:
                return  # another tenant's session of that id: not this one's to change
            after_conversation = conversations.evolve(
                before_conversation, env.tenant_id, fact, self.history_limit
            )
            if after_conversation is not None:
                self.conversations[fact.session_id] = after_conversation


async def load(
    db: Database,
    events_topic: str,
    owned: Collection[int],
    partition_of: Callable[[str], int],
    history_limit: int,
    pending: list[str],
) -> tuple[CommandState, dict[int, int]]:
    """The state at the core projection's positions, and those positions (the next
    offset of each events partition): the snapshot a handler folds the log's tail onto.
    ``pending``: the ids of commands that may be handed to it again, of which those with
    an outcome are marked decided. The ids of the turns' facts in the last
    ``REPEATS_WITHIN`` records before each position are marked folded, so that a fact
    repeated in the tail (a writer's retry) is not folded twice, as the read models
    apply it once."""
    state = CommandState(history_limit, frozenset(owned))
    async with db.snapshot() as snapshot:
        at = await positions(snapshot, events_topic)
        state.agents = await snapshots.agents(snapshot)
        state.tools = await snapshots.tools(snapshot)
        state.keys = await snapshots.keys(
            snapshot, lambda tenant_id: partition_of(tenant_id) in state.owned
        )
        state.conversations = await snapshots.conversations(
            snapshot, owned, partition_of, history_limit
        )
        for command_id in await snapshots.decided(snapshot, pending):
            state.decided.add(command_id)
        for partition in owned:
            end = at.get(partition, 0)
            for event_id in await snapshots.recent_step_ids(
                snapshot, partition, end - REPEATS_WITHIN, end
            ):
                state.folded.add(event_id)
    return state, at
