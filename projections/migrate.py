"""Schema migrations of the read models (Alembic), for the live schema or a rebuild."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from psycopg import AsyncConnection, sql
from sqlalchemy import create_engine, text

log = logging.getLogger(__name__)

# Each projection's read models live in their own schema, migrated by their own scripts.
CORE_SCRIPTS = Path(__file__).parent / "migrations"
BILLING_SCRIPTS = Path(__file__).parent / "billing_migrations"


def sqlalchemy_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


def upgrade(database_url: str, schema: str, scripts: Path = CORE_SCRIPTS) -> None:
    """Bring ``schema`` to the newest revision of ``scripts``, creating it if needed."""
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["schema"] = schema
    config.attributes["url"] = sqlalchemy_url(database_url)
    command.upgrade(config, "head")


def execute_script(path: Path, schema: str) -> None:
    """Run the statements of a SQL file, with ``{schema}`` naming ``schema``, in the
    migration's transaction."""
    for statement in path.read_text().format(schema=f'"{schema}"').split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            op.execute(body)


def run_environment() -> None:
    """The body of an Alembic ``env.py``: migrate the one schema named in
    ``config.attributes["schema"]``."""
    config = context.config
    schema = config.attributes["schema"]
    engine = create_engine(config.attributes["url"])
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(connection=connection, version_table_schema=schema)
        with context.begin_transaction():
            context.run_migrations(schema=schema)
    engine.dispose()


@dataclass(frozen=True)
class LogSource:
    """The log a schema's read models are a fold of."""

    cluster_id: str
    topic_prefix: str


class ForeignReadModelsError(RuntimeError):
    """The schema holds read models folded from another log."""


async def bind_to_log(
    database_url: str,
    schema: str,
    source: LogSource,
    *,
    reset: bool = False,
    scripts: Path = CORE_SCRIPTS,
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
            await asyncio.to_thread(upgrade, database_url, schema, scripts)
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
