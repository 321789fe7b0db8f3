"""Produce, Fetch and ListOffsets: appending to and reading from partition logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from ..producers import ProduceError
from ..records import CONTROL_FLAG, TRANSACTIONAL_FLAG, CorruptBatchError, iter_batches
from ..topics import Partition
from .context import ApiContext, Connection, Response

log = logging.getLogger(__name__)

_LATEST, _EARLIEST, _MAX_TIMESTAMP = -1, -2, -3


async def produce(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
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
                result = _append(ctx, topic_data.name, data.index, data.records, touched)
            results.append(result)
        responses.append({"name": topic_data.name, "partition_responses": results})
    if ctx.settings.fsync_always and touched:
        await asyncio.to_thread(_flush_all, touched)
    for partition in touched:
        partition.notify()
    if body.acks == 0:
        return None
    return {"responses": responses, "throttle_time": 0}


def _append(
    ctx: ApiContext, topic: str, index: int, records: bytes | None, touched: list[Partition]
) -> dict[str, Any]:
    partition = ctx.topics.partition(topic, index)
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
        ctx.on_append(partition, len(data), records_in)
        touched.append(partition)
    return {
        "index": index,
        "error_code": ErrorCode.none,
        "base_offset": base,
        "log_start_offset": plog.log_start_offset,
    }


async def fetch(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.max_wait.total_seconds()
    while True:
        responses, total, partitions, errors = _read_fetch(ctx, body)
        remaining = deadline - loop.time()
        if total >= body.min_bytes or remaining <= 0 or errors or ctx.stopping:
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


def _read_fetch(
    ctx: ApiContext, body: Any
) -> tuple[list[dict[str, Any]], int, list[Partition], bool]:
    max_bytes = body.max_bytes if hasattr(body, "max_bytes") else 2**31 - 1
    total = 0
    errors = False
    partitions: list[Partition] = []
    responses = []
    for fetch_topic in body.topics:
        results = []
        for wanted in fetch_topic.partitions:
            partition = ctx.topics.partition(fetch_topic.topic, wanted.partition)
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
                    ctx.on_read(fetch_topic.topic, len(records), count)
            results.append(_fetch_result(wanted.partition, ErrorCode.none, start, end, records))
        responses.append({"topic": fetch_topic.topic, "partitions": results})
    return responses, total, partitions, errors


async def list_offsets(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    topics = []
    for wanted_topic in request.body.topics:
        results = []
        for wanted in wanted_topic.partitions:
            partition = ctx.topics.partition(wanted_topic.name, wanted.partition_index)
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
