"""The dead letters page: the dead-letter topic's records, newest first, and the
re-drive of one back to the topic it came from."""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from redis.exceptions import RedisError

from projections import dashboard, dead_letters
from schemas import billing
from schemas.billing import PLATFORM
from schemas.errors import ErrorCode

from ...connections import Gateway
from ...dashboard_store import REDRIVE_STALE
from ...dead_letters import DeadLetterNotFoundError
from ...deps import GatewayDep
from ...problems import ProblemError
from .access import DataOperator, PageOperator, StoreDep, require_dashboard_header, unavailable
from .rendering import PAGE_SIZE, render

router = APIRouter()


def _dead_letter_cursor(before: str | None) -> dict[int, int] | None:
    """A page's key: ``<partition>:<offset>`` per partition, comma-separated."""
    if not before:
        return None
    try:
        pairs = [part.split(":") for part in before.split(",")]
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise ProblemError(
            ErrorCode.INVALID_CURSOR, "before: not a cursor this page gave"
        ) from None


async def dead_letters_data(gw: Gateway, before: str | None) -> dict[str, Any]:
    letters, cursor = await gw.dead_letters.page(_dead_letter_cursor(before), PAGE_SIZE)
    redriven = await dead_letters.redrives(gw.operator_billing_db, [d.id for d in letters])
    processed = await dashboard.command_outcomes(
        gw.operator_db, [d.record_id for d in letters if d.id in redriven and d.record_id]
    )
    items = []
    for letter in letters:
        redrive = redriven.get(letter.id)
        items.append(
            {
                **asdict(letter),
                "id": letter.id,
                "at": letter.at.isoformat(),
                "redrive": redrive.model_dump(mode="json") if redrive else None,
                "outcome": processed.get(letter.record_id) if redrive else None,
            }
        )
    next_ = ",".join(f"{p}:{o}" for p, o in sorted(cursor.items())) if cursor else None
    return {"items": items, "next": next_}


_Cursor = Annotated[str | None, Query(max_length=2000)]


@router.get("/dead-letters")
async def dead_letters_page(
    operator: PageOperator, gw: GatewayDep, before: _Cursor = None
) -> HTMLResponse:
    data = await dead_letters_data(gw, before)
    return render("dead_letters.html", page="dead-letters", data=data)


@router.get("/api/dead-letters")
async def dead_letters_json(operator: DataOperator, gw: GatewayDep, before: _Cursor = None) -> Any:
    return await dead_letters_data(gw, before)


# How long a re-drive that has not recorded where it went is taken to be under way.


@router.post("/dead-letters/{partition}/{offset}/redrive")
async def redrive(
    partition: int,
    offset: int,
    request: Request,
    operator: DataOperator,
    gw: GatewayDep,
    sessions: StoreDep,
) -> Any:
    """Write a dead letter again to its topic: audited (``DeadLetterRedriveRequested``)
    before, recorded (``DeadLetterRedriven``) after. Once per dead letter: the read
    models refuse one re-driven or asked for less than ``REDRIVE_STALE`` ago, and a
    claim in Redis refuses the second of two asked for at once (before either is
    folded). A re-drive whose gateway stopped half-way leaves its claim to lapse, so
    it may be asked for again once ``REDRIVE_STALE`` old: consumers drop a record they
    have seen, so writing it twice does no harm."""
    require_dashboard_header(request)
    letter = f"{partition}:{offset}"
    earlier = (await dead_letters.redrives(gw.operator_billing_db, [letter])).get(letter)
    if earlier is not None and (
        earlier.redriven_at is not None
        or datetime.datetime.now(datetime.UTC) - earlier.requested_at < REDRIVE_STALE
    ):
        raise ProblemError(ErrorCode.DEAD_LETTER_REDRIVEN, f"{letter} was re-driven already")
    try:
        record = await gw.dead_letters.record(partition, offset)
    except DeadLetterNotFoundError:
        raise ProblemError(ErrorCode.DEAD_LETTER_NOT_FOUND, f"no dead letter {letter}") from None
    try:
        claimed = await sessions.claim_redrive(letter, operator)
    except RedisError as exc:
        raise unavailable(exc) from None
    if not claimed:
        raise ProblemError(ErrorCode.DEAD_LETTER_REDRIVEN, f"{letter} is being re-driven, or was")
    origin = dict(record.headers).get("dlq.topic", b"").decode(errors="replace")
    try:
        asked = await gw.record(
            PLATFORM,
            billing.DeadLetterRedriveRequested(
                dead_letter=letter, operator_id=operator, topic=origin
            ),
        )
    except BaseException:
        # Nothing recorded: it may be asked for again at once.
        with contextlib.suppress(RedisError):
            await sessions.release_redrive(letter)
        raise
    topic, to_partition, to_offset = await gw.dead_letters.redrive(gw.publisher, record)
    done = billing.DeadLetterRedriven(
        dead_letter=letter,
        operator_id=operator,
        topic=topic,
        partition=to_partition,
        offset=to_offset,
    )
    await gw.publisher.publish(asked.follow(done, step="redriven", source=asked.source))
    with contextlib.suppress(RedisError):  # the read models will hold it re-driven too
        await sessions.finish_redrive(letter)
    return {"dead_letter": letter, "topic": topic, "partition": to_partition, "offset": to_offset}
