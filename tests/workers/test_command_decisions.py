"""The command handler's pure decisions: each command against the state it keeps in
memory, to the fact recorded as its outcome. State is given as plain values."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from projections.agent_state import Agent, AgentStatus
from projections.conversations import Conversation
from schemas import events
from schemas.base import Fact
from workers.command_decisions import (
    TurnLimits,
    cancel_turn,
    create_agent,
    create_key,
    create_session,
    disable_agent,
    history_window,
    register_tool,
    request_turn,
    revoke_key,
    unprocessable,
    update_agent,
)

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)

CONFIG = events.AgentConfig(
    name="helper", model="m-1", system_prompt="Be brief.", tools=["weather"], max_steps=4
)
KNOWN_TOOLS = {"weather", "clock"}


def agent_row(
    status: AgentStatus = AgentStatus.ACTIVE, version: int = 3, config: events.AgentConfig = CONFIG
) -> Agent:
    return Agent(agent_id="a-1", version=version, config=config, status=status)


def rejected_agent(code: str, detail: str) -> events.AgentCommandRejected:
    return events.AgentCommandRejected(agent_id="a-1", command_id="", code=code, detail=detail)


# -- agents ----------------------------------------------------------------------------


def create(config: events.AgentConfig = CONFIG) -> events.AgentCreateRequested:
    return events.AgentCreateRequested(agent_id="a-1", config=config)


def test_a_new_agent_is_created_at_version_one() -> None:
    assert create_agent(create(), None, KNOWN_TOOLS) == events.AgentCreated(
        agent_id="a-1", version=1, config=CONFIG
    )


def test_an_agent_id_in_use_is_not_created_again() -> None:
    assert create_agent(create(), agent_row(), KNOWN_TOOLS) == rejected_agent(
        "AGENT_EXISTS", "agent a-1 already exists"
    )


def test_an_agent_may_only_allow_registered_tools() -> None:
    config = CONFIG.model_copy(update={"tools": ["weather", "shell", "files"]})

    assert create_agent(create(config), None, KNOWN_TOOLS) == rejected_agent(
        "TOOL_UNKNOWN", "unknown tools: files, shell"
    )


def update(**changes: Any) -> events.AgentUpdateRequested:
    return events.AgentUpdateRequested(agent_id="a-1", changes=changes)


def test_an_update_merges_the_changes_and_bumps_the_version() -> None:
    outcome = update_agent(update(tools=["clock"], max_steps=6), agent_row(version=3), KNOWN_TOOLS)

    assert outcome == events.AgentUpdated(
        agent_id="a-1",
        version=4,
        config=CONFIG.model_copy(update={"tools": ["clock"], "max_steps": 6}),
        changed=["max_steps", "tools"],
    )


def test_an_update_of_a_missing_agent_is_rejected() -> None:
    assert update_agent(update(max_steps=6), None, KNOWN_TOOLS) == rejected_agent(
        "AGENT_NOT_FOUND", "no agent a-1"
    )


def test_a_disabled_agent_cannot_be_updated() -> None:
    assert update_agent(update(max_steps=6), agent_row(AgentStatus.DISABLED), KNOWN_TOOLS) == (
        rejected_agent("AGENT_DISABLED", "agent a-1 is disabled")
    )


def test_fields_outside_the_config_cannot_be_updated() -> None:
    outcome = update_agent(update(version=9, agent_id="a-2", name="x"), agent_row(), KNOWN_TOOLS)

    assert outcome == rejected_agent("VALIDATION_FAILED", "not updatable: agent_id, version")


def test_an_update_to_an_invalid_config_is_rejected() -> None:
    outcome = update_agent(update(max_steps="many"), agent_row(), KNOWN_TOOLS)

    assert isinstance(outcome, events.AgentCommandRejected)
    assert outcome.code == "VALIDATION_FAILED"
    assert "max_steps" in outcome.detail


def test_an_update_may_not_allow_unregistered_tools() -> None:
    outcome = update_agent(update(tools=["weather", "shell"]), agent_row(), KNOWN_TOOLS)

    assert outcome == rejected_agent("TOOL_UNKNOWN", "unknown tools: shell")


def test_disabling_an_agent_bumps_its_version() -> None:
    disable = events.AgentDisableRequested(agent_id="a-1")

    assert disable_agent(disable, agent_row(version=3)) == events.AgentDisabled(
        agent_id="a-1", version=4
    )


@pytest.mark.parametrize(
    ("existing", "code", "detail"),
    [
        (None, "AGENT_NOT_FOUND", "no agent a-1"),
        (agent_row(AgentStatus.DISABLED), "AGENT_DISABLED", "agent a-1 is disabled"),
    ],
)
def test_only_an_existing_active_agent_can_be_disabled(
    existing: Agent | None, code: str, detail: str
) -> None:
    disable = events.AgentDisableRequested(agent_id="a-1")

    assert disable_agent(disable, existing) == rejected_agent(code, detail)


# -- tools -----------------------------------------------------------------------------

WEATHER = events.ToolDefinition(tool_id="tool-2", name="weather", url="https://tools.test/w")
HELD = WEATHER.model_copy(update={"tool_id": "tool-1", "url": "https://tools.test/old"})


def register(replace: bool = False) -> events.ToolRegisterRequested:
    return events.ToolRegisterRequested(
        tenant_id="tenant-a", tool=WEATHER, secret_header_names=["X-Key"], replace=replace
    )


@pytest.mark.parametrize(("replace", "existing"), [(False, None), (True, None), (True, HELD)])
def test_a_free_name_is_registered_and_a_held_one_replaced_on_request(
    replace: bool, existing: events.ToolDefinition | None
) -> None:
    assert register_tool(register(replace), existing) == events.ToolRegistered(
        tenant_id="tenant-a", tool=WEATHER, secret_header_names=["X-Key"]
    )


def test_a_name_another_registration_holds_is_not_taken() -> None:
    assert register_tool(register(), HELD) == events.TenantCommandRejected(
        tenant_id="tenant-a",
        command_id="",
        code="TOOL_EXISTS",
        detail="a tool named weather exists already",
    )


# -- API keys --------------------------------------------------------------------------

ASK_KEY = events.ApiKeyCreateRequested(
    tenant_id="tenant-a", key_id="k-1", key_prefix="al_abcd", key_hash="h-1"
)
REVOKE = events.ApiKeyRevokeRequested(tenant_id="tenant-a", key_id="k-1")


def tenant_rejected(code: str, detail: str) -> events.TenantCommandRejected:
    return events.TenantCommandRejected(
        tenant_id="tenant-a", command_id="", code=code, detail=detail
    )


def test_a_key_is_created_with_its_hash_and_an_id_in_use_is_refused() -> None:
    assert create_key(ASK_KEY, exists=False) == events.ApiKeyCreated(
        tenant_id="tenant-a", key_id="k-1", key_prefix="al_abcd", key_hash="h-1"
    )
    assert create_key(ASK_KEY, exists=True) == tenant_rejected(
        "VALIDATION_FAILED", "key id k-1 is in use"
    )


@pytest.mark.parametrize(
    ("revoked", "outcome"),
    [
        (False, events.ApiKeyRevoked(tenant_id="tenant-a", key_id="k-1")),
        (True, tenant_rejected("KEY_REVOKED", "key k-1 is revoked already")),
        (None, tenant_rejected("KEY_NOT_FOUND", "no key k-1")),
    ],
)
def test_a_key_is_revoked_once(revoked: bool | None, outcome: Fact) -> None:
    assert revoke_key(REVOKE, revoked) == outcome


# -- sessions --------------------------------------------------------------------------

OPEN_SESSION = events.SessionCreateRequested(
    session_id="s-1", agent_id="a-1", metadata={"user": "u-7"}
)


def test_a_session_is_created_for_an_active_agent() -> None:
    assert create_session(OPEN_SESSION, False, agent_row()) == events.SessionCreated(
        session_id="s-1", agent_id="a-1", metadata={"user": "u-7"}
    )


@pytest.mark.parametrize(
    ("exists", "agent", "code", "detail"),
    [
        (True, agent_row(), "SESSION_EXISTS", "session s-1 already exists"),
        (False, None, "AGENT_NOT_FOUND", "no agent a-1"),
        (False, agent_row(AgentStatus.DISABLED), "AGENT_DISABLED", "agent a-1 is disabled"),
    ],
)
def test_a_session_needs_a_new_id_and_an_active_agent(
    exists: bool, agent: Agent | None, code: str, detail: str
) -> None:
    assert create_session(OPEN_SESSION, exists, agent) == events.SessionCommandRejected(
        session_id="s-1", command_id="", code=code, detail=detail
    )


# -- turns -----------------------------------------------------------------------------

WEATHER = events.ToolDefinition(
    tool_id="tool-weather", name="weather", url="http://tools.test/weather", timeout_s=5.0
)
CLOCK = events.ToolDefinition(tool_id="tool-clock", name="clock", url="http://tools.test/clock")
TOOLS = [CLOCK, WEATHER]  # the tenant's, by name


def message(role: str, content: str | None = None, **fields: Any) -> events.MessageValue:
    return events.MessageValue(role=role, content=content, **fields)  # type: ignore[arg-type]


HISTORY = (
    message("user", "Weather?"),
    message(
        "assistant",
        tool_calls=[events.ToolCallValue(id="c1", name="weather", arguments={"city": "Oslo"})],
    ),
    message("tool", "sunny", tool_call_id="c1"),
    message("assistant", "Sunny in Oslo."),
)


def conversation(
    active_turn: str | None = None, history: tuple[events.MessageValue, ...] = HISTORY
) -> Conversation:
    return Conversation(
        session_id="s-1",
        tenant_id="ten-1",
        agent_id="a-1",
        active_turn=active_turn,
        active_requested_at=None if active_turn is None else T0,
        history=tuple((f"m-{n}", m) for n, m in enumerate(history)),
    )


ACTIVE_AGENT = agent_row()


def turn(message: str = "And tomorrow?") -> events.TurnRequested:
    return events.TurnRequested(session_id="s-1", turn_id="t-2", message=message)


def decide_turn(
    cmd: events.TurnRequested | None = None,
    *,
    session: Conversation | None = None,
    agent: Agent = ACTIVE_AGENT,
    active_turn: str | None = None,
    max_message_bytes: int = 100,
    limits: TurnLimits | None = None,
) -> Fact:
    return request_turn(
        cmd or turn(),
        session or conversation(active_turn),
        agent,
        TOOLS,
        limits or TurnLimits(max_message_bytes, max_steps=64, max_tool_calls=256),
        T0,
    )


LIMITS = TurnLimits(max_message_bytes=100, max_steps=64, max_tool_calls=256)


def turn_rejected(code: str, detail: str, agent_id: str = "a-1") -> events.TurnRejected:
    """A rejection names the session's agent, when the session exists."""
    return events.TurnRejected(
        session_id="s-1", turn_id="t-2", code=code, detail=detail, agent_id=agent_id
    )


