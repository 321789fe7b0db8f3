"""InitProducerId: ids and epochs for idempotent producers (transactions are refused)."""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode

from ..codec import RequestFrame
from .context import ApiContext, Connection, Response

log = logging.getLogger(__name__)


async def init_producer_id(ctx: ApiContext, request: RequestFrame, conn: Connection) -> Response:
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
        producer_id, epoch = ctx.meta.next_producer_id(), 0
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "producer_id": producer_id,
        "producer_epoch": epoch,
    }
