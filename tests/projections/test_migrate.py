"""Read models know which log they fold: another log's are refused, or reset on request."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import AsyncConnection

from projections.migrate import ForeignReadModelsError, LogSource, bind_to_log

from .rows import select

HERE = LogSource(cluster_id="cluster-a", topic_prefix="")


async def test_a_schema_is_bound_to_the_first_log_and_accepts_it_again(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    await bind_to_log(database_url, schema, HERE)
    await bind_to_log(database_url, schema, HERE)

    rows = await select(db, schema, "SELECT cluster_id, topic_prefix FROM {s}.log_source")
    assert rows == [{"cluster_id": "cluster-a", "topic_prefix": ""}]


@pytest.mark.parametrize(
    "other",
    [LogSource("cluster-b", ""), LogSource("cluster-a", "staging.")],
    ids=["another cluster", "another prefix"],
)
async def test_read_models_of_another_log_are_refused(
    database_url: str, schema: str, other: LogSource
) -> None:
    await bind_to_log(database_url, schema, HERE)

    with pytest.raises(ForeignReadModelsError, match="another log"):
        await bind_to_log(database_url, schema, other)


async def test_a_reset_drops_another_logs_read_models(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    await bind_to_log(database_url, schema, HERE)
    await db.execute(f'INSERT INTO "{schema}".tenants VALUES (%s, %s, now())', ("t-1", "left over"))

    await bind_to_log(database_url, schema, LogSource("cluster-b", ""), reset=True)

    assert await select(db, schema, "SELECT * FROM {s}.tenants") == []
    rows = await select(db, schema, "SELECT cluster_id FROM {s}.log_source")
    assert rows == [{"cluster_id": "cluster-b"}]


async def test_read_models_folded_before_their_log_was_recorded_count_as_another_logs(
    database_url: str, schema: str, db: AsyncConnection[Any]
) -> None:
    await db.execute(
        f'INSERT INTO "{schema}".projection_positions VALUES (%s, %s, %s, %s)',
        ("core", "agentlog.events", 0, 12),
    )

    with pytest.raises(ForeignReadModelsError, match="'unknown'"):
        await bind_to_log(database_url, schema, HERE)
