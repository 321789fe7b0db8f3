"""Queries over the core read models. Every query is scoped by tenant."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row


class ReadModel:
    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.schema = schema
        self._conn: AsyncConnection[dict[str, Any]] | None = None

    async def connection(self) -> AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(
                self.database_url, row_factory=dict_row, autocommit=True
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _all(self, query: str, *params: Any) -> list[dict[str, Any]]:
        conn = await self.connection()
        statement = sql.SQL(query).format(s=sql.Identifier(self.schema))
        return await (await conn.execute(statement, params)).fetchall()

    async def _one(self, query: str, *params: Any) -> dict[str, Any] | None:
        rows = await self._all(query, *params)
        return rows[0] if rows else None

    # -- tenants and keys ------------------------------------------------------------

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        row = await self._one("SELECT tenant_id FROM {s}.api_keys WHERE key_hash = %s", key_hash)
        return None if row is None else str(row["tenant_id"])

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return await self._one("SELECT * FROM {s}.tenants WHERE tenant_id = %s", tenant_id)

    # -- tools -----------------------------------------------------------------------

    async def tools(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self._all(
            "SELECT * FROM {s}.tools WHERE tenant_id = %s ORDER BY name", tenant_id
        )

    async def tool_by_id(self, tenant_id: str, tool_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.tools WHERE tenant_id = %s AND tool_id = %s", tenant_id, tool_id
        )

    # -- agents ----------------------------------------------------------------------

    async def agent(self, tenant_id: str, agent_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.agents WHERE tenant_id = %s AND agent_id = %s", tenant_id, agent_id
        )

    async def agents(
        self, tenant_id: str, limit: int, after: tuple[Any, str] | None
    ) -> list[dict[str, Any]]:
        if after is None:
            return await self._all(
                "SELECT * FROM {s}.agents WHERE tenant_id = %s ORDER BY created_at, agent_id"
                " LIMIT %s",
                tenant_id,
                limit,
            )
        return await self._all(
            "SELECT * FROM {s}.agents WHERE tenant_id = %s AND (created_at, agent_id) > (%s, %s)"
            " ORDER BY created_at, agent_id LIMIT %s",
            tenant_id,
            after[0],
            after[1],
            limit,
        )

    async def agent_versions(self, tenant_id: str, agent_id: str) -> list[dict[str, Any]]:
        return await self._all(
            "SELECT * FROM {s}.agent_versions WHERE tenant_id = %s AND agent_id = %s"
            " ORDER BY version",
            tenant_id,
            agent_id,
        )

    # -- commands --------------------------------------------------------------------

    async def command_outcome(self, tenant_id: str, command_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.command_outcomes WHERE tenant_id = %s AND command_id = %s",
            tenant_id,
            command_id,
        )

    # -- sessions, messages, turns ---------------------------------------------------

    async def session(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.sessions WHERE tenant_id = %s AND session_id = %s",
            tenant_id,
            session_id,
        )

    async def sessions(
        self, tenant_id: str, limit: int, after: tuple[Any, str] | None
    ) -> list[dict[str, Any]]:
        if after is None:
            return await self._all(
                "SELECT * FROM {s}.sessions WHERE tenant_id = %s ORDER BY created_at, session_id"
                " LIMIT %s",
                tenant_id,
                limit,
            )
        return await self._all(
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
            "SELECT * FROM {s}.messages WHERE tenant_id = %s AND session_id = %s"
            " AND position > %s ORDER BY position LIMIT %s",
            tenant_id,
            session_id,
            after_position,
            limit,
        )

    async def active_turn(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.turns WHERE tenant_id = %s AND session_id = %s"
            " AND status IN ('accepted', 'running') LIMIT 1",
            tenant_id,
            session_id,
        )

    async def turn(self, tenant_id: str, turn_id: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT * FROM {s}.turns WHERE tenant_id = %s AND turn_id = %s", tenant_id, turn_id
        )

    async def turn_steps(self, tenant_id: str, turn_id: str) -> list[dict[str, Any]]:
        return await self._all(
            "SELECT type, detail, position, recorded_at FROM {s}.turn_steps"
            " WHERE tenant_id = %s AND turn_id = %s ORDER BY position",
            tenant_id,
            turn_id,
        )

    async def tool_calls(self, tenant_id: str, turn_id: str) -> list[dict[str, Any]]:
        return await self._all(
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
            "SELECT min(accepted_offset) AS start FROM {s}.turns WHERE status IN"
            " ('accepted', 'running') AND accepted_partition = %s AND accepted_offset < %s",
            partition,
            before_offset,
        )
        return None if row is None or row["start"] is None else int(row["start"])
