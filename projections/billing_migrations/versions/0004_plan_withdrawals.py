"""Withdrawals of plan assignments (``projections.plans``): how an operator repairs a
tenant's assignments, without rewriting them."""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

READER = "agentlog_reader"
ALL_TENANTS = "*"


def upgrade(schema: str) -> None:
    op.execute(
        f"""
        CREATE TABLE "{schema}".plan_withdrawals (
            tenant_id text NOT NULL,
            effective_from timestamptz NOT NULL,
            operator_id text NOT NULL,
            billing_partition integer NOT NULL,
            billing_offset bigint NOT NULL,
            withdrawn_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, effective_from, billing_partition, billing_offset)
        )
        """
    )
    op.execute(f'GRANT SELECT ON "{schema}".plan_withdrawals TO {READER}')
    op.execute(f'ALTER TABLE "{schema}".plan_withdrawals ENABLE ROW LEVEL SECURITY')
    op.execute(
        f'CREATE POLICY tenant_isolation ON "{schema}".plan_withdrawals TO {READER}'
        " USING (tenant_id = current_setting('agentlog.tenant_id', true)"
        f" OR current_setting('agentlog.tenant_id', true) = '{ALL_TENANTS}')"
    )


def downgrade(schema: str) -> None:
    op.execute(f'DROP TABLE "{schema}".plan_withdrawals')
