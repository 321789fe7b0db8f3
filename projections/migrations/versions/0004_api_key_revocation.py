"""API keys can be revoked, and a tenant may list its own.

A key whose ``revoked_at`` is set authenticates nothing. The reader role (the gateway's)
sees keys across tenants only by hash (to authenticate, before the tenant is known);
it lists a tenant's keys through ``tenant_api_keys``, a view that shows the rows of the
tenant its session names, as row-level security would.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

READER = "agentlog_reader"


def upgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{schema}".api_keys ADD COLUMN revoked_at timestamptz')
    op.execute(f'GRANT SELECT (revoked_at) ON "{schema}".api_keys TO {READER}')
    op.execute(
        f'CREATE VIEW "{schema}".tenant_api_keys WITH (security_barrier) AS'
        " SELECT key_id, tenant_id, key_prefix, created_at, revoked_at"
        f' FROM "{schema}".api_keys'
        " WHERE tenant_id = current_setting('agentlog.tenant_id', true)"
    )
    op.execute(f'GRANT SELECT ON "{schema}".tenant_api_keys TO {READER}')


def downgrade(schema: str) -> None:
    op.execute(f'DROP VIEW "{schema}".tenant_api_keys')
    op.execute(f'REVOKE SELECT (revoked_at) ON "{schema}".api_keys FROM {READER}')
    op.execute(f'ALTER TABLE "{schema}".api_keys DROP COLUMN revoked_at')
