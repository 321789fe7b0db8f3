"""The command handler's runtime over the real broker: it decides on state folded from
the log (never on Postgres, which it reads once per assignment), sees within a batch
what it decided earlier in it, sees what other writers recorded before a command was
read, and does not decide a command whose outcome is in the log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition

from projections.database import Database
from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog
from streams.handler import Item, Position
from streams.publisher import Publisher
from streams.settings import Settings
from tests.e2e.conftest import DATABASE_URL
from tests.workers.deployment import deployment
from workers.command_decisions import TurnLimits
from workers.command_handler import CommandHandler

TENANT = "tenant-commands"
CONFIG = events.AgentConfig(name="helper", model="dev", tools=["clock"])
CLOCK = events.ToolDefinition(tool_id="tool-clock", name="clock", url="http://tools.test/clock")
LIMITS = TurnLimits(max_message_bytes=1024, max_steps=8, max_tool_calls=8)


class Platform:
    """One partition per topic, so that every session is this handler's."""

    def __init__(self, settings: Settings, publisher: Publisher, db: Database) -> None:
        self.settings, self.publisher, self.db = settings, publisher, db
        self.catalog = Catalog.from_settings(settings)
        self.handler = CommandHandler(settings.kafka_bootstrap_servers, self.catalog, db, LIMITS)
        self._offset = 0

    async def record(self, *facts: Fact) -> list[Envelope[Any]]:
        """Facts written to the log by other writers (the orchestrator, the gateway)."""
        envs = [envelope(f, source="/tests", tenant_id=TENANT) for f in facts]
        await self.publisher.publish_all(envs)
        return envs

    async def assign(self) -> None:
        await self.handler.on_assigned([TopicPartition(self.catalog.commands, 0)])
        await self.handler.handle_batch([])  # its state is loaded before a batch

    def commands(self, *data: Fact) -> list[Item]:
        """Commands as the consumer hands them over (not written to the log)."""
        items = []
        for fact in data:
            env = envelope(fact, source="/tests", tenant_id=TENANT)
            items.append((env, Position(self.catalog.commands, 0, self._offset)))
            self._offset += 1
        return items

    async def decide(self, *data: Fact) -> list[Any]:
        """The outcomes of one batch of these commands, written as the runtime writes
        them."""
        return await self.handled(self.commands(*data))

    async def handled(self, items: list[Item]) -> list[Any]:
        outputs = await self.handler.handle_batch(items)
        if outputs:
            self.handler.published(await self.publisher.publish_all(outputs))
        return [env.data for env in outputs]


@pytest.fixture
async def platform(bootstrap: str) -> AsyncIterator[Platform]:
    async with deployment(bootstrap, "cmd", topic_partitions=1) as (config, publisher):
        db = Database(DATABASE_URL, config.database_schema, pool_size=1)
        platform = Platform(config, publisher, db)
        await platform.record(
            events.ToolRegistered(tenant_id=TENANT, tool=CLOCK),
            events.AgentCreated(agent_id="a-1", config=CONFIG),
        )
        try:
            yield platform
        finally:
            await platform.handler.close()


async def test_a_turn_in_the_batch_that_opens_its_session_is_accepted(
    platform: Platform,
) -> None:
    await platform.assign()

    outcomes = await platform.decide(
        events.SessionCreateRequested(session_id="s-1", agent_id="a-1"),
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hello"),
    )

    assert [type(o) for o in outcomes] == [events.SessionCreated, events.TurnAccepted]
    assert outcomes[1].tools == [CLOCK]


async def test_a_turn_accepted_earlier_in_the_batch_keeps_the_session_busy(
    platform: Platform,
) -> None:
    await platform.assign()
    await platform.decide(events.SessionCreateRequested(session_id="s-1", agent_id="a-1"))

    outcomes = await platform.decide(
        *(
            events.TurnRequested(session_id="s-1", turn_id=f"t-{n}", message="hello")
            for n in range(3)
        )
    )

    assert [type(o) for o in outcomes] == [events.TurnAccepted] + [events.TurnRejected] * 2
    assert [o.code for o in outcomes[1:]] == ["TURN_IN_PROGRESS"] * 2
    assert all(o.detail == "turn t-0 is still running" for o in outcomes[1:])


