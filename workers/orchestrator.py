"""The orchestrator: the process manager that runs each turn's decisions
(``turn_decisions``) on the events topic and records the facts they return.

State is rebuilt on partition assignment behind an offset fence: once the projection
has applied the partition up to the committed offset, the oldest still-running turn
tells where to replay from (with outputs suppressed: they are already in the log).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from aiokafka import TopicPartition

from projections.database import Database
from projections.turns import open_turns_from
from projections.waiter import Waiter
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from streams.catalog import Catalog
from streams.consumer import Item, Position, SeenIds
from streams.partitions import LogReader

from . import lazy_role_app
from .turn_decisions import TurnState, decide

log = logging.getLogger(__name__)
SOURCE = "/workers/orchestrator"


class Orchestrator:
    name = "orchestrator"
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
        self,
        bootstrap_servers: str,
        catalog: Catalog,
        db: Database,
        *,
        deadline_s: float = 600.0,
    ) -> None:
        self.topics = (catalog.events,)
        self.db = db
        self.waiter = Waiter(db)
        self.deadline_s = deadline_s
        self.turns: dict[str, TurnState] = {}
        # Per open turn, the event that last moved it on: the deadline runs from its time.
        self._progress: dict[str, Envelope[Any]] = {}
        self._deadline_sent: dict[str, str] = {}  # turn id -> the progress it was sent for
        # Per partition: the log end at assignment and the event ids found up to it.
        self._published: dict[int, tuple[int, set[str]]] = {}
        self._seen = SeenIds()
        self._log = LogReader(bootstrap_servers, group_id=catalog.group_id(self.name))
        self._started = False

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self._started:
            await self._log.start()
            self.waiter.start()
            self._started = True
        # Every rebalance hands out the whole assignment again: what was kept of turns
        # is dropped (another member may have moved them on meanwhile) and rebuilt.
        self.turns, self._seen, self._published = {}, SeenIds(), {}
        self._progress, self._deadline_sent = {}, {}
        for tp in partitions:
            committed = await self._log.committed(tp)
            if committed > 0:
                await self.waiter.until_position(tp.topic, tp.partition, committed - 1, timeout=60)
            start = await open_turns_from(self.db, tp.partition, committed)
            if start is not None:
                open_turns, seen = dict(self.turns), set[str]()
                for env in await self._log.envelopes(tp, start, committed, self.types):
                    self._apply(env, open_turns, seen)  # outputs are in the log: state only
                self._commit(open_turns, seen)
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
        (end,) = (await self._log.ends([tp])).values()
        ids = {env.id for env in await self._log.envelopes(tp, committed, end)}
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
            await self.waiter.close()
            await self._log.stop()
        await self.db.close()


__getattr__ = lazy_role_app("orchestrator")
