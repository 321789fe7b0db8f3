"""Secret headers of HTTP tools, kept apart from events and read models.

Secrets never enter a topic, so they cannot be rebuilt from the log: they live in their
own schema (``<schema>_secrets``), untouched by projection rebuilds, written by the
gateway when a tool is registered and read only by the tool worker.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


class SecretStore:
    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.schema = f"{schema}_secrets"
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        self._opened = False

    async def _ready(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if not self._opened:
            self._opened = True
            await self._pool.open()
        return self._pool

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def ensure(self) -> None:
        async with (await self._ready()).connection() as conn:
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.tool_headers (tenant_id text NOT NULL,"
                    " tool_id text NOT NULL, headers jsonb NOT NULL,"
                    " PRIMARY KEY (tenant_id, tool_id))"
                ).format(sql.Identifier(self.schema))
            )

    async def put(self, tenant_id: str, tool_id: str, headers: dict[str, str]) -> None:
        async with (await self._ready()).connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.tool_headers VALUES (%s, %s, %s)"
                    " ON CONFLICT (tenant_id, tool_id) DO UPDATE SET headers = EXCLUDED.headers"
                ).format(sql.Identifier(self.schema)),
                (tenant_id, tool_id, Jsonb(headers)),
            )

    async def get(self, tenant_id: str, tool_id: str) -> dict[str, str]:
        async with (await self._ready()).connection() as conn:
            row = await (
                await conn.execute(
                    sql.SQL(
                        "SELECT headers FROM {}.tool_headers WHERE tenant_id = %s AND tool_id = %s"
                    ).format(sql.Identifier(self.schema)),
                    (tenant_id, tool_id),
                )
            ).fetchone()
        return dict(row[0]) if row else {}
