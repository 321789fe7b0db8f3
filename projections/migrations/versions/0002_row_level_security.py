"""Row-level security: the second wall between tenants.

Every tenant table gets a policy that shows a row only to a session whose
``agentlog.tenant_id`` setting names the row's tenant. The policy binds the
``agentlog_reader`` role, which the gateway's connections take; the projector and the
workers, which work for every tenant, own the tables and are not bound by it. The
reader may see no API key but through its hash, and nothing of projection positions.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

READER = "agentlog_reader"
TENANT_TABLES = (
    "tenants",
    "tools",
    "agents",
    "agent_versions",
    "command_outcomes",
    "sessions",
    "messages",
    "turns",
    "turn_steps",
    "tool_calls",
)


def upgrade(schema: str) -> None:
    # Roles are cluster-wide: a migration of another schema may create it at the same
    # time, and then the loser's insert into pg_authid fails as a unique_violation.
    op.execute(
        f"""
        DO $$ BEGIN
            CREATE ROLE {READER} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )
    op.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {READER}')
    op.execute(f'GRANT SELECT (key_hash, tenant_id) ON "{schema}".api_keys TO {READER}')
    for table in TENANT_TABLES:
        op.execute(f'GRANT SELECT ON "{schema}".{table} TO {READER}')
        op.execute(f'ALTER TABLE "{schema}".{table} ENABLE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY tenant_isolation ON "{schema}".{table} TO {READER}'
            " USING (tenant_id = current_setting('agentlog.tenant_id', true))"
        )


def downgrade(schema: str) -> None:
    for table in TENANT_TABLES:
        op.execute(f'DROP POLICY tenant_isolation ON "{schema}".{table}')
        op.execute(f'ALTER TABLE "{schema}".{table} DISABLE ROW LEVEL SECURITY')
    op.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {READER}')
    op.execute(f'REVOKE USAGE ON SCHEMA "{schema}" FROM {READER}')
