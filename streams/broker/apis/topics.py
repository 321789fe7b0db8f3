"""Metadata, CreateTopics, DeleteTopics and DescribeConfigs: the topic catalog."""

from __future__ import annotations

import logging
from typing import Any

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from ..topics import TOPIC_CONFIGS, Topic, TopicError, TopicRegistry
from .context import NO_AUTHORIZED_OPERATIONS, NODE_ID, ApiContext, Connection, Response

log = logging.getLogger(__name__)

# DescribeConfigs resource types and config sources, as numbered by Kafka.
_RESOURCE_TOPIC = 2
_RESOURCE_BROKER = 4
_SOURCE_TOPIC = 1
_SOURCE_STATIC_BROKER = 4
_SOURCE_DEFAULT = 5
_CONFIG_TYPE_STRING = 2
_CONFIG_TYPE_INT = 3
_CONFIG_TYPE_LONG = 5


async def metadata(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    allow_create = getattr(body, "allow_auto_topic_creation", True)
    if body.topics is None:
        wanted: list[tuple[str | None, Any]] = [(t.name, None) for t in ctx.topics]
    else:
        wanted = [(t.name, getattr(t, "topic_id", None)) for t in body.topics]
    topics = []
    for name, topic_id in wanted:
        topic = _lookup(ctx, name, topic_id)
        if topic is None and name and allow_create and ctx.settings.auto_create_topics:
            topic = _auto_create(ctx, name)
        topics.append(_topic_metadata(name, topic_id, topic))
    return {
        "throttle_time": 0,
        "brokers": [
            {
                "node_id": NODE_ID,
                "host": ctx.settings.advertised_host,
                "port": ctx.settings.port,
                "rack": None,
            }
        ],
        "cluster_id": ctx.meta.cluster_id,
        "controller_id": NODE_ID,
        "topics": topics,
    }


def _lookup(ctx: ApiContext, name: str | None, topic_id: Any) -> Topic | None:
    if name:
        return ctx.topics.get(name)
    if topic_id is not None and topic_id.int != 0:
        return ctx.topics.by_id(topic_id)
    return None


def _auto_create(ctx: ApiContext, name: str) -> Topic | None:
    try:
        topic = ctx.topics.create(name, ctx.settings.default_partitions, {})
    except TopicError:
        return None
    log.info("auto-created topic", extra={"topic": name})
    return topic


def _topic_metadata(name: str | None, topic_id: Any, topic: Topic | None) -> dict[str, Any]:
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
        "topic_authorized_operations": NO_AUTHORIZED_OPERATIONS,
    }


def _valid_name(name: str) -> bool:
    try:
        TopicRegistry.check_name(name)
    except TopicError:
        return False
    return True


async def create_topics(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
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
                partitions = ctx.settings.default_partitions
            if wanted.replication_factor not in (-1, 1):
                raise TopicError(
                    ErrorCode.invalid_replication_factor,
                    "replication factor must be 1 on a single-node broker",
                )
            configs = {c.name: c.value for c in wanted.configs}
            topic = ctx.topics.create(
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


async def delete_topics(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    if hasattr(body, "topic_names"):
        wanted = [(name, None) for name in body.topic_names]
    else:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    responses = []
    for name, topic_id in wanted:
        topic = _lookup(ctx, name, topic_id)
        result: dict[str, Any] = {"name": name, "topic_id": topic_id}
        if topic is None:
            error = (
                ErrorCode.unknown_topic_id if name is None else ErrorCode.unknown_topic_or_partition
            )
            result |= {"error_code": error, "error_message": "unknown topic"}
        else:
            ctx.topics.delete(topic.name)
            ctx.offsets.delete_topic(topic.name)
            log.info("deleted topic", extra={"topic": topic.name})
            result |= {
                "name": topic.name,
                "topic_id": topic.topic_id,
                "error_code": ErrorCode.none,
            }
        responses.append(result)
    return {"throttle_time": 0, "responses": responses}


async def describe_configs(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
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
            topic = ctx.topics.get(resource.resource_name)
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
                for name, value in ctx.settings.broker_configs.items()
                if keys is None or name in keys
            ]
        else:
            result |= {
                "error_code": ErrorCode.invalid_request,
                "error_message": f"unsupported resource type {resource.resource_type}",
            }
        results.append(result)
    return {"throttle_time": 0, "results": results}


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
