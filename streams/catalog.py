"""The one catalog of topics: names, partitions and configs, and which facts go where.

Topics are created from here at start-up. Routing a fact whose class is not listed is
an error, never a silent default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas import events
from schemas.base import Fact

from .settings import Settings

_PREFIX = Settings().topic_prefix
FOREVER = "-1"
WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    purpose: str
    configs: dict[str, str] = field(default_factory=dict)


COMMANDS = TopicSpec(f"{_PREFIX}agentlog.commands", "requested commands", {"retention.ms": FOREVER})
EVENTS = TopicSpec(
    f"{_PREFIX}agentlog.events",
    "facts of tenants, agents, sessions and turns",
    {"retention.ms": FOREVER},
)
OUTPUT = TopicSpec(
    f"{_PREFIX}agentlog.output", "streamed agent output for subscribers", {"retention.ms": FOREVER}
)
USAGE = TopicSpec(
    f"{_PREFIX}agentlog.usage", "usage records for billing", {"retention.ms": FOREVER}
)
DEAD_LETTER = TopicSpec(
    f"{_PREFIX}agentlog.deadletter", "records no consumer could read", {"retention.ms": WEEK_MS}
)

TOPICS = (COMMANDS, EVENTS, OUTPUT, USAGE, DEAD_LETTER)

_COMMANDS = (
    events.AgentCreateRequested,
    events.AgentUpdateRequested,
    events.AgentDisableRequested,
    events.SessionCreateRequested,
    events.TurnRequested,
    events.TurnCancelRequested,
)
_OUTPUT = (events.OutputDelta, events.OutputMessage)
_USAGE = (events.UsageRecorded,)


def group_id(role: str) -> str:
    """The consumer group of a role; prefixed like the topics, so deployments sharing a
    cluster stay apart."""
    return f"{_PREFIX}agentlog.{role}"


class UnroutableFactError(LookupError):
    pass


def topic_for(fact: type[Fact]) -> TopicSpec:
    if fact in _COMMANDS:
        return COMMANDS
    if fact in _OUTPUT:
        return OUTPUT
    if fact in _USAGE:
        return USAGE
    if fact.__module__ == events.__name__ and fact.ce_type() in Fact.registry:
        return EVENTS
    raise UnroutableFactError(f"no topic for {fact.__name__}")


async def cluster_id(bootstrap_servers: str) -> str:
    """The Kafka cluster's id (the embedded broker keeps one per data directory)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_cluster()
    finally:
        await admin.close()
    return str(described["cluster_id"])


async def partitions_of(bootstrap_servers: str, topic: str) -> list[int]:
    """The partition ids of a topic, from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(int(p["partition"]) for p in described["partitions"])


async def ensure_topics(bootstrap_servers: str, partitions: int) -> None:
    """Create every catalog topic that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t.name, partitions, 1, topic_configs=t.configs)
            for t in TOPICS
            if t.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(missing)
    finally:
        await admin.close()
