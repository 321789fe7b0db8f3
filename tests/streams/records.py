"""Records as tests write them to a real broker: well-formed CloudEvents of our facts,
garbage, and events of a type no fact class has; and the helpers that write them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.envelope import Envelope, envelope, to_kafka
from schemas.events import AgentConfig, AgentCreated, TenantCreated
from streams.handler import Position

UNKNOWN_TYPE = "agentlog.nothing.never_defined.v1"


@dataclass(frozen=True)
class Raw:
    """One record as it is written: key, value, headers, and the partition it goes to."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int = 0


def tenant_created(n: int) -> Envelope[TenantCreated]:
    tenant = f"tenant-{uuid.uuid4().hex[:8]}-{n}"
    return envelope(
        TenantCreated(tenant_id=tenant, display_name=f"tenant {n}"),
        source="tests",
        tenant_id=tenant,
    )


def agent_created(n: int) -> Envelope[AgentCreated]:
    return envelope(
        AgentCreated(
            agent_id=f"agent-{uuid.uuid4().hex[:8]}-{n}",
            config=AgentConfig(name=f"agent {n}", model="dev"),
        ),
        source="tests",
        tenant_id="tenant-of-agents",
    )


def cloud_event(env: Envelope[Any], partition: int = 0) -> Raw:
    key, value, headers = to_kafka(env)
    return Raw(key, value, headers, partition)


def garbage() -> Raw:
    return Raw(b"junk", b"definitely not a cloudevent", [("origin", b"test")])


def of_unknown_type(env: Envelope[Any]) -> Raw:
    """A well-formed CloudEvent whose type no fact class has."""
    raw = cloud_event(env)
    headers = [(k, UNKNOWN_TYPE.encode() if k == "ce_type" else v) for k, v in raw.headers]
    return Raw(raw.key, raw.value, headers, raw.partition)


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: Sequence[Raw]) -> list[Position]:
    """Write records one after another; return where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        positions = []
        for r in records:
            meta = await producer.send_and_wait(
                topic, r.value, key=r.key, headers=r.headers, partition=r.partition
            )
            positions.append(Position(meta.topic, meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()
