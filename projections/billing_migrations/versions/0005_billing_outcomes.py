"""What became of each billing request (``projections.billing_outcomes``): the operator's
request waits on it, as a core command waits on ``command_outcomes``."""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

READER = "agentlog_reader"
ALL_TENANTS = "*"


def upgrade(schema: str) -> None:
    op.execute(
        f"""
        CREATE TABLE "{schema}".billing_outcomes (
            command_id text PRIMARY KEY,
            tenant_id text NOT NULL,
            event_id text NOT NULL,
            accepted boolean NOT NULL,
            code text,
            detail text,
            version integer
        )
        """
    )
    op.execute(f'GRANT SELECT ON "{schema}".billing_outcomes TO {READER}')
    op.execute(f'ALTER TABLE "{schema}".billing_outcomes ENABLE ROW LEVEL SECURITY')
    op.execute(
        f'CREATE POLICY tenant_isolation ON "{schema}".billing_outcomes TO {READER}'
        " USING (tenant_id = current_setting('agentlog.tenant_id', true)"
        f" OR current_setting('agentlog.tenant_id', true) = '{ALL_TENANTS}')"
    )


def downgrade(schema: str) -> None:
    op.execute(f'DROP TABLE "{schema}".billing_outcomes')