def test_an_accepted_turn_carries_the_config_allowlisted_tools_and_history_in_order() -> None:
    assert decide_turn() == events.TurnAccepted(
        session_id="s-1",
        turn_id="t-2",
        agent_id="a-1",
        agent_version=3,
        config=CONFIG,
        tools=[WEATHER],
        history=[
            events.MessageValue(role="user", content="Weather?"),
            events.MessageValue(
                role="assistant",
                tool_calls=[
                    events.ToolCallValue(id="c1", name="weather", arguments={"city": "Oslo"})
                ],
            ),
            events.MessageValue(role="tool", content="sunny", tool_call_id="c1"),
            events.MessageValue(role="assistant", content="Sunny in Oslo."),
        ],
        message="And tomorrow?",
        requested_at=T0,
    )


def test_the_platform_caps_an_agents_steps_and_tool_calls() -> None:
    capped = decide_turn(limits=TurnLimits(100, max_steps=2, max_tool_calls=1))
    roomy = decide_turn(limits=TurnLimits(100, max_steps=99, max_tool_calls=99))

    assert isinstance(capped, events.TurnAccepted)
    assert isinstance(roomy, events.TurnAccepted)
    assert (capped.config.max_steps, capped.config.max_tool_calls) == (2, 1)
    assert (roomy.config.max_steps, roomy.config.max_tool_calls) == (
        CONFIG.max_steps,
        CONFIG.max_tool_calls,
    )


