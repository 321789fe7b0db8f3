"""The agents read model: its folds and ``evolve`` as plain values, and the property that
makes ``evolve`` the one definition of an agent's state: what the fold stores is what
``evolve`` gives over the same facts (the command handler decides on the latter)."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import agents
from projections.agent_state import Agent, AgentFact, AgentStatus, evolve
from projections.database import Database
from projections.ops import Notify, Upsert, project
from projections.store import ProjectionStore, storable
from schemas import events
from schemas.envelope import envelope

from .conversation import CONFIG, SOURCE, Log
from .fold_context import CONFIG_JSON, CTX, T
from .strategies import configs

UPDATED = CONFIG.model_copy(update={"model": "dev:other", "max_steps": 3})


def test_agent_created_adds_the_agent_its_first_version_and_the_command_outcome() -> None:
    data = events.AgentCreated(agent_id="agent-1", version=1, config=CONFIG)

    assert project(data, CTX) == [
        Upsert(
            "agents",
            ("agent_id",),
            {
                "agent_id": "agent-1",
                "tenant_id": "tenant-a",
                "version": 1,
                "config": CONFIG_JSON,
                "status": "active",
                "created_at": T,
                "updated_at": T,
            },
        ),
        Upsert(
            "agent_versions",
            ("agent_id", "version"),
            {
                "agent_id": "agent-1",
                "version": 1,
                "tenant_id": "tenant-a",
                "config": CONFIG_JSON,
                "change": "created",
                "changed": [
                    "max_steps",
                    "max_tool_calls",
                    "model",
                    "name",
                    "system_prompt",
                    "tools",
                ],
                "event_id": "evt-1",
                "recorded_at": T,
            },
        ),
        Upsert(
            "command_outcomes",
            ("command_id",),
            {
                "command_id": "cmd-1",
                "tenant_id": "tenant-a",
                "subject": "agent-1",
                "outcome": "accepted",
                "code": None,
                "detail": None,
                "recorded_at": T,
            },
        ),
        Notify("command:cmd-1"),
    ]


def lifecycle(agent_id: str) -> list[AgentFact]:
    return [
        events.AgentCreated(agent_id=agent_id, version=1, config=CONFIG),
        events.AgentUpdated(agent_id=agent_id, version=2, config=UPDATED, changed=["model"]),
        events.AgentDisabled(agent_id=agent_id, version=3),
    ]


def states(facts: list[AgentFact]) -> list[Agent | None]:
    """The agent after each fact, by ``evolve``."""
    agent: Agent | None = None
    after = []
    for fact in facts:
        agent = evolve(agent, fact)
        after.append(agent)
    return after


def test_evolve_follows_an_agent_from_creation_to_disabling() -> None:
    assert states(lifecycle("agent-1")) == [
        Agent(agent_id="agent-1", version=1, config=CONFIG, status=AgentStatus.ACTIVE),
        Agent(agent_id="agent-1", version=2, config=UPDATED, status=AgentStatus.ACTIVE),
        Agent(agent_id="agent-1", version=3, config=UPDATED, status=AgentStatus.DISABLED),
    ]


def test_evolve_knows_no_agent_that_was_never_created() -> None:
    _created, updated, disabled = lifecycle("agent-1")

    assert evolve(None, updated) is None
    assert evolve(None, disabled) is None


def stored_state(agent: Agent | None) -> Agent | None:
    """The agent state a row (or any agent value) holds, as the type ``evolve`` returns
    from nothing: an ``AgentRow``'s other columns left out, and text as Postgres keeps it
    (a NUL or a lone surrogate becomes U+FFFD, in live tables and rebuilds alike)."""
    return None if agent is None else Agent.model_validate(storable(agent.model_dump()))


async def apply_one(store: ProjectionStore, log: Log, tenant_id: str, fact: AgentFact) -> None:
    await store.apply([log.append(envelope(fact, source=SOURCE, tenant_id=tenant_id))])


async def test_the_fold_stores_the_state_evolve_gives(
    store: ProjectionStore, unscoped: Database
) -> None:
    facts = lifecycle(f"agent-{uuid.uuid4().hex[:8]}")
    log = Log()
    stored = []
    for fact in facts:
        await apply_one(store, log, "tenant-a", fact)
        stored.append(stored_state(await agents.agent(unscoped, "tenant-a", fact.agent_id)))

    assert stored == states(facts)
    assert [s.status for s in stored if s is not None] == ["active", "active", "disabled"]


@st.composite
def agent_histories(draw: st.DrawFn) -> list[AgentFact]:
    """Facts about one agent: maybe updates before it exists (neither side makes an agent
    of them), then its creation, then updates and disablings, each a version on. Never a
    second creation: the command handler rejects one (``AGENT_EXISTS``)."""
    agent_id = f"agent-{uuid.uuid4().hex[:8]}"
    kinds = draw(st.lists(st.sampled_from(["update", "disable"]), max_size=5))
    before = draw(st.integers(0, 2))
    facts: list[AgentFact] = []
    for n, kind in enumerate(["update"] * before + ["create"] + kinds):
        version = n - before + 1
        if kind == "create":
            facts.append(events.AgentCreated(agent_id=agent_id, config=draw(configs)))
        elif kind == "update":
            config, changed = draw(configs), draw(st.lists(st.sampled_from(sorted(CONFIG_JSON))))
            facts.append(
                events.AgentUpdated(
                    agent_id=agent_id, version=version, config=config, changed=changed
                )
            )
        else:
            facts.append(events.AgentDisabled(agent_id=agent_id, version=version))
    return facts


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(agent_histories())
async def test_after_every_fact_the_stored_agent_is_what_evolve_gives(
    store: ProjectionStore, unscoped: Database, facts: list[AgentFact]
) -> None:
    # One schema for every example: each example is its own agent.
    log = Log()
    expected: Agent | None = None
    for fact in facts:
        before = await agents.agent(unscoped, "tenant-a", fact.agent_id)
        await apply_one(store, log, "tenant-a", fact)
        after = await agents.agent(unscoped, "tenant-a", fact.agent_id)
        expected = evolve(expected, fact)

        assert stored_state(after) == stored_state(expected), fact
        # The command handler evolves the row it read, before the fold has run.
        assert stored_state(evolve(before, fact)) == stored_state(expected), fact
