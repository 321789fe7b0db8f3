"""What a decider reads of the read models when it loads (it starts, or is assigned
partitions): its snapshot, read beside the projection's positions, to which it then
folds the log's tail. Nothing here is read to decide a request.

The deciders' runtimes read Postgres through this module and import no read model's
queries (an import-linter contract in ``pyproject.toml``): those serve the gateway.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection
from dataclasses import replace

from schemas import events
from schemas.billing import PricePlan

from .agent_state import Agent
from .agents import AgentRow
from .conversations import Conversation
from .dead_letters import RedriveRow
from .plans import WITHDRAWN, PlanRow
from .rows import ALL_TENANTS, Reader, Row
from .sessions import MessageRow
from .tenant_plans import Assigned, TenantPlans
from .tenants import ToolRow
from .turns import ACTIVE_SQL

# -- the command handler ---------------------------------------------------------------


async def agents(db: Reader) -> dict[str, tuple[str, Agent]]:
    """Every tenant's agents (id -> tenant, state): the table a command handler keeps
    whole."""
    rows = await db.rows(AgentRow, None, "SELECT * FROM {s}.agents")
    return {r.agent_id: (r.tenant_id, Agent.model_validate(r.model_dump())) for r in rows}


async def tools(db: Reader) -> dict[str, dict[str, events.ToolDefinition]]:
    """Every tenant's tools by name: the table a command handler keeps whole."""
    found: dict[str, dict[str, events.ToolDefinition]] = {}
    for tool in await db.rows(ToolRow, None, "SELECT * FROM {s}.tools"):
        found.setdefault(tool.tenant_id, {})[tool.name] = tool.definition
    return found


class _KeyRow(Row):
    tenant_id: str
    key_id: str
    revoked_at: datetime.datetime | None


async def keys(db: Reader, owned: Callable[[str], bool]) -> dict[str, dict[str, bool]]:
    """The keys of the tenants ``owned`` says are the handler's: key id -> revoked."""
    found: dict[str, dict[str, bool]] = {}
    for key in await db.rows(
        _KeyRow, None, "SELECT tenant_id, key_id, revoked_at FROM {s}.api_keys"
    ):
        if owned(key.tenant_id):
            found.setdefault(key.tenant_id, {})[key.key_id] = key.revoked_at is not None
    return found


class _SessionRow(Row):
    session_id: str
    tenant_id: str
    agent_id: str


class _ActiveRow(Row):
    session_id: str
    turn_id: str
    requested_at: datetime.datetime


async def conversations(
    db: Reader,
    partitions: Collection[int],
    partition_of: Callable[[str], int],
    history_limit: int,
) -> dict[str, Conversation]:
    """The conversations of every session whose facts are on ``partitions`` of the
    events topic (``partition_of`` a session id), as the read models hold them (a
    property test holds them equal to ``conversations.evolve``'s fold of the log)."""
    found = {
        row.session_id: Conversation(row.session_id, row.tenant_id, row.agent_id)
        for row in await db.rows(
            _SessionRow, None, "SELECT session_id, tenant_id, agent_id FROM {s}.sessions"
        )
        if partition_of(row.session_id) in partitions
    }
    ids = list(found)
    for active in await db.rows(
        _ActiveRow,
        None,
        "SELECT session_id, turn_id, requested_at FROM {s}.turns"
        f" WHERE session_id = ANY(%s) AND status IN ({ACTIVE_SQL})",
        ids,
    ):
        found[active.session_id] = replace(
            found[active.session_id],
            active_turn=active.turn_id,
            active_requested_at=active.requested_at,
        )
    history: dict[str, list[tuple[str, events.MessageValue]]] = {}
    for m in await db.rows(
        MessageRow,
        None,
        "SELECT * FROM (SELECT *, row_number() OVER"
        " (PARTITION BY session_id ORDER BY position DESC) AS latest"
        " FROM {s}.messages WHERE session_id = ANY(%s)) m"
        " WHERE latest <= %s ORDER BY session_id, position",
        ids,
        history_limit,
    ):
        history.setdefault(m.session_id, []).append((m.message_id, m.value()))
    for session_id, messages in history.items():
        found[session_id] = replace(found[session_id], history=tuple(messages))
    return found


class _CommandRow(Row):
    command_id: str