def test_tools_keep_the_registry_order_and_skip_those_not_allowlisted() -> None:
    agent = agent_row(config=CONFIG.model_copy(update={"tools": ["weather", "clock", "gone"]}))

    accepted = decide_turn(agent=agent)

    assert isinstance(accepted, events.TurnAccepted)
    assert accepted.tools == [CLOCK, WEATHER]


def test_a_turn_in_a_missing_session_is_rejected() -> None:
    outcome = request_turn(turn(), None, ACTIVE_AGENT, TOOLS, LIMITS)

    assert outcome == turn_rejected("SESSION_NOT_FOUND", "no session s-1", agent_id="")


def test_a_turn_whose_agent_is_gone_is_rejected() -> None:
    outcome = request_turn(turn(), conversation(), None, TOOLS, LIMITS)

    assert outcome == turn_rejected("AGENT_NOT_FOUND", "no agent a-1")


def test_a_turn_for_a_disabled_agent_is_rejected() -> None:
    assert decide_turn(agent=agent_row(AgentStatus.DISABLED)) == turn_rejected(
        "AGENT_DISABLED", "agent a-1 is disabled"
    )


def test_the_message_limit_counts_utf8_bytes() -> None:
    exactly = "é" * 50  # 100 bytes in UTF-8
    assert isinstance(decide_turn(turn(exactly)), events.TurnAccepted)

    assert decide_turn(turn(exactly + "a")) == turn_rejected(
        "MESSAGE_TOO_LARGE", "message exceeds 100 bytes"
    )


