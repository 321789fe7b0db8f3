"""The one catalog of topics: names, configs, and which facts go where (``TOPICS``).

Topics are created from here at start-up. Routing a fact whose class is not listed is
an error, never a silent default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import Field

from schemas import billing, billing_requests, events, usage
from schemas.base import Fact

from .settings import Settings

FOREVER = "-1"
WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the catalog defines it; ``name`` is before any deployment's prefix."""

    name: str
    purpose: str
    configs: dict[str, str] = field(default_factory=dict)


COMMANDS = TopicSpec("agentlog.commands", "requested commands", {"retention.ms": FOREVER})
EVENTS = TopicSpec(
    "agentlog.events", "facts of tenants, agents, sessions and turns", {"retention.ms": FOREVER}
)
OUTPUT = TopicSpec(
    "agentlog.output", "streamed agent output for subscribers", {"retention.ms": FOREVER}
)
USAGE = TopicSpec("agentlog.usage", "usage records for billing", {"retention.ms": FOREVER})
BILLING = TopicSpec(
    "agentlog.billing",
    "operators, price plans, plan assignments, invoice drafts and dead-letter re-drives,"
    " with the requests of the ones the billing decider decides",
    {"retention.ms": FOREVER},
)
DEAD_LETTER = TopicSpec(
    "agentlog.deadletter", "records no consumer could read", {"retention.ms": WEEK_MS}
)
# An effect worker's work: copies of the requests it performs, keyed like them (so with
# as many partitions as the events topic, a session's requests and results share a
# partition number). The events topic keeps the record; these copies spare each worker
# reading every fact of every turn for its few requests.
MODEL_CALLS = TopicSpec(
    "agentlog.model-calls",
    "copies of model call requests, for the model workers",
    {"retention.ms": WEEK_MS},
)
TOOL_CALLS = TopicSpec(
    "agentlog.tool-calls",
    "copies of tool call requests, for the tool workers",
    {"retention.ms": WEEK_MS},
)

SPECS = (COMMANDS, EVENTS, OUTPUT, USAGE, BILLING, DEAD_LETTER, MODEL_CALLS, TOOL_CALLS)

# Which topic each fact class is recorded on: a class is routed by this table alone,
# never by the module it is defined in, so moving a class moves nothing on the log.
# tests/streams/test_catalog.py fails on a registered fact with no topic here, and on an
# entry that is not a registered fact.
TOPICS: Mapping[type[Fact], TopicSpec] = {
    **dict.fromkeys(
        (
            events.AgentCreateRequested,
            events.AgentUpdateRequested,
            events.AgentDisableRequested,
            events.SessionCreateRequested,
            events.TurnRequested,
            events.TurnCancelRequested,
            events.ToolRegisterRequested,
            events.ApiKeyCreateRequested,
            events.ApiKeyRevokeRequested,
        ),
        COMMANDS,
    ),
    **dict.fromkeys(
        (
            events.TenantCreated,
            events.ApiKeyCreated,
            events.ApiKeyRevoked,
            events.ToolRegistered,
            events.TenantCommandRejected,
            events.AgentCreated,
            events.AgentUpdated,
            events.AgentDisabled,
            events.AgentCommandRejected,
            events.SessionCreated,
            events.SessionCommandRejected,
            events.TurnAccepted,
            events.TurnRejected,
            events.TurnStarted,
            events.TurnCompleted,
            events.TurnFailed,
            events.TurnCancelled,
            events.TurnStepUnprocessable,
            events.TurnDeadlinePassed,
            events.MessageAppended,
            events.ModelCallRequested,
            events.ModelCallCompleted,
            events.ModelCallFailed,
            events.ToolCallRequested,
            events.ToolCallCompleted,
            events.ToolCallFailed,
            events.ToolCallRejected,
        ),
        EVENTS,
    ),
    **dict.fromkeys((events.OutputDelta, events.OutputMessage), OUTPUT),
    **dict.fromkeys((usage.UsageRecordedV1, usage.UsageRecorded), USAGE),
    **dict.fromkeys(
        (
            billing.OperatorCreated,
            billing.PricePlanPublished,
            billing.TenantPlanAssigned,
            billing.TenantPlanWithdrawn,
            billing.InvoiceDraftRequested,
            billing.InvoiceDrafted,
            billing.InvoiceDraftRejected,
            # Re-drives are audited beside the billing facts (operators' acts, kept
            # forever, folded by the billing projector), not because of their module.
            billing.DeadLetterRedriveRequested,
            billing.DeadLetterRedriven,
            billing_requests.PricePlanPublishRequested,
            billing_requests.TenantPlanAssignRequested,
            billing_requests.TenantPlanWithdrawRequested,
            billing_requests.OperatorCreateRequested,
            billing_requests.BillingCommandRejected,
        ),
        BILLING,
    ),
}


