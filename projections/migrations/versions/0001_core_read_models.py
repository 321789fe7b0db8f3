"""Core read models: tenants, keys, tools, agents with versions, sessions, messages,
turns with steps, tool calls, command outcomes, projection positions."""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQL = Path(__file__).resolve().parents[2] / "schema.sql"


def upgrade(schema: str) -> None:
    for statement in _SQL.read_text().format(schema=f'"{schema}"').split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            op.execute(body)


def downgrade(schema: str) -> None:
    op.execute(f'DROP SCHEMA "{schema}" CASCADE')
