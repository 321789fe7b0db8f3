"""Queries over the core read models. Every query is scoped by tenant, twice: by its
``WHERE`` clause, and, on the gateway's connections, by row-level security (a session
that takes the ``agentlog_reader`` role sees only the rows of the tenant it named).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from .store import wait_for_position

READER_ROLE = "agentlog_reader"


class ReadModel:
    """Pooled connections to the read models. ``tenant_scoped`` connections (the
    gateway's) take the reader role, so a query that forgot its tenant filter would still
    see one tenant's rows only."""

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
        self._statements: dict[str, sql.Composed] = {}
        self._tenant_of: dict[int, str] = {}  # by id() of a pooled connection

    async def _configure(self, conn: AsyncConnection[DictRow]) -> None:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(READER_ROLE)))
        await conn.execute("SELECT set_config('agentlog.tenant_id', '', false)")
        self._tenant_of[id(conn)] = ""

    async def _ready(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        if not self._opened:
            self._opened = True
            await self._pool.open()
        return self._pool

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def ping(self) -> None:
        async with (await self._ready()).connection() as conn:
            await conn.execute("SELECT 1")

    async def wait_for_positions(
        self, positions: list[tuple[str, int, int]], timeout: float = 10.0
    ) -> None:
        """The offset fence: return once the projection has applied every (topic,
        partition, offset) given; TimeoutError otherwise."""
        async with (await self._ready()).connection() as conn:
            for topic, partition, offset in positions:
                await wait_for_position(
                    conn, self.schema, topic, partition, offset, timeout=timeout
                )

    async def _all(self, tenant_id: str | None, query: str, *params: Any) -> list[dict[str, Any]]:
        statement = self._statements.get(query)
        if statement is None:
            statement = self._statements[query] = sql.SQL(query).format(
                s=sql.Identifier(self.schema)
            )
        async with (await self._ready()).connection() as conn:
            if self.tenant_scoped:
                await self._scope(conn, tenant_id or "")  # no tenant: no tenant's rows
            return await (await conn.execute(statement, params)).fetchall()

    async def _scope(self, conn: AsyncConnection[DictRow], tenant_id: str) -> None:
        """Name the tenant whose rows the connection may see (row-level security); set
        only when it changes, which for most requests it does not."""
        if self._tenant_of.get(id(conn)) != tenant_id:
            await conn.execute("SELECT set_config('agentlog.tenant_id', %s, false)", (tenant_id,))
            self._tenant_of[id(conn)] = tenant_id

    async def _one(self, tenant_id: str | None, query: str, *params: Any) -> dict[str, Any] | None:
        rows = await self._all(tenant_id, query, *params)
        return rows[0] if rows else None

    # -- tenants and keys ------------------------------------------------------------

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant of a key that has not been revoked."""
        row = await self._one(
            None,
            "SELECT tenant_id FROM {s}.api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            key_hash,
        )
        return None if row is None else str(row["tenant_id"])

    @property
    def _keys_of_tenants(self) -> str:
        # The reader may not read keys but through the view of its tenant's.
        return "tenant_api_keys" if self.tenant_scoped else "api_keys"

    async def api_keys(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id,
            "SELECT key_id, key_prefix, created_at, revoked_at"
            f" FROM {{s}}.{self._keys_of_tenants}"
            " WHERE tenant_id = %s ORDER BY created_at, key_id",
            tenant_id,
        )

    async def api_key(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT key_id, key_prefix, created_at, revoked_at"
            f" FROM {{s}}.{self._keys_of_tenants}"
            " WHERE tenant_id = %s AND key_id = %s",
            tenant_id,
            key_id,
        )

    # -- tools -----------------------------------------------------------------------

    async def tools(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id, "SELECT * FROM {s}.tools WHERE tenant_id = %s ORDER BY name", tenant_id
        )

    async def tool_by_id(self, tenant_id: str, tool_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.tools WHERE tenant_id = %s AND tool_id = %s",
            tenant_id,
            tool_id,
        )

    # -- agents ----------------------------------------------------------------------

    async def agent(self, tenant_id: str, agent_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.agents WHERE tenant_id = %s AND agent_id = %s",
            tenant_id,
            agent_id,
        )

    async def agents(
        self, tenant_id: str, limit: int, after: tuple[Any, str] | None
    ) -> list[dict[str, Any]]:
        if after is None:
            return await self._all(
                tenant_id,
                "SELECT * FROM {s}.agents WHERE tenant_id = %s ORDER BY created_at, agent_id"
                " LIMIT %s",
                tenant_id,
                limit,
            )
        return await self._all(
            tenant_id,
            "SELECT * FROM {s}.agents WHERE tenant_id = %s AND (created_at, agent_id) > (%s, %s)"
            " ORDER BY created_at, agent_id LIMIT %s",
            tenant_id,
            after[0],
            after[1],
            limit,
        )

    async def agent_versions(self, tenant_id: str, agent_id: str) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id,
            "SELECT * FROM {s}.agent_versions WHERE tenant_id = %s AND agent_id = %s"
            " ORDER BY version",
            tenant_id,
            agent_id,
        )

    # -- commands --------------------------------------------------------------------

    async def command_outcome(self, tenant_id: str, command_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.command_outcomes WHERE tenant_id = %s AND command_id = %s",
            tenant_id,
            command_id,
        )

    # -- sessions, messages, turns ---------------------------------------------------

    async def session(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.sessions WHERE tenant_id = %s AND session_id = %s",
            tenant_id,
            session_id,
        )

    async def sessions(
        self, tenant_id: str, limit: int, after: tuple[Any, str] | None
    ) -> list[dict[str, Any]]:
        if after is None:
            return await self._all(
                tenant_id,
                "SELECT * FROM {s}.sessions WHERE tenant_id = %s ORDER BY created_at, session_id"
                " LIMIT %s",
                tenant_id,
                limit,
            )
        return await self._all(
            tenant_id,
            "SELECT * FROM {s}.sessions WHERE tenant_id = %s AND (created_at, session_id) >"
            " (%s, %s) ORDER BY created_at, session_id LIMIT %s",
            tenant_id,
            after[0],
            after[1],
            limit,
        )

    async def messages(
        self, tenant_id: str, session_id: str, limit: int, after_position: int = -1
    ) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id,
            "SELECT * FROM {s}.messages WHERE tenant_id = %s AND session_id = %s"
            " AND position > %s ORDER BY position LIMIT %s",
            tenant_id,
            session_id,
            after_position,
            limit,
        )

    async def recent_messages(
        self, tenant_id: str, session_id: str, limit: int
    ) -> list[dict[str, Any]]:
        """The session's last ``limit`` messages, oldest first."""
        rows = await self._all(
            tenant_id,
            "SELECT * FROM {s}.messages WHERE tenant_id = %s AND session_id = %s"
            " ORDER BY position DESC LIMIT %s",
            tenant_id,
            session_id,
            limit,
        )
        return rows[::-1]

    async def active_turn(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.turns WHERE tenant_id = %s AND session_id = %s"
            " AND status IN ('accepted', 'running') LIMIT 1",
            tenant_id,
            session_id,
        )

    async def turn(self, tenant_id: str, turn_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.turns WHERE tenant_id = %s AND turn_id = %s",
            tenant_id,
            turn_id,
        )

    async def message(self, tenant_id: str, message_id: str) -> dict[str, Any] | None:
        return await self._one(
            tenant_id,
            "SELECT * FROM {s}.messages WHERE tenant_id = %s AND message_id = %s",
            tenant_id,
            message_id,
        )

    async def turn_steps(self, tenant_id: str, turn_id: str) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id,
            "SELECT type, detail, position, recorded_at FROM {s}.turn_steps"
            " WHERE tenant_id = %s AND turn_id = %s ORDER BY position",
            tenant_id,
            turn_id,
        )

    async def tool_calls(self, tenant_id: str, turn_id: str) -> list[dict[str, Any]]:
        return await self._all(
            tenant_id,
            "SELECT * FROM {s}.tool_calls WHERE tenant_id = %s AND turn_id = %s"
            " ORDER BY requested_at, tool_call_id",
            tenant_id,
            turn_id,
        )

    async def open_turns_from(self, partition: int, before_offset: int) -> int | None:
        """Offset of the oldest TurnAccepted of a still-running turn in one events partition
        (the orchestrator replays from there to rebuild its state). Not tenant-scoped: it
        serves the orchestrator, which works for every tenant."""
        row = await self._one(
            None,
            "SELECT min(accepted_offset) AS start FROM {s}.turns WHERE status IN"
            " ('accepted', 'running') AND accepted_partition = %s AND accepted_offset < %s",
            partition,
            before_offset,
        )
        return None if row is None or row["start"] is None else int(row["start"])
