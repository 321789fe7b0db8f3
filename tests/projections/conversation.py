"""One tenant's conversation as the log records it: a tenant with an API key and a tool,
an agent, a session and one turn that calls the tool and completes. Envelopes carry fixed
times, and a ``Log`` hands out offsets like a broker, so the rows they project can be
written out exactly."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import events
from schemas.envelope import Envelope, envelope
from streams.catalog import Catalog
from streams.handler import Item, Position

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
SOURCE = "/tests/projections"
CONFIG = events.AgentConfig(name="calculator", model="dev:echo", tools=["lookup"])
QUESTION = "What is 2 + 2?"
CATALOG = Catalog()  # no prefix: the topic names as the catalog defines them


class Log:
    """Offsets per topic partition, in the order envelopes are appended; every envelope
    goes to its catalog topic, on ``partition``."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def append(self, env: Envelope[Any], partition: int = 0) -> Item:
        topic = CATALOG.topic_for(type(env.data))
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        return env, Position(topic, partition, offset)

    def extend(self, envs: Iterable[Envelope[Any]], partition: int = 0) -> list[Item]:
        return [self.append(env, partition) for env in envs]


@dataclass(frozen=True)
class Ids:
    tenant_id: str
    key_hash: str
    tool_id: str
    agent_id: str
    session_id: str
    turn_id: str
    tool_call_id: str
    user_message_id: str
    answer_message_id: str

    @classmethod
    def new(cls, tag: str) -> Ids:
        u = uuid.uuid4().hex[:8]
        return cls(
            tenant_id=f"tenant-{tag}-{u}",
            key_hash=f"hash-{tag}-{u}",
            tool_id=f"tool-{tag}-{u}",
            agent_id=f"agent-{tag}-{u}",
            session_id=f"session-{tag}-{u}",
            turn_id=f"turn-{tag}-{u}",
            tool_call_id=f"call-{tag}-{u}",
            user_message_id=f"msg-user-{tag}-{u}",
            answer_message_id=f"msg-answer-{tag}-{u}",
        )


def noop(partition: int, offset: int, topic: str = CATALOG.events) -> Item:
    """A fact with no read model of its own, at a given position: it moves the stored
    position and changes no row."""
    data = events.TurnCancelRequested(session_id="session-1", turn_id="turn-1")
    return envelope(data, source=SOURCE, tenant_id="tenant-a"), Position(topic, partition, offset)


def tool_definition(ids: Ids) -> events.ToolDefinition:
    return events.ToolDefinition(tool_id=ids.tool_id, name="lookup", url="http://tools.test/lookup")


