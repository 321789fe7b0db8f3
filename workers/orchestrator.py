"""The orchestrator: the process manager that runs each turn's decisions
(``turn_decisions``) on the events topic and records the facts they return.

State is rebuilt on partition assignment behind an offset fence: once the projection
has applied the partition up to the committed offset, the oldest still-running turn
tells where to replay from (with outputs suppressed: they are already in the log).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import replace
from typing import Any, Literal

from aiokafka import TopicPartition

from projections.database import Database
from projections.snapshots import open_turns_from
from projections.waiter import Waiter
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from streams import tracing
from streams.catalog import Catalog
from streams.dedupe import SeenIds
from streams.handler import Closes, Item, Position, Ticks
from streams.partitions import LogReader

from . import lazy_role_app
from .metrics import TURNS
from .turn_decisions import TurnState, decide

log = logging.getLogger(__name__)
SOURCE = "/workers/orchestrator"


class Orchestrator(Ticks, Closes):
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
        self._accepted: dict[str, Envelope[Any]] = {}  # open turns' TurnAccepted, if traced
        # Per partition: the log end at assignment and the event ids found up to it.
        self._published: dict[int, tuple[int, set[str]]] = {}
        self._seen = SeenIds()
        self._log = LogReader(bootstrap_servers, group_id=catalog.group_id(self.name))
        self._started = False

    async def on_assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not self._started:
            await self._log.start()
            self._started = True
        # Every rebalance hands out the whole assignment again: what was kept of turns
        # is dropped (another member may have moved them on meanwhile) and rebuilt.
        self.turns, self._seen, self._published = {}, SeenIds(), {}
        self._progress, self._deadline_sent, self._accepted = {}, {}, {}
        async with self.waiter.listening():
            for tp in partitions:
                await self._load(tp)
        return {}

    async def _load(self, tp: TopicPartition) -> None:
        """The open turns of a partition, from the turns read model once the projection
        has applied it up to the committed offset, then the log from where the oldest
        open turn began."""
        committed = await self._log.committed(tp)
        if committed > 0:
            await self.waiter.until_position(tp.topic, tp.partition, committed - 1, timeout=60)
        start = await open_turns_from(self.db, tp.partition, committed)
        if start is not None:
            open_turns, seen = dict(self.turns), set[str]()
            for env in await self._log.envelopes(tp, start, committed, self.types):
                self._apply(env, open_turns, seen, live=False)  # outputs are in the log
            self._commit(open_turns, seen)
            log.info(
                "orchestrator state rebuilt",
                extra={"partition": tp.partition, "from": start, "to": committed},
            )
        await self._learn_published(tp, committed)

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
        self, env: Envelope[Any], turns: dict[str, TurnState], seen: set[str], *, live: bool
    ) -> list[tuple[str, Fact]]:
        """Decide on one event against ``turns`` (changed in place); ``seen`` collects
        the ids of the events decided on. A turn that ends ``live`` (not in a rebuild) is
        counted, and its ``invoke_agent`` span ended."""
        if env.id in self._seen or env.id in seen:
            return []
        seen.add(env.id)
        turn_id = getattr(env.data, "turn_id", None)
        if turn_id is None:
            return []
        if isinstance(env.data, events.TurnAccepted) and tracing.enabled():
            self._accepted[turn_id] = env
        before = turns.get(turn_id)
        state, facts = decide(before, env.data, env.id)
        if state is None or state.done:
            turns.pop(turn_id, None)
            outcome = _outcome(env.data if before is not None else None, facts)
            accepted = self._accepted.pop(turn_id, None)
            if live and outcome is not None:
                TURNS.labels(outcome).inc()
                if accepted is not None:
                    _end_turn_span(accepted, outcome, facts)
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
            for step, fact in self._apply(env, turns, seen, live=True):
                output = env.follow(fact, step=step, source=SOURCE)
                if tracing.enabled():  # a turn's records are its invoke_agent span's
                    parent = tracing.with_span_id(
                        output.traceparent, turn_span_id(env.data.turn_id)
                    )
                    output = replace(output, traceparent=parent)
                if not self._already_published(output, position):
                    outputs.append(output)
        self._commit(turns, seen)
        return outputs

    async def close(self) -> None:
        if self._started:
            await self._log.stop()
        await self.db.close()


TurnEnd = Literal["completed", "failed", "cancelled"]


def _outcome(event: Fact | None, decided: list[tuple[str, Fact]]) -> TurnEnd | None:
    """How a turn ended, if ``event`` (on an open turn) and what was decided on it ended
    it: completed, failed or cancelled."""
    for _step, fact in decided:
        if isinstance(fact, events.TurnCompleted):
            return "completed"
        if isinstance(fact, events.TurnFailed):
            return "failed"
    return "cancelled" if isinstance(event, events.TurnCancelled) else None


def turn_span_id(turn_id: str) -> int:
    """The id of a turn's ``invoke_agent`` span: its children (the orchestrator's
    records of the turn) are made before it, in other processes."""
    return tracing.span_id_for(f"turn/{turn_id}")


def _end_turn_span(
    accepted: Envelope[Any], outcome: TurnEnd, decided: list[tuple[str, Fact]]
) -> None:
    """The turn's ``invoke_agent`` span, from its acceptance to now, as a child of the
    span that processed ``TurnAccepted``."""
    data: events.TurnAccepted = accepted.data
    span = tracing.start(
        f"invoke_agent {data.config.name}",
        accepted.traceparent,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": data.agent_id,
            "gen_ai.agent.name": data.config.name,
            "gen_ai.agent.version": str(data.agent_version),
            "gen_ai.conversation.id": data.session_id,
            "gen_ai.request.model": data.config.model,
            "agentlog.turn.id": data.turn_id,
            "agentlog.turn.outcome": outcome,
        },
        start_time=int(accepted.time.timestamp() * 1e9),
        span_id=turn_span_id(data.turn_id),
    )
    for _step, fact in decided:
        if isinstance(fact, events.TurnCompleted):
            span.set_attribute("gen_ai.usage.input_tokens", fact.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", fact.usage.output_tokens)
        if isinstance(fact, events.TurnFailed):
            tracing.failed(span, fact.code)
    span.end()


__getattr__ = lazy_role_app("orchestrator")