async def test_what_others_recorded_before_a_command_was_read_is_decided_on(
    platform: Platform,
) -> None:
    """The turn's end and its messages (the orchestrator's) and an agent's update (its
    owner's), written a moment before the next command: the decision sees them."""
    await platform.assign()
    await platform.decide(events.SessionCreateRequested(session_id="s-1", agent_id="a-1"))
    (first,) = await platform.decide(
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hi")
    )
    assert isinstance(first, events.TurnAccepted)
    answer = events.MessageValue(role="assistant", content="hello")
    await platform.record(
        events.MessageAppended(
            session_id="s-1",
            turn_id="t-1",
            message_id="m-1",
            message=events.MessageValue(role="user", content="hi"),
        ),
        events.MessageAppended(session_id="s-1", turn_id="t-1", message_id="m-2", message=answer),
        events.TurnCompleted(
            session_id="s-1", turn_id="t-1", message_id="m-2", usage=events.UsageValue(), steps=1
        ),
        events.AgentUpdated(
            agent_id="a-1",
            version=2,
            config=CONFIG.model_copy(update={"system_prompt": "Be brief."}),
            changed=["system_prompt"],
        ),
    )

    (second,) = await platform.decide(
        events.TurnRequested(session_id="s-1", turn_id="t-2", message="again")
    )

    assert isinstance(second, events.TurnAccepted)
    assert second.history == [events.MessageValue(role="user", content="hi"), answer]
    assert (second.agent_version, second.config.system_prompt) == (2, "Be brief.")


async def test_a_tool_name_is_taken_by_the_first_registration_decided(
    platform: Platform,
) -> None:
    """Registrations of one name in one batch, and after a load: the first takes the
    name, a second is refused, a replacement takes it over; agents see the tools."""
    await platform.assign()
    first = CLOCK.model_copy(update={"tool_id": "tool-2", "name": "weather"})
    second = first.model_copy(update={"tool_id": "tool-3"})

    def register(tool: events.ToolDefinition, replace: bool = False) -> Fact:
        return events.ToolRegisterRequested(tenant_id=TENANT, tool=tool, replace=replace)

    outcomes = await platform.decide(register(first), register(second))
    assert [type(o) for o in outcomes] == [events.ToolRegistered, events.TenantCommandRejected]
    assert outcomes[1].code == "TOOL_EXISTS"

    await platform.assign()  # loaded again: the registration is folded from the log
    third = first.model_copy(update={"tool_id": "tool-4"})
    outcomes = await platform.decide(
        register(second),
        register(third, replace=True),
        events.AgentUpdateRequested(agent_id="a-1", changes={"tools": ["clock", "weather"]}),
    )
    assert [type(o) for o in outcomes] == [
        events.TenantCommandRejected,
        events.ToolRegistered,
        events.AgentUpdated,
    ]
    assert platform.handler.state.tools_of(TENANT) == [CLOCK, third]


async def test_a_key_is_revoked_once_and_only_if_the_tenant_has_it(platform: Platform) -> None:
    """A key created, then revoked twice in one batch and once after a load (the state
    folded from the log): one revocation; a key the tenant has not is not found."""
    await platform.assign()
    ask = events.ApiKeyCreateRequested(
        tenant_id=TENANT, key_id="k-1", key_prefix="al_", key_hash="h"
    )
    revoke = events.ApiKeyRevokeRequested(tenant_id=TENANT, key_id="k-1")
    outcomes = await platform.decide(ask, revoke, revoke)
    assert [type(o) for o in outcomes] == [
        events.ApiKeyCreated,
        events.ApiKeyRevoked,
        events.TenantCommandRejected,
    ]

    await platform.assign()
    outcomes = await platform.decide(
        revoke, events.ApiKeyRevokeRequested(tenant_id=TENANT, key_id="k-2")
    )
    assert [o.code for o in outcomes] == ["KEY_REVOKED", "KEY_NOT_FOUND"]


