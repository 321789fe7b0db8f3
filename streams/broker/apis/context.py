"""What every API handler shares: the connection it serves, the broker's settings and
state, and the handler and response types the dispatch table is built from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..codec import RequestFrame
from ..groups import GroupCoordinator
from ..offsets import OffsetStore
from ..state import BrokerMeta
from ..topics import Partition, TopicRegistry

NODE_ID = 0
# Kafka's "not included" value for authorized-operations fields: there are no ACLs.
NO_AUTHORIZED_OPERATIONS = -(2**31)


@dataclass(frozen=True, slots=True)
class Connection:
    client_host: str


@dataclass(frozen=True, slots=True)
class ApiSettings:
    advertised_host: str
    port: int
    auto_create_topics: bool
    default_partitions: int
    fsync_always: bool
    broker_configs: dict[str, str]


@dataclass(slots=True)
class ApiContext:
    """The broker state the handlers read and change; ``stopping`` cuts long polls short."""

    settings: ApiSettings
    topics: TopicRegistry
    coordinator: GroupCoordinator
    offsets: OffsetStore
    meta: BrokerMeta
    on_append: Callable[[Partition, int, int], None]
    on_read: Callable[[str, int, int], None]
    stopping: bool = False


# A response as plain values (see codec.build), or None when none is due (acks=0).
Response = dict[str, Any] | None
Handler = Callable[[ApiContext, RequestFrame, Connection], Awaitable[Response]]
