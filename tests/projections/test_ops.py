"""The root fold: every read model's folds of a fact, gathered; and the properties every
fold shares, over every fact the read models fold (plain values in, operations out)."""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Any

import pytest
from hypothesis import given, settings

from projections import activity
from projections.ops import Add, Context, Folds, Notify, Op, Update, Upsert, folds, project
from schemas import events
from schemas.base import Fact

from .conversation import CONFIG
from .fold_context import CTX
from .strategies import fact_strategies, facts_in_context


def test_facts_without_a_read_model_project_to_nothing() -> None:
    unprojected: list[Fact] = [
        events.AgentCreateRequested(agent_id="agent-1", config=CONFIG),
        events.TurnCancelRequested(session_id="session-1", turn_id="turn-1"),
        events.OutputDelta(
            session_id="session-1", turn_id="turn-1", call_id="c", index=0, text="4"
        ),
    ]

    assert [project(data, CTX) for data in unprojected] == [[], [], []]
    assert [folds.read_models(type(data)) for data in unprojected] == [[], [], []]


@pytest.mark.parametrize(
    ("fact", "read_models"),
    [
        (events.TurnAccepted, ["outcomes", "turns"]),
        (events.TurnRejected, ["activity", "outcomes", "turns"]),
        (events.TurnCancelled, ["activity", "outcomes", "turns"]),
        (events.AgentCreated, ["agents", "outcomes"]),
        (events.AgentDisabled, ["agents", "outcomes"]),
        (events.AgentCommandRejected, ["outcomes"]),
        (events.SessionCreated, ["outcomes", "sessions"]),
        (events.MessageAppended, ["sessions", "turns"]),
        (events.TurnCompleted, ["activity", "turns"]),
        (events.ModelCallCompleted, ["activity", "turns"]),
        (events.ApiKeyRevoked, ["outcomes", "tenants"]),
    ],
)
def test_the_root_fold_lists_the_read_models_that_fold_a_type(
    fact: type[Fact], read_models: list[str]
) -> None:
    assert folds.read_models(fact) == read_models


def test_folds_of_several_read_models_run_in_the_order_of_their_names() -> None:
    """Not in the order they registered: that is the order modules happened to be
    imported in (a read model importing another's statuses registers it first)."""
    registry = Folds()

    def fold_of(read_model: str) -> Any:
        def fold(data: Fact, ctx: Context) -> list[Op]:
            return [Notify(f"{read_model}:{ctx.event_id}")]

        fold.__module__ = f"projections.{read_model}"
        return fold

    registry(events.TurnStarted)(fold_of("zebra"))
    registry(events.TurnStarted, events.TurnCompleted)(fold_of("aardvark"))
    started = events.TurnStarted(session_id="session-1", turn_id="turn-1")

    assert registry.project(started, CTX) == [Notify("aardvark:evt-1"), Notify("zebra:evt-1")]
    assert registry.read_models(events.TurnStarted) == ["aardvark", "zebra"]
    assert registry.read_models(events.TurnCompleted) == ["aardvark"]
    assert registry.read_models(events.TurnFailed) == []


# -- properties over every fact the read models fold ----------------------------------


def datetimes_in(value: Any) -> list[datetime.date]:
    if isinstance(value, datetime.date):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in datetimes_in(v)]
    if isinstance(value, list | tuple):
        return [d for v in value for d in datetimes_in(v)]
    return []


# Tables of the platform, not of a tenant: operators and the price plans they publish.
PLATFORM_TABLES = {
    "operators",
    "price_plans",
    "turn_latency",
    "model_activity",
    "dead_letter_redrives",  # operators' acts on records of any tenant
}


def written(op: Op) -> dict[str, Any]:
    """The column values an operation writes (a Notify writes none)."""
    if isinstance(op, Upsert | Add):
        return op.row
    if isinstance(op, Update):
        return op.values
    return {}


def test_the_properties_cover_every_fact_the_fold_handles() -> None:
    handled = {cls for cls in Fact.registry.values() if folds.read_models(cls)}

    assert events.TurnAccepted in handled  # the registry is not empty
    assert handled <= set(fact_strategies("tenant-a"))


@settings(deadline=None)
@given(facts_in_context())
def test_the_fold_is_deterministic(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    first = project(fact, ctx)
    time.sleep(0.001)  # the wall clock moves on; the answer must not
    # As a rebuild sees it: the fact parsed anew from its JSON, an equal context.
    reread = type(fact).model_validate_json(fact.model_dump_json())
    again = project(reread, dataclasses.replace(ctx))

    assert again == first


@given(facts_in_context())
def test_the_fold_reads_no_wall_clock(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    stamps = [d for op in project(fact, ctx) for d in datetimes_in(written(op))]
    # The event's time, or a time the fact itself carries (when usage happened), or its
    # day (usage by day), or the start of a span that holds it (activity).
    carried = [ctx.time, *datetimes_in(dict(fact))]
    known = {
        *carried,
        *(d.date() for d in carried if isinstance(d, datetime.datetime)),
        *(
            activity.span_start(d, span)
            for d in carried
            if isinstance(d, datetime.datetime)
            for span in activity.SPANS
        ),
    }

    assert all(stamp in known for stamp in stamps), stamps


@given(facts_in_context())
def test_every_row_written_carries_the_events_tenant(example: tuple[Fact, Context]) -> None:
    fact, ctx = example
    ops = project(fact, ctx)

    for op in ops:
        if isinstance(op, Upsert | Add) and op.table not in PLATFORM_TABLES:
            assert op.row["tenant_id"] == ctx.tenant_id, op
        elif isinstance(op, Update):
            # An update keeps the tenant its row was inserted with.
            assert "tenant_id" not in op.values, op


@given(facts_in_context())
def test_upserts_carry_their_key_and_overwritten_columns(example: tuple[Fact, Context]) -> None:
    fact, ctx = example

    for op in project(fact, ctx):
        if isinstance(op, Upsert):
            assert set(op.key) | set(op.overwrite) <= set(op.row), op
        if isinstance(op, Add):
            assert set(op.key) | set(op.sums) <= set(op.row), op