# The facts also written, the same record, to a work topic.
COPIES: Mapping[type[Fact], TopicSpec] = {
    events.ModelCallRequested: MODEL_CALLS,
    events.ToolCallRequested: TOOL_CALLS,
}


class UnroutableFactError(LookupError):
    pass


def spec_for(fact: type[Fact]) -> TopicSpec:
    """The topic a fact class is recorded on; UnroutableFactError for a class ``TOPICS``
    does not list."""
    try:
        return TOPICS[fact]
    except KeyError:
        raise UnroutableFactError(f"no topic for {fact.__name__}") from None


def facts_on(topic: str) -> list[type[Fact]]:
    """The fact classes recorded on a topic (or copied to it), named with or without a
    deployment's prefix, in the order they were defined."""
    return [
        fact
        for fact in Fact.registry.values()
        if any(fact in specs and topic.endswith(specs[fact].name) for specs in (TOPICS, COPIES))
    ]


def named_union(facts: list[type[Fact]], title: str) -> Any:
    """The facts as one type named ``title`` (for a schema: a union of models is only
    documented whole under a name); ``Fact`` itself when there are none."""
    if not facts:
        return Fact
    union = Union[tuple(facts)] if len(facts) > 1 else facts[0]  # noqa: UP007
    return Annotated[union, Field(title=title)]


class Catalog:
    """The catalog's topics and consumer groups under one deployment's prefix, so that
    deployments (and test suites) sharing a cluster stay apart. Built from the settings
    a process runs with, never fixed at import."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.commands = self.name(COMMANDS)
        self.events = self.name(EVENTS)
        self.output = self.name(OUTPUT)
        self.usage = self.name(USAGE)
        self.billing = self.name(BILLING)
        self.dead_letter = self.name(DEAD_LETTER)
        self.model_calls = self.name(MODEL_CALLS)
        self.tool_calls = self.name(TOOL_CALLS)

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        return cls(settings.topic_prefix)

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.name}"

    def topic_for(self, fact: type[Fact]) -> str:
        return self.name(spec_for(fact))

    def topics_for(self, fact: type[Fact]) -> tuple[str, ...]:
        """Where a fact is written: its topic, then the work topic of its copy if any."""
        copy = COPIES.get(fact)
        home = self.topic_for(fact)
        return (home,) if copy is None else (home, self.name(copy))

    def work_topic(self, request: type[Fact]) -> str:
        """The work topic a request's copy is written to."""
        return self.name(COPIES[request])

    def group_id(self, role: str) -> str:
        """The consumer group of a role."""
        return f"{self.prefix}agentlog.{role}"


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


async def ensure_topics(bootstrap_servers: str, catalog: Catalog, partitions: int) -> None:
    """Create every catalog topic that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(catalog.name(spec), partitions, 1, topic_configs=spec.configs)
            for spec in SPECS
            if catalog.name(spec) not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(missing)
    finally:
        await admin.close()
