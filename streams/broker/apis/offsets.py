"""OffsetCommit and OffsetFetch: group offsets, committed only by current members."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from ..offsets import CommittedOffset
from .context import ApiContext, Connection, Response

_MAX_OFFSET_METADATA = 4096


async def offset_commit(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    error = ctx.coordinator.check_commit(
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
                if ctx.topics.partition(wanted_topic.name, wanted.partition_index) is None:
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
        ctx.offsets.commit(body.group_id, commits)
    return {"throttle_time": 0, "topics": topics}


async def offset_fetch(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    body = request.body
    group = body.group_id
    if body.topics is None:
        wanted: dict[str, list[int]] = {}
        for topic, partition in ctx.offsets.partitions(group):
            wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in body.topics}
    topics = []
    for topic, partitions in wanted.items():
        results = []
        for index in partitions:
            committed = ctx.offsets.fetch(group, topic, index)
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
