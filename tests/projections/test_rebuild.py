"""A rebuild says what it does through its callbacks only: the projections layer prints
nothing, and whoever runs it (the CLI, the gateway's replays) renders the lines and the
records read."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from projections.rebuild import rebuild, table_hashes
from schemas import events
from schemas.envelope import envelope
from streams.catalog import Catalog, ensure_topics
from streams.publisher import Publisher
from streams.settings import Settings

from .conftest import DATABASE_URL

RECORDS = 5


@pytest.mark.parametrize("heard", [True, False], ids=["on_progress", "no on_progress"])
async def test_a_rebuild_reports_through_its_callbacks_and_prints_nothing(
    bootstrap: str, schema: str, capsys: pytest.CaptureFixture[str], heard: bool
) -> None:
    """Progress goes to ``on_progress`` alone: never printed, nor made into lines."""
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=f"rebuild_{uuid.uuid4().hex[:10]}.",
        database_url=DATABASE_URL,
        database_schema=schema,
    )
    catalog = Catalog.from_settings(settings)
    await ensure_topics(bootstrap, catalog, 1)
    publisher = Publisher(bootstrap, catalog, traced=False)
    await publisher.start()
    try:
        for n in range(RECORDS):
            tenant = f"tenant-{n}"
            created = events.TenantCreated(tenant_id=tenant, display_name=f"Tenant {n}")
            await publisher.publish(envelope(created, source="/tests", tenant_id=tenant))
    finally:
        await publisher.stop()
    # The live tables never saw these records: every table is named changed, so that
    # the rebuild's differ and it still verifies (without swapping).
    async with await psycopg.AsyncConnection.connect(DATABASE_URL) as conn:
        tables = frozenset(await table_hashes(conn, schema))
    lines: list[str] = []
    progress: list[tuple[int, int]] = []
    try:
        report = await rebuild(
            settings,
            swap=False,
            out=lines.append,
            on_progress=(lambda read, total: progress.append((read, total))) if heard else None,
            changed=tables,
        )
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"{schema}_rebuild")
                )
            )

    assert capsys.readouterr().out == ""
    assert progress[-1:] == ([(RECORDS, RECORDS)] if heard else [])
    assert lines[0] == f"rebuild: folding {RECORDS} records from offset 0 into {schema}_rebuild"
    assert not [line for line in lines if "records read" in line], lines
    assert (report.events, report.swapped_to) == (RECORDS, None)
