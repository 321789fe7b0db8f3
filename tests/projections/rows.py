"""Reading back what a projection wrote."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

# Every table of the core read models (migrations 0001 and 0006), Alembic's own left out.
TABLES = {
    "model_activity",
    "turn_activity",
    "turn_latency",
    "agent_versions",
    "agents",
    "api_keys",
    "applied_events",
    "command_outcomes",
    "messages",
    "projection_positions",
    "sessions",
    "tenants",
    "tool_calls",
    "tools",
    "turn_steps",
    "turns",
}


async def select(
    db: AsyncConnection[Any], schema: str, query: str, *params: Any
) -> list[dict[str, Any]]:
    """Rows as dicts; ``{s}`` in ``query`` names ``schema``."""
    async with db.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(sql.SQL(query).format(s=sql.Identifier(schema)), params)
        return await cursor.fetchall()