def test_a_session_runs_one_turn_at_a_time() -> None:
    assert decide_turn(active_turn="t-1") == turn_rejected(
        "TURN_IN_PROGRESS", "turn t-1 is still running"
    )


def test_a_turn_already_accepted_is_accepted_again() -> None:
    outcome = decide_turn(active_turn="t-2")

    assert isinstance(outcome, events.TurnAccepted)
    assert outcome.turn_id == "t-2"


def test_a_too_large_message_is_reported_before_a_running_turn() -> None:
    outcome = decide_turn(turn("x" * 101), active_turn="t-1")

    assert outcome == turn_rejected("MESSAGE_TOO_LARGE", "message exceeds 100 bytes")


def test_the_history_window_keeps_recent_messages_from_a_user_message_on() -> None:
    roles = ["user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"]
    history = [message(role, f"m-{n}") for n, role in enumerate(roles)]

    def window(limit: int) -> list[str | None]:
        return [m.content for m in history_window(history, limit)]

    assert window(100) == [f"m-{n}" for n in range(8)]
    # The last five start at a tool answer and its call's assistant: both are left out.
    assert window(5) == ["m-4", "m-5", "m-6", "m-7"]
    assert window(3) == []
    assert window(0) == []


def test_an_accepted_turn_carries_at_most_the_history_window() -> None:
    accepted = decide_turn(
        limits=TurnLimits(100, max_steps=8, max_tool_calls=8, history_messages=1)
    )

    assert isinstance(accepted, events.TurnAccepted)
    assert accepted.history == []  # the last message is the assistant's: no user turn fits


# -- cancelling, and commands that could not be processed ------------------------------

CANCEL = events.TurnCancelRequested(session_id="s-1", turn_id="t-1")


def test_the_running_turn_can_be_cancelled() -> None:
    assert cancel_turn(CANCEL, conversation(active_turn="t-1")) == events.TurnCancelled(
        session_id="s-1", turn_id="t-1", agent_id="a-1", requested_at=T0
    )


@pytest.mark.parametrize(
    "session",
    [
        None,
        conversation(active_turn=None),  # finished, rejected or never accepted
        conversation(active_turn="t-0"),  # another turn of the session is running
    ],
)
def test_only_the_sessions_running_turn_can_be_cancelled(session: Conversation | None) -> None:
    assert cancel_turn(CANCEL, session) == events.SessionCommandRejected(
        session_id="s-1",
        command_id="",
        code="TURN_NOT_ACTIVE",
        detail="only a running turn can be cancelled",
    )


@pytest.mark.parametrize(
    ("command", "rejection"),
    [
        (turn(), events.TurnRejected),
        (OPEN_SESSION, events.SessionCommandRejected),
        (CANCEL, events.SessionCommandRejected),
        (create(), events.AgentCommandRejected),
        (update(max_steps=2), events.AgentCommandRejected),
        (events.AgentDisableRequested(agent_id="a-1"), events.AgentCommandRejected),
        (register(), events.TenantCommandRejected),
        (ASK_KEY, events.TenantCommandRejected),
        (REVOKE, events.TenantCommandRejected),
    ],
)
def test_a_command_that_could_not_be_processed_is_rejected(
    command: Fact, rejection: type[Fact]
) -> None:
    outcome = unprocessable(command, "cmd-9", "HANDLER_FAILED: ValueError")

    assert isinstance(outcome, rejection)
    assert outcome.code == "STEP_UNPROCESSABLE"  # type: ignore[attr-defined]
    assert "HANDLER_FAILED: ValueError" in outcome.detail  # type: ignore[attr-defined]
    assert getattr(outcome, "command_id", "cmd-9") == "cmd-9"


def test_a_fact_that_is_not_a_command_has_no_rejection() -> None:
    assert unprocessable(events.TurnStarted(session_id="s-1", turn_id="t-1"), "e-1", "x") is None
