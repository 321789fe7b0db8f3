"""The re-drives of dead letters: their folds as plain values, and against real Postgres
what an operator asked for, when, and where the record went."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest

from projections import dead_letters
from projections.billing_outcomes import notification
from projections.dead_letters import RedriveRow
from projections.ops import Notify, Update, Upsert, project
from schemas import billing

from .billing_models import BillingModels, billing_models, recorded
from .fold_context import CTX, T

TOPIC = "agentlog.usage"


@pytest.fixture
async def billing_db() -> AsyncIterator[BillingModels]:
    async with billing_models() as models:
        yield models


def asked(dead_letter: str, operator_id: str) -> billing.DeadLetterRedriveRequested:
    return billing.DeadLetterRedriveRequested(
        dead_letter=dead_letter, operator_id=operator_id, topic=TOPIC
    )


def redriven(dead_letter: str, partition: int, offset: int) -> billing.DeadLetterRedriven:
    return billing.DeadLetterRedriven(
        dead_letter=dead_letter, operator_id="op-1", topic=TOPIC, partition=partition, offset=offset
    )


def test_a_redrive_request_records_who_asked_for_which_dead_letter_and_when() -> None:
    assert project(asked("0:17", "op-1"), CTX) == [
        Upsert(
            "dead_letter_redrives",
            ("dead_letter",),
            {"dead_letter": "0:17", "operator_id": "op-1", "topic": TOPIC, "requested_at": T},
        )
    ]


def test_a_redrive_records_when_and_where_the_record_was_written_again() -> None:
    """And it is the accepted outcome of its request (the context's cause)."""
    outcome = {
        "command_id": CTX.causation_id,
        "tenant_id": CTX.tenant_id,
        "event_id": CTX.event_id,
        "accepted": True,
        "code": None,
        "detail": None,
        "version": None,
    }
    assert project(redriven("0:17", 2, 99), CTX) == [
        Upsert("billing_outcomes", ("command_id",), outcome),
        Notify(notification(CTX.causation_id)),
        Update(
            "dead_letter_redrives",
            {"dead_letter": "0:17"},
            {"redriven_at": T, "to_partition": 2, "to_offset": 99},
        ),
    ]


async def test_redrives_are_found_by_dead_letter_with_where_they_went(
    billing_db: BillingModels,
) -> None:
    t = [datetime.datetime(2026, 5, 1, 9, n, tzinfo=datetime.UTC) for n in range(4)]
    await billing_db.apply(
        recorded(asked("0:17", "op-1"), t[0]),
        recorded(asked("0:18", "op-2"), t[1]),
        recorded(redriven("0:17", 2, 99), t[2]),
        # Asked again (another operator's claim): the first request is the one kept.
        recorded(asked("0:17", "op-2"), t[3]),
    )

    found = await dead_letters.redrives(billing_db.db, ["0:17", "0:18", "0:19"])

    assert found == {
        "0:17": RedriveRow(
            dead_letter="0:17",
            operator_id="op-1",
            topic=TOPIC,
            requested_at=t[0],
            redriven_at=t[2],
            to_partition=2,
            to_offset=99,
        ),
        "0:18": RedriveRow(
            dead_letter="0:18",
            operator_id="op-2",
            topic=TOPIC,
            requested_at=t[1],
            redriven_at=None,
            to_partition=None,
            to_offset=None,
        ),
    }
    assert await dead_letters.redrives(billing_db.db, []) == {}
