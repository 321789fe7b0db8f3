"""The one table of what this broker speaks: API key -> handler and version range.

Dispatch and ApiVersions both read it, so an API is offered exactly when it is handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from . import groups, log, offsets, producers, topics
from .context import ApiContext, Connection, Handler, Response


@dataclass(frozen=True, slots=True)
class Api:
    handler: Handler
    min_version: int
    max_version: int

    def accepts(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


def api_versions_body(error: ErrorCode = ErrorCode.none) -> dict[str, Any]:
    """The ApiVersions answer; also sent, as v0, to a client asking in a newer version."""
    return {
        "error_code": error,
        "api_keys": [
            {
                "api_key": key,
                "min_version": APIS[key].min_version,
                "max_version": APIS[key].max_version,
            }
            for key in sorted(APIS)
        ],
        "throttle_time": 0,
    }


async def api_versions(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
    return api_versions_body()


API_VERSIONS_KEY = 18
APIS: dict[int, Api] = {
    0: Api(log.produce, 3, 9),
    1: Api(log.fetch, 4, 12),  # 13+ names topics by id
    2: Api(log.list_offsets, 1, 7),
    3: Api(topics.metadata, 1, 12),
    8: Api(offsets.offset_commit, 2, 8),
    9: Api(offsets.offset_fetch, 1, 7),  # 8+ batches groups
    10: Api(groups.find_coordinator, 0, 3),  # 4+ batches keys
    11: Api(groups.join_group, 0, 8),
    12: Api(groups.heartbeat, 0, 4),
    13: Api(groups.leave_group, 0, 5),
    14: Api(groups.sync_group, 0, 5),
    15: Api(groups.describe_groups, 0, 5),
    16: Api(groups.list_groups, 0, 4),
    API_VERSIONS_KEY: Api(api_versions, 0, 3),
    19: Api(topics.create_topics, 2, 7),
    20: Api(topics.delete_topics, 1, 6),
    22: Api(producers.init_producer_id, 0, 4),
    32: Api(topics.describe_configs, 1, 4),
}