def conversation(ids: Ids, start: datetime.datetime = T0) -> dict[str, Envelope[Any]]:
    """The envelopes by step name, in log order; the n-th is dated ``start`` + n seconds."""
    s, t = ids.session_id, ids.turn_id
    tool = tool_definition(ids)

    tenant = envelope(
        events.TenantCreated(tenant_id=ids.tenant_id, display_name=f"Tenant {ids.tenant_id}"),
        source=SOURCE,
        tenant_id=ids.tenant_id,
    )
    key = tenant.follow(
        events.ApiKeyCreated(
            tenant_id=ids.tenant_id,
            key_id=f"key-{ids.tenant_id}",
            key_prefix="al_test",
            key_hash=ids.key_hash,
        ),
        step="first-key",
        source=SOURCE,
    )
    tool_registered = envelope(
        events.ToolRegistered(tenant_id=ids.tenant_id, tool=tool, secret_header_names=["X-Token"]),
        source=SOURCE,
        tenant_id=ids.tenant_id,
    )
    create_agent = envelope(
        events.AgentCreateRequested(agent_id=ids.agent_id, config=CONFIG),
        source=SOURCE,
        tenant_id=ids.tenant_id,
    )
    agent_created = create_agent.follow(
        events.AgentCreated(agent_id=ids.agent_id, version=1, config=CONFIG),
        step="decide",
        source=SOURCE,
    )
    create_session = envelope(
        events.SessionCreateRequested(session_id=s, agent_id=ids.agent_id),
        source=SOURCE,
        tenant_id=ids.tenant_id,
    )
    session_created = create_session.follow(
        events.SessionCreated(session_id=s, agent_id=ids.agent_id, metadata={"channel": "test"}),
        step="decide",
        source=SOURCE,
    )
    request = envelope(
        events.TurnRequested(session_id=s, turn_id=t, message=QUESTION),
        source=SOURCE,
        tenant_id=ids.tenant_id,
    )
    accepted = request.follow(
        events.TurnAccepted(
            session_id=s,
            turn_id=t,
            agent_id=ids.agent_id,
            agent_version=1,
            config=CONFIG,
            tools=[tool],
            history=[],
            message=QUESTION,
        ),
        step="decide",
        source=SOURCE,
    )
    started = accepted.follow(
        events.TurnStarted(session_id=s, turn_id=t), step="start", source=SOURCE
    )
    user_message = accepted.follow(
        events.MessageAppended(
            session_id=s,
            turn_id=t,
            message_id=ids.user_message_id,
            message=events.MessageValue(role="user", content=QUESTION),
        ),
        step="user-message",
        source=SOURCE,
    )
    call = accepted.follow(
        events.ToolCallRequested(
            session_id=s,
            turn_id=t,
            tool_call_id=ids.tool_call_id,
            step=1,
            tool="lookup",
            tool_id=ids.tool_id,
            url=tool.url,
            arguments={"q": "2+2"},
            timeout_s=5.0,
        ),
        step="tool-call-1",
        source=SOURCE,
    )
    call_done = call.follow(
        events.ToolCallCompleted(
            session_id=s,
            turn_id=t,
            tool_call_id=ids.tool_call_id,
            step=1,
            tool="lookup",
            status_code=200,
            result="4",
        ),
        step="result",
        source=SOURCE,
    )
    answer = accepted.follow(
        events.MessageAppended(
            session_id=s,
            turn_id=t,
            message_id=ids.answer_message_id,
            message=events.MessageValue(role="assistant", content="4"),
        ),
        step="answer",
        source=SOURCE,
    )
    completed = accepted.follow(
        events.TurnCompleted(
            session_id=s,
            turn_id=t,
            message_id=ids.answer_message_id,
            usage=events.UsageValue(input_tokens=12, output_tokens=3),
            steps=2,
        ),
        step="complete",
        source=SOURCE,
    )
    envs = {
        "tenant_created": tenant,
        "api_key_created": key,
        "tool_registered": tool_registered,
        "agent_create_requested": create_agent,
        "agent_created": agent_created,
        "session_create_requested": create_session,
        "session_created": session_created,
        "turn_requested": request,
        "turn_accepted": accepted,
        "turn_started": started,
        "user_message_appended": user_message,
        "tool_call_requested": call,
        "tool_call_completed": call_done,
        "answer_appended": answer,
        "turn_completed": completed,
    }
    return {
        step: env.at(start + datetime.timedelta(seconds=n))
        for n, (step, env) in enumerate(envs.items())
    }


def model_answers(ids: Ids, start: datetime.datetime = T0) -> list[Envelope[Any]]:
    """Two model calls of the conversation's turn in one minute, for the activity read
    model: the first asked for the tool, the second answered."""
    return [
        envelope(
            events.ModelCallCompleted(
                session_id=ids.session_id,
                turn_id=ids.turn_id,
                call_id=f"call-{ids.turn_id}-{step}",
                step=step,
                text=text,
                tool_calls=[],
                usage=events.UsageValue(input_tokens=8 * step, output_tokens=step),
                provider="dev",
                model="echo",
                requested_at=start,
            ),
            source=SOURCE,
            tenant_id=ids.tenant_id,
        ).at(start + datetime.timedelta(seconds=step))
        for step, text in ((1, ""), (2, "4"))
    ]
