"""Schema migrations of the read models (Alembic), for the live schema or a rebuild."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from psycopg import AsyncConnection, sql

log = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).parent / "migrations"


def sqlalchemy_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def upgrade(database_url: str, schema: str) -> None:
    """Bring ``schema`` to the newest revision, creating it if needed."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["schema"] = schema
    config.attributes["url"] = sqlalchemy_url(database_url)
    command.upgrade(config, "head")


@dataclass(frozen=True)
class LogSource:
    """The log a schema's read models are a fold of."""

    cluster_id: str
    topic_prefix: str


class ForeignReadModelsError(RuntimeError):
    """The schema holds read models folded from another log."""


async def bind_to_log(
    database_url: str, schema: str, source: LogSource, *, reset: bool = False
) -> None:
    """Record which log ``schema`` folds, or check that it is this one. Read models of
    another log (another cluster, or another topic prefix) are refused, or with
    ``reset`` dropped and migrated afresh, to be folded again from this log."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        table = sql.SQL("{}.log_source").format(sql.Identifier(schema))
        row = await (
            await conn.execute(sql.SQL("SELECT cluster_id, topic_prefix FROM {}").format(table))
        ).fetchone()
        if row is None and await _has_folded(conn, schema):
            row = ("unknown", "unknown")  # folded before the log was recorded
        if row is not None and LogSource(*row) != source:
            if not reset:
                raise ForeignReadModelsError(
                    f"schema {schema!r} holds read models of another log (Kafka cluster"
                    f" {row[0]!r}, topic prefix {row[1]!r}), not of cluster"
                    f" {source.cluster_id!r} with prefix {source.topic_prefix!r}: drop it"
                    " (agentlog migrate --reset) or set AGENTLOG_DATABASE_SCHEMA"
                )
            log.warning(
                "read models of another log dropped; they are folded again from this one",
                extra={"schema": schema, "was": row[0], "now": source.cluster_id},
            )
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            await asyncio.to_thread(upgrade, database_url, schema)
            row = None
        if row is None:
            await conn.execute(
                sql.SQL("INSERT INTO {} (cluster_id, topic_prefix) VALUES (%s, %s)").format(table),
                (source.cluster_id, source.topic_prefix),
            )


async def _has_folded(conn: AsyncConnection[Any], schema: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT FROM {}.projection_positions)").format(
        sql.Identifier(schema)
    )
    row = await (await conn.execute(query)).fetchone()
    return bool(row and row[0])
