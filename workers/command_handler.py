"""The command handler: decides requested commands on state it keeps in memory
(``command_state``), folded from the log, and records the outcome (the decisions are
``command_decisions``). No decision reads Postgres.

It is the single writer of outcomes per key: commands are keyed like their aggregate,
and one group member owns a partition. Its outcomes are keyed like the command, so they
are on the events partition of the command's partition number: the commands and events
topics must have as many partitions as each other.

Before its first batch after an assignment it loads a snapshot (the read models at the
core projection's positions) and follows every events partition from there, in a task.
Before a batch is decided, the follow has reached the end the log had then, so a
decision sees every fact recorded before its command was read; its own outcomes are
folded as it records them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from projections.database import Database
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.follow import Follower, FollowerStoppedError
from streams.handler import Ack, Closes, Item, RecordsUnprocessable, WatchesPublished
from streams.partitions import LogReader, paired

from . import command_decisions as decide
from . import command_state
from .command_decisions import TurnLimits
from .command_state import CommandState

log = logging.getLogger(__name__)
SOURCE = "/workers/commands"
# How long a batch waits for the fold to reach the log's end before it is decided on
# what is folded (a lagging fold can only refuse what it would accept, never the reverse:
# this handler is the one writer of what it decides).
CATCH_UP_S = 5.0
# A load's reads of the log and the snapshot take at most this long, and its fold of
# the tail may not stand still for longer: past either, it is an outage, and it is
# tried again with clients of its own (a client that lived through a broker's restart
# has been seen never to recover).
LOAD_TIMEOUT_S = 30.0
LOAD_STALL_S = 10.0


REJECTIONS = (
    events.AgentCommandRejected,
    events.SessionCommandRejected,
    events.TenantCommandRejected,
)


class CommandHandler(WatchesPublished, RecordsUnprocessable, Closes):
    name = "commands"
    types = None  # every type

    def __init__(
        self, bootstrap_servers: str, catalog: Catalog, db: Database, limits: TurnLimits
    ) -> None:
        self.catalog = catalog
        self.topics = (catalog.commands,)
        self.db = db  # read once per assignment, for the snapshot
        self.limits = limits
        self.state = CommandState(limits.history_messages)
        self._follower = Follower(bootstrap_servers, self._fold_records)
        self._bootstrap = bootstrap_servers
        self._owned: list[TopicPartition] = []
        # Outcomes folded that are not known to be in the log yet: if their batch fails
        # (to be decided again, or set aside), the state is loaded again.
        self._unwritten = False
        self._loading = asyncio.Lock()

    def _fold_records(self, records: list[Any]) -> None:
        self.state.fold_records(records)

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Take the assigned partitions (eager rebalancing: all of them); their state is
        loaded before the first batch is decided, not here: the group's rebalance waits
        on this call, and a load that outlived the session would lose the partitions
        again. The consumer starts at the group's commits."""
        async with self._loading:
            self._owned = [tp for tp in partitions if tp.topic == self.catalog.commands]
            await self._follower.stop()
        return {}

    async def _ready(self) -> None:
        """Load the state if it is missing, wrong or stale: partitions were assigned,
        the last batch failed after it was decided (its outcomes are not in the log), or
        the follower stopped (a load or a read failed while the broker was away). A
        failure here is the broker's or Postgres's: the runtime retries the batch until
        they are back."""
        async with self._loading:
            if self._unwritten or not self._follower.running:
                await self._load()

    async def _load(self) -> None:
        await self._follower.stop()
        async with asyncio.timeout(LOAD_TIMEOUT_S):
            reader = LogReader(self._bootstrap, group_id=self.catalog.group_id(self.name))
            async with reader:
                at, events_tps = await self._snapshot(reader)
            await self._follower.start({tp: at.get(tp.partition, 0) for tp in events_tps})
        moved: dict[TopicPartition, int] = {}
        while not await self._follower.caught_up(LOAD_STALL_S):
            if self._follower.positions == moved:
                await self._follower.stop()  # the next try starts it afresh
                raise FollowerStoppedError(f"the tail's fold stood still for {LOAD_STALL_S} s")
            moved = dict(self._follower.positions)
        self._unwritten = False

    async def _snapshot(self, reader: LogReader) -> tuple[dict[int, int], list[TopicPartition]]:
        """Load the snapshot into the state; its positions, and the events partitions."""
        events_tps = await paired(
            reader,
            self.catalog.commands,
            self.catalog.events,
            "a command's outcome is written to the events partition of its number",
        )
        owned = self._owned
        numbers = sorted(tp.partition for tp in events_tps)
        partitioner = DefaultPartitioner()

        def partition_of(key: str) -> int:
            return int(partitioner(key.encode(), numbers, numbers))

        state, at = await command_state.load(
            self.db,
            self.catalog.events,
            {tp.partition for tp in owned},
            partition_of,
            self.limits.history_messages,
            await self._pending(reader, owned),
        )
        self.state = state
        return at, events_tps

    async def _pending(self, reader: LogReader, owned: list[TopicPartition]) -> list[str]:
        """The ids of the commands the consumer will be handed again: from the group's
        commits to the log's ends."""
        ends = await reader.ends(owned)
        found = []
        for tp in owned:
            start = await reader.committed(tp)
            for env in await reader.envelopes(tp, start, ends[tp]):
                found.append(env.id)
        return found

    async def handle_batch(self, items: list[Item]) -> list[Envelope[Any]]:
        await self._ready()
        if not await self._follower.caught_up(CATCH_UP_S):
            log.warning("deciding on state %.0f s behind the log's end", CATCH_UP_S)
            await self._follower.stop()  # the next batch loads the state again
        outputs: list[Envelope[Any]] = []
        for env, _position in items:
            if env.id in self.state.decided:
                continue  # decided before a crash or rebalance: the outcome is in the log
            fact = self._decide(env)
            if isinstance(fact, REJECTIONS):
                fact = fact.model_copy(update={"command_id": env.id})
            outcome = env.follow(fact, step="outcome", source=SOURCE)
            self._unwritten = True
            self.state.fold(outcome)  # later commands see it; read back, it is passed over
            outputs.append(outcome)
        return outputs

    def published(self, acks: list[Ack]) -> None:
        """The batch's outcomes are in the log: what was folded of them stands."""
        self._unwritten = False

    def unprocessable(self, env: Envelope[Any], reason: str) -> list[Envelope[Any]]:
        """A command that could not be decided on is rejected, so that its requester
        (waiting on the outcome) gets an answer."""
        fact = decide.unprocessable(env.data, env.id, reason)
        return [] if fact is None else [env.follow(fact, step="outcome", source=SOURCE)]

    def _decide(self, env: Envelope[Any]) -> Fact:
        cmd, tenant, state = env.data, env.tenant_id, self.state
        if isinstance(cmd, decide.AgentCommand):
            agent = state.agent(tenant, cmd.agent_id)
            if isinstance(cmd, events.AgentDisableRequested):
                return decide.disable_agent(cmd, agent)
            known = {t.name for t in state.tools_of(tenant)}
            if isinstance(cmd, events.AgentCreateRequested):
                return decide.create_agent(cmd, agent, known)
            return decide.update_agent(cmd, agent, known)
        if isinstance(cmd, events.SessionCreateRequested):
            exists = cmd.session_id in state.conversations
            return decide.create_session(cmd, exists, state.agent(tenant, cmd.agent_id))
        if isinstance(cmd, events.TurnRequested):
            session = state.conversation(tenant, cmd.session_id)
            agent = state.agent(tenant, session.agent_id) if session else None
            return decide.request_turn(
                cmd, session, agent, state.tools_of(tenant), self.limits, env.time
            )
        if isinstance(cmd, events.TurnCancelRequested):
            return decide.cancel_turn(cmd, state.conversation(tenant, cmd.session_id))
        if isinstance(cmd, events.ToolRegisterRequested):
            return decide.register_tool(cmd, state.tool(cmd.tenant_id, cmd.tool.name))
        if isinstance(cmd, events.ApiKeyCreateRequested):
            return decide.create_key(cmd, state.key_revoked(cmd.tenant_id, cmd.key_id) is not None)
        if isinstance(cmd, events.ApiKeyRevokeRequested):
            return decide.revoke_key(cmd, state.key_revoked(cmd.tenant_id, cmd.key_id))
        raise TypeError(f"not a command: {type(cmd).__name__}")

    async def close(self) -> None:
        await self._follower.stop()
        await self.db.close()
