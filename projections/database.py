"""Pooled connections to the read models: the one place agentlog opens them.

Every query is scoped by tenant twice: by its own ``WHERE`` clause, and, on a
``tenant_scoped`` pool (the gateway's), by row-level security: its connections take the
``agentlog_reader`` role and name the tenant before each query, so a query that forgot
its filter still sees one tenant's rows. Workers, the projector and the secret store,
which serve every tenant, use pools that are not bound by it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, RowFactory, dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from .rows import R

READER_ROLE = "agentlog_reader"
# Postgres not answering (``PoolTimeout`` is one of these): an outage to retry, never a
# reason to give up on a record or to answer anything but 503.
OUTAGES: tuple[type[Exception], ...] = (psycopg.OperationalError,)


class Queries:
    """Typed rows from queries on the read models' schema (``{s}`` in a query names it);
    where the statements run is a subclass's ``connection``."""

    schema: str
    tenant_scoped: bool
    _statements: dict[str, bytes]

    def statement(self, query: str) -> bytes:
        """``query`` with ``{s}`` naming this database's schema; composed once, into
        bytes (a ``sql.Composed`` would be composed again at every execution)."""
        statement = self._statements.get(query)
        if statement is None:
            statement = self._statements[query] = (
                sql.SQL(query).format(s=sql.Identifier(self.schema)).as_bytes(None)
            )
        return statement

    def connection(
        self, tenant_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncConnection[DictRow]]:
        raise NotImplementedError

    async def _fetch(
        self,
        tenant_id: str | None,
        query: str,
        params: tuple[Any, ...],
        factory: RowFactory[Any] = dict_row,
    ) -> Any:
        async with self.connection(tenant_id) as conn:
            cursor = conn.cursor(row_factory=factory)
            return await (await cursor.execute(self.statement(query), params)).fetchall()

    async def rows(self, row: type[R], tenant_id: str | None, query: str, *params: Any) -> list[R]:
        return [row.model_validate(r) for r in await self._fetch(tenant_id, query, params)]

    async def row(self, row: type[R], tenant_id: str | None, query: str, *params: Any) -> R | None:
        found = await self._fetch(tenant_id, query, params)
        return row.model_validate(found[0]) if found else None

    async def value(self, tenant_id: str | None, query: str, *params: Any) -> Any:
        """The first column of the first row, or None."""
        found = await self._fetch(tenant_id, query, params)
        return next(iter(found[0].values())) if found else None

    async def tuples(
        self, tenant_id: str | None, query: str, *params: Any
    ) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = await self._fetch(tenant_id, query, params, tuple_row)
        return found


class Database(Queries):
    def __init__(
        self,
        database_url: str,
        schema: str,
        *,
        tenant_scoped: bool = False,
        pool_size: int = 4,
        timeout: float = 30.0,
    ) -> None:
        """``timeout``: the longest wait for a connection (PoolTimeout after it): the
        gateway's is short, so an outage answers 503 at once rather than queueing."""
        self.database_url = database_url
        self.schema = schema
        self.tenant_scoped = tenant_scoped
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            configure=self._configure if tenant_scoped else None,
            timeout=timeout,
            open=False,
        )
        self._opened = False
        self._statements: dict[str, bytes] = {}
        self._tenant_of: dict[int, str] = {}  # by id() of a pooled connection

    async def _configure(self, conn: AsyncConnection[DictRow]) -> None:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(READER_ROLE)))
        await conn.execute("SELECT set_config('agentlog.tenant_id', '', false)")
        self._tenant_of[id(conn)] = ""

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    @asynccontextmanager
    async def connection(
        self, tenant_id: str | None = None
    ) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A pooled connection (autocommit, dict rows), scoped to ``tenant_id`` on a
        tenant-scoped pool (None: to no tenant's rows)."""
        if not self._opened:
            self._opened = True
            await self._pool.open()
        async with self._pool.connection() as conn:
            if self.tenant_scoped:
                await self._scope(conn, tenant_id or "")
            yield conn

    async def _scope(self, conn: AsyncConnection[DictRow], tenant_id: str) -> None:
        """Name the tenant whose rows the connection may see (row-level security); set
        only when it changes, which for most requests it does not."""
        if self._tenant_of.get(id(conn)) != tenant_id:
            await conn.execute("SELECT set_config('agentlog.tenant_id', %s, false)", (tenant_id,))
            self._tenant_of[id(conn)] = tenant_id

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """A reader whose queries all see the read models at one moment (a read-only,
        repeatable-read transaction), so that the positions and the rows it reads
        agree: what a decider loads before it folds the log from those positions."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield Snapshot(self, conn)


class Snapshot(Queries):
    """The reader ``Database.snapshot`` yields: every query on its one transaction."""

    def __init__(self, db: Database, conn: AsyncConnection[DictRow]) -> None:
        self.schema = db.schema
        self.tenant_scoped = False
        self._statements = db._statements
        self._conn = conn

    @asynccontextmanager
    async def connection(
        self, tenant_id: str | None = None
    ) -> AsyncIterator[AsyncConnection[DictRow]]:
        """The snapshot's one connection, whatever the tenant (it is bound to none)."""
        yield self._conn
