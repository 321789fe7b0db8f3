"""Re-drives of dead letters (``projections.dead_letters``): platform rows, no tenant's,
which the reader role (the gateway's, for the operators' dashboard) may read."""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

READER = "agentlog_reader"


def upgrade(schema: str) -> None:
    op.execute(
        f"""
        CREATE TABLE "{schema}".dead_letter_redrives (
            dead_letter text PRIMARY KEY,
            operator_id text NOT NULL,
            topic text NOT NULL,
            requested_at timestamptz NOT NULL,
            redriven_at timestamptz,
            to_partition integer,
            to_offset bigint
        )
        """
    )
    op.execute(f'GRANT SELECT ON "{schema}".dead_letter_redrives TO {READER}')


def downgrade(schema: str) -> None:
    op.execute(f'DROP TABLE "{schema}".dead_letter_redrives')
