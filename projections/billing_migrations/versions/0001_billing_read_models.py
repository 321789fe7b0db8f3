"""Billing read models: operators, price plans, plan assignments, the usage ledger and
its daily aggregates, invoices with their revisions, and draft requests.

Row-level security as for the core read models: the reader role (the gateway's) sees a
row when its session names the row's tenant, or names every tenant (``*``, which the
gateway sets for an operator's request only); operators it sees only by key hash.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from projections.migrate import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

READER = "agentlog_reader"
ALL_TENANTS = "*"
TENANT_TABLES = (
    "plan_assignments",
    "usage_ledger",
    "usage_daily",
    "invoices",
    "invoice_revisions",
    "draft_requests",
)
_SQL = Path(__file__).resolve().parents[2] / "billing.sql"
_POSITIONS = _SQL.with_name("positions.sql")


def upgrade(schema: str) -> None:
    execute_script(_POSITIONS, schema)
    execute_script(_SQL, schema)
    op.execute(
        f"""
        DO $$ BEGIN
            CREATE ROLE {READER} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )
    op.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {READER}')
    op.execute(f'GRANT SELECT (key_hash, operator_id) ON "{schema}".operators TO {READER}')
    op.execute(f'GRANT SELECT ON "{schema}".price_plans TO {READER}')
    for table in TENANT_TABLES:
        op.execute(f'GRANT SELECT ON "{schema}".{table} TO {READER}')
        op.execute(f'ALTER TABLE "{schema}".{table} ENABLE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY tenant_isolation ON "{schema}".{table} TO {READER}'
            " USING (tenant_id = current_setting('agentlog.tenant_id', true)"
            f" OR current_setting('agentlog.tenant_id', true) = '{ALL_TENANTS}')"
        )


def downgrade(schema: str) -> None:
    op.execute(f'DROP SCHEMA "{schema}" CASCADE')
