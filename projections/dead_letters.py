"""Re-drives of dead letters: which records of the dead-letter topic an operator had
written again to their topic, when, by whom, and where they went. The dead letters
themselves are read from their topic (``gateway.dead_letters``), which keeps them a
week."""

from __future__ import annotations

import datetime

from schemas import billing

from .ops import Context, Op, Update, Upsert, folds
from .rows import ALL_TENANTS, Reader, Row


class RedriveRow(Row):
    dead_letter: str
    operator_id: str
    topic: str
    requested_at: datetime.datetime
    redriven_at: datetime.datetime | None
    to_partition: int | None
    to_offset: int | None


@folds(billing.DeadLetterRedriveRequested)
def _requested(data: billing.DeadLetterRedriveRequested, ctx: Context) -> list[Op]:
    row = {
        "dead_letter": data.dead_letter,
        "operator_id": data.operator_id,
        "topic": data.topic,
        "requested_at": ctx.time,
    }
    return [Upsert("dead_letter_redrives", ("dead_letter",), row)]


@folds(billing.DeadLetterRedriven)
def _redriven(data: billing.DeadLetterRedriven, ctx: Context) -> list[Op]:
    values = {"redriven_at": ctx.time, "to_partition": data.partition, "to_offset": data.offset}
    return [Update("dead_letter_redrives", {"dead_letter": data.dead_letter}, values)]


async def redrives(billing_db: Reader, dead_letters: list[str]) -> dict[str, RedriveRow]:
    """The re-drives of the given dead letters (``<partition>:<offset>``), by dead letter."""
    rows = await billing_db.rows(
        RedriveRow,
        ALL_TENANTS,
        "SELECT * FROM {s}.dead_letter_redrives WHERE dead_letter = ANY(%s)",
        dead_letters,
    )
    return {r.dead_letter: r for r in rows}
