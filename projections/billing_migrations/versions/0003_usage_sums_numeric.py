"""Daily usage summed in ``numeric``: a day's sum of bounded quantities may pass what a
``bigint`` holds (one unit of one event is at most 10^15), and an overflow would refuse
the record that caused it, whoever's usage it was."""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{schema}".usage_daily ALTER COLUMN quantity TYPE numeric')


def downgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{schema}".usage_daily ALTER COLUMN quantity TYPE bigint')
