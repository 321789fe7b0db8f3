"""The dead letters page: the dead-letter topic's records, newest first, and the
re-drive of one back to the topic it came from."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from projections import dashboard, dead_letters
from schemas import billing
from schemas.billing import PLATFORM
from schemas.errors import ErrorCode
from streams.dead_letters import DeadLetterNotFoundError, origin

from ...commands import billing_decided
from ...connections import Gateway
from ...deps import GatewayDep
from ...problems import ProblemError
from .access import DataOperator, PageOperator, require_dashboard_header
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


@router.post("/dead-letters/{partition}/{offset}/redrive")
async def redrive(
    partition: int, offset: int, request: Request, operator: DataOperator, gw: GatewayDep
) -> Any:
    """Ask for a dead letter to be written again to its topic
    (``DeadLetterRedriveRequested``, the audit of who asked); the billing decider, its
    one writer, writes it back and records where (``DeadLetterRedriven``), or refuses
    one re-driven already. Answers with where it went, or 202 if the outcome is not
    projected in time."""
    require_dashboard_header(request)
    letter = f"{partition}:{offset}"
    try:
        record = await gw.dead_letters.record(partition, offset)
    except DeadLetterNotFoundError:
        raise ProblemError(ErrorCode.DEAD_LETTER_NOT_FOUND, f"no dead letter {letter}") from None
    asked = billing.DeadLetterRedriveRequested(
        dead_letter=letter, operator_id=operator, topic=origin(record)
    )
    env = await gw.record(PLATFORM, asked)
    location = f"/dashboard/api/dead-letters?before={partition}:{offset + 1}"
    await billing_decided(gw, env, location, dead_letter=letter)
    done = (await dead_letters.redrives(gw.operator_billing_db, [letter]))[letter]
    return {
        "dead_letter": letter,
        "topic": done.topic,
        "partition": done.to_partition,
        "offset": done.to_offset,
    }
