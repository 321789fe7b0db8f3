"""Core read models: tenants, keys, tools, agents with versions, sessions, messages,
turns with steps, tool calls, command outcomes, projection positions."""

from __future__ import annotations

from pathlib import Path

from alembic import op

from projections.migrate import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQL = Path(__file__).resolve().parents[2] / "schema.sql"
_POSITIONS = _SQL.with_name("positions.sql")


def upgrade(schema: str) -> None:
    execute_script(_POSITIONS, schema)
    execute_script(_SQL, schema)


def downgrade(schema: str) -> None:
    op.execute(f'DROP SCHEMA "{schema}" CASCADE')