async def test_it_decides_every_command_with_its_database_closed(platform: Platform) -> None:
    await platform.assign()
    await platform.db.close()

    outcomes = await platform.decide(
        events.AgentCreateRequested(agent_id="a-2", config=CONFIG),
        events.AgentUpdateRequested(agent_id="a-2", changes={"max_steps": 3}),
        events.SessionCreateRequested(session_id="s-2", agent_id="a-2"),
        events.TurnRequested(session_id="s-2", turn_id="t-1", message="hi"),
        events.TurnCancelRequested(session_id="s-2", turn_id="t-1"),
        events.TurnRequested(session_id="s-2", turn_id="t-2", message="hi"),
        events.AgentDisableRequested(agent_id="a-2"),
        events.SessionCreateRequested(session_id="s-3", agent_id="a-2"),
        events.ToolRegisterRequested(tenant_id=TENANT, tool=CLOCK, replace=True),
        events.ApiKeyCreateRequested(tenant_id=TENANT, key_id="k-1", key_prefix="p", key_hash="h"),
        events.ApiKeyRevokeRequested(tenant_id=TENANT, key_id="k-1"),
    )

    assert [type(o) for o in outcomes] == [
        events.AgentCreated,
        events.AgentUpdated,
        events.SessionCreated,
        events.TurnAccepted,
        events.TurnCancelled,
        events.TurnAccepted,
        events.AgentDisabled,
        events.SessionCommandRejected,
        events.ToolRegistered,
        events.ApiKeyCreated,
        events.ApiKeyRevoked,
    ]
    assert outcomes[3].config.max_steps == 3
    assert outcomes[7].code == "AGENT_DISABLED"


async def test_a_command_whose_outcome_is_in_the_log_is_not_decided_again(
    platform: Platform,
) -> None:
    """A previous owner recorded the outcome and crashed before it committed the
    command: the command is handed over again, and passed over."""
    (command,) = await platform.record(
        events.SessionCreateRequested(session_id="s-1", agent_id="a-1")
    )
    await platform.publisher.publish_all(
        [
            command.follow(
                events.SessionCreated(session_id="s-1", agent_id="a-1"),
                step="outcome",
                source="/tests",
            )
        ]
    )
    await platform.assign()

    assert await platform.handled([(command, Position("c", 0, 0))]) == []
    (again,) = await platform.decide(
        events.SessionCreateRequested(session_id="s-1", agent_id="a-1")
    )
    assert again.code == "SESSION_EXISTS"


async def test_another_tenants_agent_and_session_are_not_found(platform: Platform) -> None:
    await platform.assign()
    await platform.decide(events.SessionCreateRequested(session_id="s-1", agent_id="a-1"))
    other = "tenant-other"

    async def decide_as_other(fact: Fact) -> Any:
        env = envelope(fact, source="/tests", tenant_id=other)
        (outcome,) = await platform.handled([(env, Position("c", 0, 99))])
        return outcome

    opened = await decide_as_other(events.SessionCreateRequested(session_id="s-9", agent_id="a-1"))
    turn = await decide_as_other(events.TurnRequested(session_id="s-1", turn_id="t-9", message="x"))
    assert (opened.code, turn.code) == ("AGENT_NOT_FOUND", "SESSION_NOT_FOUND")


async def test_a_batch_whose_outcomes_were_not_written_is_decided_again(
    platform: Platform,
) -> None:
    """Publishing the outcomes failed (a record too large, say): the runtime hands the
    commands over again, alone or together, and they are decided again, not passed
    over as decided."""
    await platform.assign()
    items = platform.commands(
        events.SessionCreateRequested(session_id="s-1", agent_id="a-1"),
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hi"),
    )
    first = [env.data for env in await platform.handler.handle_batch(items)]

    alone = await platform.handled(items[:1])
    again = await platform.handled(items)

    assert [type(o) for o in first] == [events.SessionCreated, events.TurnAccepted]
    assert alone == first[:1]
    assert again == first[1:]  # the session's creation is in the log now


async def test_a_handler_whose_follower_stopped_loads_its_state_again(
    platform: Platform,
) -> None:
    """The follower's reads ended (the broker went away mid-rebalance, say): the next
    batch loads the state again instead of failing, or deciding on what is stale."""
    await platform.assign()
    await platform.decide(events.SessionCreateRequested(session_id="s-1", agent_id="a-1"))
    await platform.handler._follower.stop()  # what a failed read leaves

    (turn,) = await platform.decide(
        events.TurnRequested(session_id="s-1", turn_id="t-1", message="hi")
    )

    assert isinstance(turn, events.TurnAccepted)
