"""A rebuild says what it does through its callbacks only: the projections layer prints
nothing, and whoever runs it (the CLI, the gateway's replays) renders the lines and the
records read."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from projections.rebuild import Pace, RebuildReport, rebuild, table_hashes
from schemas import events
from schemas.envelope import envelope
from streams.catalog import Catalog, ensure_topics
from streams.partitions import LogReader
from streams.publisher import Publisher
from streams.settings import Settings

from .conftest import DATABASE_URL

RECORDS = 5
GARBAGE = b"\x00 not a CloudEvent"


def test_the_pace_is_the_rate_so_far_and_the_time_left_at_it() -> None:
    assert Pace.of(500, 2000, 2.0) == Pace(250.0, 6.0)
    assert Pace.of(2000, 2000, 4.0) == Pace(500.0, 0.0)
    assert Pace.of(0, 2000, 1.0) == Pace(0.0, None)  # no rate yet
    assert Pace.of(10, None, 0.0) == Pace(0.0, None)


def _settings(bootstrap: str, schema: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"rebuild_{uuid.uuid4().hex[:10]}.",
        database_url=DATABASE_URL,
        database_schema=schema,
    )


async def _publish(settings: Settings, tenants: range, garbage_after: int | None = None) -> None:
    """A TenantCreated per number in ``tenants``; an unreadable record (no CloudEvent)
    after the ``garbage_after``-th, on the same partition."""
    catalog = Catalog.from_settings(settings)
    await ensure_topics(settings.kafka_bootstrap_servers, catalog, 1)
    publisher = Publisher(settings.kafka_bootstrap_servers, catalog, traced=False)
    await publisher.start()
    try:
        for n in tenants:
            tenant = f"tenant-{n}"
            created = events.TenantCreated(tenant_id=tenant, display_name=f"Tenant {n}")
            await publisher.publish(envelope(created, source="/tests", tenant_id=tenant))
            if n == garbage_after:
                topic = catalog.topic_for(events.TenantCreated)
                await publisher.send_raw(topic, GARBAGE, b"tenant-x", [])
    finally:
        await publisher.stop()


async def _rebuild_beside(settings: Settings, **kwargs: Any) -> RebuildReport:
    """A rebuild that does not swap, of tables the live projector never wrote (every
    table is named changed, so that the rebuild's may differ and it still verifies)."""
    schema = settings.database_schema
    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
        tables = frozenset(await table_hashes(conn, schema))
    try:
        return await rebuild(settings, swap=False, changed=tables, **kwargs)
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"{schema}_rebuild")
                )
            )


@pytest.mark.parametrize("heard", [True, False], ids=["on_progress", "no on_progress"])
async def test_a_rebuild_reports_through_its_callbacks_and_prints_nothing(
    bootstrap: str, schema: str, capsys: pytest.CaptureFixture[str], heard: bool
) -> None:
    """Progress goes to ``on_progress`` alone: never printed, nor made into lines."""
    settings = _settings(bootstrap, schema)
    await _publish(settings, range(RECORDS))
    lines: list[str] = []
    progress: list[tuple[int, int]] = []
    report = await _rebuild_beside(
        settings,
        out=lines.append,
        on_progress=(lambda read, total: progress.append((read, total))) if heard else None,
    )

    assert capsys.readouterr().out == ""
    assert progress[-1:] == ([(RECORDS, RECORDS)] if heard else [])
    assert lines[0] == f"rebuild: folding {RECORDS} records from offset 0 into {schema}_rebuild"
    assert not [line for line in lines if "records read" in line], lines
    assert (report.events, report.swapped_to) == (RECORDS, None)


async def test_an_unreadable_record_is_dead_lettered_with_its_reason_and_the_rest_folded(
    bootstrap: str, schema: str
) -> None:
    """The choice (``docs/operations.md``): a record a rebuild cannot read is set aside
    as the live projector sets it aside, to the dead-letter topic with why and where it
    was, and named in the report; the records after it are folded."""
    settings = _settings(bootstrap, schema)
    await _publish(settings, range(4), garbage_after=1)
    lines: list[str] = []
    report = await _rebuild_beside(settings, out=lines.append)

    catalog = Catalog.from_settings(settings)
    topic = catalog.topic_for(events.TenantCreated)
    assert report.events == 4
    assert [line for line in lines if "folded in memory" in line], lines  # the bulk pass
    assert [(a.topic, a.partition, a.offset, a.event_id) for a in report.set_aside] == [
        (topic, 0, 2, None)
    ]
    assert "not a CloudEvent" in report.set_aside[0].reason
    assert f"  {report.set_aside[0]}" in lines
    reader = await LogReader(bootstrap).start()
    try:
        (tp,) = await reader.partitions(catalog.dead_letter)
        ends = await reader.ends([tp])
        letters = [r async for batch in reader.batches({tp: 0}, ends) for r in batch]
    finally:
        await reader.stop()
    assert [r.value for r in letters] == [GARBAGE]
    why = {name: bytes(value).decode() for name, value in letters[0].headers}
    assert (why["dlq.topic"], why["dlq.offset"]) == (topic, "2")
    assert why["dlq.reason"] == report.set_aside[0].reason
