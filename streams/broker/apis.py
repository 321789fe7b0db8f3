"""One handler per Kafka API. Each takes the decoded request and returns the response
as plain values (see codec.build), or None when no response is due (acks=0)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from .codec import RequestFrame
from .groups import GroupCoordinator, GroupState, JoinResult
from .offsets import CommittedOffset, OffsetStore
from .producers import ProduceError
from .records import CONTROL_FLAG, TRANSACTIONAL_FLAG, CorruptBatchError, iter_batches
from .state import BrokerMeta
from .topics import TOPIC_CONFIGS, Partition, Topic, TopicError, TopicRegistry

log = logging.getLogger(__name__)

NODE_ID = 0
_NO_AUTHORIZED_OPERATIONS = -(2**31)
_MAX_OFFSET_METADATA = 4096
# DescribeConfigs resource types and config sources, as numbered by Kafka.
_RESOURCE_TOPIC = 2
_RESOURCE_BROKER = 4
_SOURCE_TOPIC = 1
_SOURCE_STATIC_BROKER = 4
_SOURCE_DEFAULT = 5
_CONFIG_TYPE_STRING = 2
_CONFIG_TYPE_INT = 3
_CONFIG_TYPE_LONG = 5

# API key -> (min version, max version) this broker implements.
SUPPORTED_APIS: dict[int, tuple[int, int]] = {
    0: (3, 9),  # Produce
    1: (4, 12),  # Fetch (13+ names topics by id)
    2: (1, 7),  # ListOffsets
    3: (1, 12),  # Metadata
    8: (2, 8),  # OffsetCommit
    9: (1, 7),  # OffsetFetch (8+ batches groups)
    10: (0, 3),  # FindCoordinator (4+ batches keys)
    11: (0, 8),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 5),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    18: (0, 3),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics
    22: (0, 4),  # InitProducerId
    32: (1, 4),  # DescribeConfigs
}
API_VERSIONS_KEY = 18

Response = dict[str, Any] | None
Handler = Callable[[RequestFrame, "Connection"], Awaitable[Response]]


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


class BrokerApis:
    """The broker's request handlers over its state: topics, groups, offsets, metadata."""

    def __init__(
        self,
        settings: ApiSettings,
        topics: TopicRegistry,
        coordinator: GroupCoordinator,
        offsets: OffsetStore,
        meta: BrokerMeta,
        on_append: Callable[[Partition, int, int], None],
        on_read: Callable[[str, int, int], None],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.coordinator = coordinator
        self.offsets = offsets
        self.meta = meta
        self._on_append = on_append
        self._on_read = on_read
        self.stopping = False
        self.handlers: dict[int, Handler] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            8: self.offset_commit,
            9: self.offset_fetch,
            10: self.find_coordinator,
            11: self.join_group,
            12: self.heartbeat,
            13: self.leave_group,
            14: self.sync_group,
            15: self.describe_groups,
            16: self.list_groups,
            18: self.api_versions,
            19: self.create_topics,
            20: self.delete_topics,
            22: self.init_producer_id,
            32: self.describe_configs,
        }

    # -- versions and metadata -------------------------------------------------------

    @staticmethod
    def api_versions_body(error: ErrorCode = ErrorCode.none) -> dict[str, Any]:
        return {
            "error_code": error,
            "api_keys": [
                {"api_key": key, "min_version": low, "max_version": high}
                for key, (low, high) in sorted(SUPPORTED_APIS.items())
            ],
            "throttle_time": 0,
        }

    async def api_versions(self, request: RequestFrame, conn: Connection) -> Response:
        return self.api_versions_body()

    def _broker(self) -> dict[str, Any]:
        return {
            "node_id": NODE_ID,
            "host": self.settings.advertised_host,
            "port": self.settings.port,
            "rack": None,
        }

    async def metadata(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        allow_create = getattr(body, "allow_auto_topic_creation", True)
        if body.topics is None:
            wanted: list[tuple[str | None, Any]] = [(t.name, None) for t in self.topics]
        else:
            wanted = [(t.name, getattr(t, "topic_id", None)) for t in body.topics]
        topics = []
        for name, topic_id in wanted:
            topic = self._lookup(name, topic_id)
            if topic is None and name and allow_create and self.settings.auto_create_topics:
                topic = self._auto_create(name)
            topics.append(self._topic_metadata(name, topic_id, topic))
        return {
            "throttle_time": 0,
            "brokers": [self._broker()],
            "cluster_id": self.meta.cluster_id,
            "controller_id": NODE_ID,
            "topics": topics,
        }

    def _lookup(self, name: str | None, topic_id: Any) -> Topic | None:
        if name:
            return self.topics.get(name)
        if topic_id is not None and topic_id.int != 0:
            return self.topics.by_id(topic_id)
        return None

    def _auto_create(self, name: str) -> Topic | None:
        try:
            topic = self.topics.create(name, self.settings.default_partitions, {})
        except TopicError:
            return None
        log.info("auto-created topic", extra={"topic": name})
        return topic

    def _topic_metadata(
        self, name: str | None, topic_id: Any, topic: Topic | None
    ) -> dict[str, Any]:
        if topic is None:
            if name is None:
                error = ErrorCode.unknown_topic_id
            elif _valid_name(name):
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = ErrorCode.invalid_topic_exception
            return {"error_code": error, "name": name, "topic_id": topic_id, "partitions": []}
        return {
            "error_code": ErrorCode.none,
            "name": topic.name,
            "topic_id": topic.topic_id,
            "is_internal": False,
            "partitions": [
                {
                    "error_code": ErrorCode.none,
                    "partition_index": p.index,
                    "leader_id": NODE_ID,
                    "leader_epoch": 0,
                    "replica_nodes": [NODE_ID],
                    "isr_nodes": [NODE_ID],
                    "offline_replicas": [],
                }
                for p in topic.partitions
            ],
            "topic_authorized_operations": _NO_AUTHORIZED_OPERATIONS,
        }

    # -- produce and fetch -----------------------------------------------------------

    async def produce(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        touched: list[Partition] = []
        responses = []
        for topic_data in body.topic_data:
            results = []
            for data in topic_data.partition_data:
                if body.acks not in (-1, 0, 1):
                    result = _produce_error(data.index, ErrorCode.invalid_required_acks, "acks")
                elif body.transactional_id is not None:
                    result = _produce_error(
                        data.index, ErrorCode.invalid_request, "transactions are not supported"
                    )
                else:
                    result = self._append(topic_data.name, data.index, data.records, touched)
                results.append(result)
            responses.append({"name": topic_data.name, "partition_responses": results})
        if self.settings.fsync_always and touched:
            await asyncio.to_thread(_flush_all, touched)
        for partition in touched:
            partition.notify()
        if body.acks == 0:
            return None
        return {"responses": responses, "throttle_time": 0}

    def _append(
        self, topic: str, index: int, records: bytes | None, touched: list[Partition]
    ) -> dict[str, Any]:
        partition = self.topics.partition(topic, index)
        if partition is None:
            return _produce_error(index, ErrorCode.unknown_topic_or_partition, "unknown partition")
        plog = partition.log
        if not records:
            return _produce_error(index, ErrorCode.corrupt_message, "empty record set")
        data = bytearray(records)
        try:
            headers = list(iter_batches(data))
        except CorruptBatchError as exc:
            log.warning(
                "rejected corrupt batch",
                extra={"topic": topic, "partition": index, "reason": str(exc)},
            )
            return _produce_error(index, ErrorCode.corrupt_message, str(exc))
        try:
            if len(headers) > 1 and any(h.producer_id >= 0 for _p, h in headers):
                raise ProduceError(
                    ErrorCode.invalid_record,
                    "an idempotent produce carries one batch per partition",
                )
            duplicate_of = None
            for _pos, header in headers:
                if header.size > plog.config.max_message_bytes:
                    raise ProduceError(
                        ErrorCode.message_too_large,
                        f"batch of {header.size} bytes exceeds max.message.bytes",
                    )
                if header.attributes & (TRANSACTIONAL_FLAG | CONTROL_FLAG):
                    raise ProduceError(
                        ErrorCode.invalid_record, "transactional batches are not supported"
                    )
                duplicate_of = plog.producers.check(header)
        except ProduceError as exc:
            return _produce_error(index, exc.code, str(exc))
        if duplicate_of is not None:
            base = duplicate_of
        else:
            base = plog.append(data, headers)
            records_in = sum(h.record_count for _p, h in headers)
            self._on_append(partition, len(data), records_in)
            touched.append(partition)
        return {
            "index": index,
            "error_code": ErrorCode.none,
            "base_offset": base,
            "log_start_offset": plog.log_start_offset,
        }

    async def fetch(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.max_wait.total_seconds()
        while True:
            responses, total, partitions, errors = self._read_fetch(body)
            remaining = deadline - loop.time()
            if total >= body.min_bytes or remaining <= 0 or errors or self.stopping:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            for partition in partitions:
                partition.waiters.add(waiter)
            try:
                await asyncio.wait([waiter], timeout=remaining)
            finally:
                for partition in partitions:
                    partition.waiters.discard(waiter)
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "session_id": 0,
            "responses": responses,
        }

    def _read_fetch(self, body: Any) -> tuple[list[dict[str, Any]], int, list[Partition], bool]:
        max_bytes = body.max_bytes if hasattr(body, "max_bytes") else 2**31 - 1
        total = 0
        errors = False
        partitions: list[Partition] = []
        responses = []
        for fetch_topic in body.topics:
            results = []
            for wanted in fetch_topic.partitions:
                partition = self.topics.partition(fetch_topic.topic, wanted.partition)
                if partition is None:
                    errors = True
                    results.append(
                        _fetch_result(wanted.partition, ErrorCode.unknown_topic_or_partition)
                    )
                    continue
                partitions.append(partition)
                plog = partition.log
                offset = wanted.fetch_offset
                start, end = plog.log_start_offset, plog.log_end_offset
                if not start <= offset <= end:
                    errors = True
                    results.append(
                        _fetch_result(wanted.partition, ErrorCode.offset_out_of_range, start, end)
                    )
                    continue
                records = b""
                if offset < end and total < max_bytes:
                    limit = min(wanted.partition_max_bytes, max_bytes - total)
                    records, count = plog.read(offset, limit, at_least_one=total == 0)
                    if records:
                        total += len(records)
                        self._on_read(fetch_topic.topic, len(records), count)
                results.append(_fetch_result(wanted.partition, ErrorCode.none, start, end, records))
            responses.append({"topic": fetch_topic.topic, "partitions": results})
        return responses, total, partitions, errors

    async def list_offsets(self, request: RequestFrame, conn: Connection) -> Response:
        topics = []
        for wanted_topic in request.body.topics:
            results = []
            for wanted in wanted_topic.partitions:
                partition = self.topics.partition(wanted_topic.name, wanted.partition_index)
                result: dict[str, Any] = {"partition_index": wanted.partition_index}
                if partition is None:
                    result |= {
                        "error_code": ErrorCode.unknown_topic_or_partition,
                        "timestamp": -1,
                        "offset": -1,
                        "leader_epoch": -1,
                    }
                else:
                    offset, timestamp = _offset_for(partition, wanted.timestamp)
                    result |= {
                        "error_code": ErrorCode.none,
                        "timestamp": timestamp,
                        "offset": offset,
                        "leader_epoch": 0,
                    }
                results.append(result)
            topics.append({"name": wanted_topic.name, "partitions": results})
        return {"throttle_time": 0, "topics": topics}

    # -- topics and configs ----------------------------------------------------------

    async def create_topics(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        results = []
        for wanted in body.topics:
            result: dict[str, Any] = {
                "name": wanted.name,
                "num_partitions": -1,
                "replication_factor": -1,
            }
            try:
                partitions = wanted.num_partitions
                if wanted.assignments:
                    if any(tuple(a.broker_ids) != (NODE_ID,) for a in wanted.assignments):
                        raise TopicError(
                            ErrorCode.invalid_replica_assignment,
                            f"this broker has a single node, id {NODE_ID}",
                        )
                    partitions = len(wanted.assignments)
                elif partitions == -1:
                    partitions = self.settings.default_partitions
                if wanted.replication_factor not in (-1, 1):
                    raise TopicError(
                        ErrorCode.invalid_replication_factor,
                        "replication factor must be 1 on a single-node broker",
                    )
                configs = {c.name: c.value for c in wanted.configs}
                topic = self.topics.create(
                    wanted.name, partitions, configs, validate_only=body.validate_only
                )
            except TopicError as exc:
                result |= {"error_code": exc.code, "error_message": str(exc)}
            else:
                result |= {
                    "error_code": ErrorCode.none,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                }
                if topic is not None:
                    log.info("created topic", extra={"topic": topic.name, "partitions": partitions})
                    result |= {
                        "topic_id": topic.topic_id,
                        "configs": [_config_entry(topic, name) for name in TOPIC_CONFIGS],
                    }
            results.append(result)
        return {"throttle_time": 0, "topics": results}

    async def delete_topics(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        if hasattr(body, "topic_names"):
            wanted = [(name, None) for name in body.topic_names]
        else:
            wanted = [(t.name, t.topic_id) for t in body.topics]
        responses = []
        for name, topic_id in wanted:
            topic = self._lookup(name, topic_id)
            result: dict[str, Any] = {"name": name, "topic_id": topic_id}
            if topic is None:
                error = (
                    ErrorCode.unknown_topic_id
                    if name is None
                    else ErrorCode.unknown_topic_or_partition
                )
                result |= {"error_code": error, "error_message": "unknown topic"}
            else:
                self.topics.delete(topic.name)
                self.offsets.delete_topic(topic.name)
                log.info("deleted topic", extra={"topic": topic.name})
                result |= {
                    "name": topic.name,
                    "topic_id": topic.topic_id,
                    "error_code": ErrorCode.none,
                }
            responses.append(result)
        return {"throttle_time": 0, "responses": responses}

    async def describe_configs(self, request: RequestFrame, conn: Connection) -> Response:
        results = []
        for resource in request.body.resources:
            keys = resource.configuration_keys
            result: dict[str, Any] = {
                "resource_type": resource.resource_type,
                "resource_name": resource.resource_name,
                "error_code": ErrorCode.none,
                "configs": [],
            }
            if resource.resource_type == _RESOURCE_TOPIC:
                topic = self.topics.get(resource.resource_name)
                if topic is None:
                    result |= {
                        "error_code": ErrorCode.unknown_topic_or_partition,
                        "error_message": "unknown topic",
                    }
                else:
                    result["configs"] = [
                        _config_entry(topic, name)
                        for name in TOPIC_CONFIGS
                        if keys is None or name in keys
                    ]
            elif resource.resource_type == _RESOURCE_BROKER:
                result["configs"] = [
                    {
                        "name": name,
                        "value": value,
                        "read_only": True,
                        "config_source": _SOURCE_STATIC_BROKER,
                        "is_sensitive": False,
                        "synonyms": [],
                        "config_type": _CONFIG_TYPE_STRING,
                    }
                    for name, value in self.settings.broker_configs.items()
                    if keys is None or name in keys
                ]
            else:
                result |= {
                    "error_code": ErrorCode.invalid_request,
                    "error_message": f"unsupported resource type {resource.resource_type}",
                }
            results.append(result)
        return {"throttle_time": 0, "results": results}

    async def init_producer_id(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        if body.transactional_id is not None:
            log.warning("refused transactional producer: transactions are not supported")
            return {
                "throttle_time": 0,
                "error_code": ErrorCode.invalid_request,
                "producer_id": -1,
                "producer_epoch": -1,
            }
        producer_id = getattr(body, "producer_id", -1)
        epoch = getattr(body, "producer_epoch", -1)
        if producer_id >= 0 and 0 <= epoch < 2**15 - 1:
            epoch += 1
        else:
            producer_id, epoch = self.meta.next_producer_id(), 0
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "producer_id": producer_id,
            "producer_epoch": epoch,
        }

    # -- consumer groups -------------------------------------------------------------

    async def find_coordinator(self, request: RequestFrame, conn: Connection) -> Response:
        if getattr(request.body, "key_type", 0) != 0:
            return {
                "throttle_time": 0,
                "error_code": ErrorCode.invalid_request,
                "error_message": "only group coordinators exist (no transactions)",
                "node_id": -1,
                "host": "",
                "port": -1,
            }
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "error_message": None,
            "node_id": NODE_ID,
            "host": self.settings.advertised_host,
            "port": self.settings.port,
        }

    async def join_group(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        session_ms = int(body.session_timeout.total_seconds() * 1000)
        rebalance = getattr(body, "rebalance_timeout", None)
        rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance else session_ms
        result: JoinResult = await self.coordinator.join(
            body.group_id,
            body.member_id,
            group_instance_id=getattr(body, "group_instance_id", None),
            protocol_type=body.protocol_type,
            protocols=[(p.name, p.metadata) for p in body.protocols],
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            client_id=request.client_id or "",
            client_host=conn.client_host,
            require_known_member_id=request.api_version >= 4,
        )
        return {
            "throttle_time": 0,
            "error_code": result.error,
            "generation_id": result.generation,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name,
            "leader": result.leader,
            "member_id": result.member_id,
            "members": [
                {"member_id": m, "group_instance_id": i, "metadata": meta}
                for m, i, meta in result.members
            ],
        }

    async def sync_group(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        result = await self.coordinator.sync(
            body.group_id,
            body.member_id,
            body.generation_id,
            {a.member_id: a.assignment for a in body.assignments},
            getattr(body, "protocol_type", None),
            getattr(body, "protocol_name", None),
        )
        return {
            "throttle_time": 0,
            "error_code": result.error,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name,
            "assignment": result.assignment,
        }

    async def heartbeat(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        error = self.coordinator.heartbeat(body.group_id, body.member_id, body.generation_id)
        return {"throttle_time": 0, "error_code": error}

    async def leave_group(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        if hasattr(body, "members"):
            ids = [m.member_id for m in body.members]
            errors = self.coordinator.leave(body.group_id, ids)
            return {
                "throttle_time": 0,
                "error_code": ErrorCode.none,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "error_code": e,
                    }
                    for m, e in zip(body.members, errors, strict=True)
                ],
            }
        (error,) = self.coordinator.leave(body.group_id, [body.member_id])
        return {"throttle_time": 0, "error_code": error}

    async def offset_commit(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        error = self.coordinator.check_commit(
            body.group_id, body.member_id, body.generation_id_or_member_epoch
        )
        commits: list[tuple[str, int, CommittedOffset]] = []
        topics = []
        for wanted_topic in body.topics:
            results = []
            for wanted in wanted_topic.partitions:
                partition_error = error
                if error is ErrorCode.none:
                    metadata = wanted.committed_metadata
                    if self.topics.partition(wanted_topic.name, wanted.partition_index) is None:
                        partition_error = ErrorCode.unknown_topic_or_partition
                    elif metadata is not None and len(metadata) > _MAX_OFFSET_METADATA:
                        partition_error = ErrorCode.offset_metadata_too_large
                    else:
                        epoch = getattr(wanted, "committed_leader_epoch", -1)
                        commits.append(
                            (
                                wanted_topic.name,
                                wanted.partition_index,
                                CommittedOffset(wanted.committed_offset, metadata, epoch),
                            )
                        )
                results.append(
                    {"partition_index": wanted.partition_index, "error_code": partition_error}
                )
            topics.append({"name": wanted_topic.name, "partitions": results})
        if commits:
            self.offsets.commit(body.group_id, commits)
        return {"throttle_time": 0, "topics": topics}

    async def offset_fetch(self, request: RequestFrame, conn: Connection) -> Response:
        body = request.body
        group = body.group_id
        if body.topics is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in self.offsets.partitions(group):
                wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {t.name: list(t.partition_indexes) for t in body.topics}
        topics = []
        for topic, partitions in wanted.items():
            results = []
            for index in partitions:
                committed = self.offsets.fetch(group, topic, index)
                results.append(
                    {
                        "partition_index": index,
                        "committed_offset": committed.offset if committed else -1,
                        "committed_leader_epoch": committed.leader_epoch if committed else -1,
                        "metadata": committed.metadata if committed else "",
                        "error_code": ErrorCode.none,
                    }
                )
            topics.append({"name": topic, "partitions": results})
        return {"throttle_time": 0, "topics": topics, "error_code": ErrorCode.none}

    async def describe_groups(self, request: RequestFrame, conn: Connection) -> Response:
        described = []
        for group_id in request.body.groups:
            group = self.coordinator.groups.get(group_id)
            if group is None:
                state = "Empty" if self.offsets.partitions(group_id) else "Dead"
                described.append(
                    {
                        "error_code": ErrorCode.none,
                        "group_id": group_id,
                        "group_state": state,
                        "protocol_type": "",
                        "protocol_data": "",
                        "members": [],
                        "authorized_operations": _NO_AUTHORIZED_OPERATIONS,
                    }
                )
                continue
            stable = group.state is GroupState.STABLE
            protocol = group.protocol_name or ""
            described.append(
                {
                    "error_code": ErrorCode.none,
                    "group_id": group_id,
                    "group_state": group.state.value,
                    "protocol_type": group.protocol_type or "",
                    "protocol_data": protocol,
                    "members": [
                        {
                            "member_id": m.member_id,
                            "group_instance_id": m.group_instance_id,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "member_metadata": m.metadata_for(protocol) if protocol else b"",
                            "member_assignment": m.assignment if stable else b"",
                        }
                        for m in group.members.values()
                    ],
                    "authorized_operations": _NO_AUTHORIZED_OPERATIONS,
                }
            )
        return {"throttle_time": 0, "groups": described}

    async def list_groups(self, request: RequestFrame, conn: Connection) -> Response:
        states_filter = set(getattr(request.body, "states_filter", None) or ())
        listed: dict[str, tuple[str, str]] = {
            group_id: ("", "Empty") for group_id in self.offsets.groups()
        }
        for group in self.coordinator.groups.values():
            if group.state is not GroupState.DEAD:
                listed[group.group_id] = (group.protocol_type or "", group.state.value)
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "groups": [
                {"group_id": g, "protocol_type": ptype, "group_state": state}
                for g, (ptype, state) in sorted(listed.items())
                if not states_filter or state in states_filter
            ],
        }


def _valid_name(name: str) -> bool:
    try:
        TopicRegistry.check_name(name)
    except TopicError:
        return False
    return True


def _flush_all(partitions: list[Partition]) -> None:
    for partition in partitions:
        partition.log.flush()


def _produce_error(index: int, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"index": index, "error_code": code, "base_offset": -1, "error_message": message}


def _fetch_result(
    index: int,
    error: ErrorCode,
    start: int = -1,
    end: int = -1,
    records: bytes = b"",
) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": error,
        "high_watermark": end,
        "last_stable_offset": end,
        "log_start_offset": start,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": records,
    }


_LATEST, _EARLIEST, _MAX_TIMESTAMP = -1, -2, -3


def _offset_for(partition: Partition, timestamp: int) -> tuple[int, int]:
    plog = partition.log
    if timestamp == _LATEST:
        return plog.log_end_offset, -1
    if timestamp == _EARLIEST:
        return plog.log_start_offset, -1
    if timestamp == _MAX_TIMESTAMP:
        return plog.max_timestamp()
    found = plog.offset_for_timestamp(timestamp)
    return found if found is not None else (-1, -1)


def _config_entry(topic: Topic, name: str) -> dict[str, Any]:
    spec = TOPIC_CONFIGS[name]
    return {
        "name": name,
        "value": topic.config(name),
        "read_only": False,
        "config_source": _SOURCE_TOPIC if name in topic.configs else _SOURCE_DEFAULT,
        "is_sensitive": False,
        "synonyms": [],
        "config_type": {"long": _CONFIG_TYPE_LONG, "int": _CONFIG_TYPE_INT}.get(
            spec.validate, _CONFIG_TYPE_STRING
        ),
    }
