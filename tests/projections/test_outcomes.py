"""The outcomes of commands: the fold as plain values, the query against real Postgres."""

from __future__ import annotations

from projections import outcomes
from projections.database import Database
from projections.ops import Notify, Upsert, project
from projections.store import ProjectionStore
from schemas import events

from .conversation import Ids, Log, conversation
from .fold_context import CTX, T


def test_agent_command_rejected_records_only_the_outcome_with_its_code() -> None:
    data = events.AgentCommandRejected(
        agent_id="agent-1", command_id="cmd-1", code="AGENT_NOT_FOUND", detail="no agent-1"
    )

    assert project(data, CTX) == [
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "agent-1",
                "outcome": "rejected",
                "code": "AGENT_NOT_FOUND",
                "detail": "no agent-1",
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


async def test_an_outcome_is_found_by_its_command_id_within_its_tenant(
    store: ProjectionStore, unscoped: Database
) -> None:
    ids, other = Ids.new("a"), Ids.new("b")
    envs = conversation(ids)
    await store.apply(Log().extend(envs.values()))
    command = envs["agent_create_requested"]

    found = await outcomes.outcome(unscoped, ids.tenant_id, command.id)

    assert found is not None
    assert (found.command_id, found.subject, found.outcome, found.code, found.detail) == (
        command.id,
        ids.agent_id,
        outcomes.Outcome.ACCEPTED,
        None,
        None,
    )
    assert found.recorded_at == envs["agent_created"].time
    assert await outcomes.outcome(unscoped, other.tenant_id, command.id) is None
    assert await outcomes.outcome(unscoped, ids.tenant_id, "no-such-command") is None