async def decided(db: Reader, command_ids: list[str]) -> set[str]:
    """Which of these commands have an outcome."""
    found = await db.rows(
        _CommandRow,
        None,
        "SELECT command_id FROM {s}.command_outcomes WHERE command_id = ANY(%s)",
        command_ids,
    )
    return {row.command_id for row in found}


class _StepIdRow(Row):
    event_id: str


async def recent_step_ids(db: Reader, partition: int, start: int, end: int) -> list[str]:
    """The event ids of the steps of turns accepted on ``partition`` of the events topic
    recorded in [start, end): what a writer may still repeat past ``end``."""
    found = await db.rows(
        _StepIdRow,
        None,
        "SELECT s.event_id FROM {s}.turn_steps s JOIN {s}.turns t ON t.turn_id = s.turn_id"
        " WHERE t.accepted_partition = %s AND s.position >= %s AND s.position < %s",
        partition,
        start,
        end,
    )
    return [row.event_id for row in found]


# -- the orchestrator ------------------------------------------------------------------


async def open_turns_from(db: Reader, partition: int, before_offset: int) -> int | None:
    """Offset of the oldest TurnAccepted of a still-running turn in one events partition
    (the orchestrator replays from there to rebuild its state)."""
    start = await db.value(
        None,
        f"SELECT min(accepted_offset) FROM {{s}}.turns WHERE status IN ({ACTIVE_SQL})"
        " AND accepted_partition = %s AND accepted_offset < %s",
        partition,
        before_offset,
    )
    return None if start is None else int(start)


# -- the billing decider ---------------------------------------------------------------


async def plan_versions(db: Reader) -> dict[tuple[str, int], PricePlan]:
    """Every version of every plan: the table each billing decider keeps whole."""
    rows = await db.rows(PlanRow, None, "SELECT * FROM {s}.price_plans")
    return {(r.plan_id, r.version): r.plan for r in rows}


class _NameRow(Row):
    display_name: str
    operator_id: str


async def operator_names(db: Reader) -> dict[str, str]:
    """Every operator's name and id (the first operator of a name, for those recorded
    before names were decided)."""
    rows = await db.rows(
        _NameRow,
        None,
        "SELECT DISTINCT ON (display_name) display_name, operator_id FROM {s}.operators"
        " ORDER BY display_name, created_at, operator_id",
    )
    return {r.display_name: r.operator_id for r in rows}


class _AssignedRow(Row):
    tenant_id: str
    effective_from: datetime.datetime
    plan_id: str
    version: int
    billing_offset: int
    withdrawn_offset: int | None


class _DraftedRow(Row):
    tenant_id: str
    period: str


async def tenant_plans(db: Reader, partition: int) -> dict[str, TenantPlans]:
    """The plans of every tenant whose billing facts are on ``partition``."""
    assigned = await db.rows(
        _AssignedRow,
        None,
        "SELECT a.tenant_id, a.effective_from, a.plan_id, a.version, a.billing_offset,"
        f" (SELECT min(w.billing_offset) FROM {{s}}.plan_withdrawals w WHERE {WITHDRAWN})"
        " AS withdrawn_offset FROM {s}.plan_assignments a WHERE a.billing_partition = %s",
        partition,
    )
    drafted = await db.rows(
        _DraftedRow,
        None,
        "SELECT DISTINCT tenant_id, period FROM {s}.draft_requests"
        " WHERE billing_partition = %s AND status = 'drafted'",
        partition,
    )
    tenants: dict[str, TenantPlans] = {}
    for row in assigned:
        state = tenants.get(row.tenant_id) or TenantPlans(row.tenant_id)
        found = Assigned(
            row.effective_from, row.plan_id, row.version, row.billing_offset, row.withdrawn_offset
        )
        tenants[row.tenant_id] = replace(
            state, assignments={**state.assignments, row.effective_from: found}
        )
    for draft in drafted:
        state = tenants.get(draft.tenant_id) or TenantPlans(draft.tenant_id)
        tenants[draft.tenant_id] = replace(state, drafted=state.drafted | {draft.period})
    return tenants


async def redriven(billing_db: Reader) -> set[str]:
    """Every dead letter re-driven."""
    rows = await billing_db.rows(
        RedriveRow,
        ALL_TENANTS,
        "SELECT * FROM {s}.dead_letter_redrives WHERE redriven_at IS NOT NULL",
    )
    return {r.dead_letter for r in rows}
