"""The operators' view (``/dashboard``): every tenant's rows, and finished turns by time.

An operator's reads span tenants. The reader role sees them when its session names
every tenant (``agentlog.tenant_id`` = ``*``), as the billing schema's policies already
allow; the gateway sets that only for a request signed by an operator. Finished turns
are read by time (turns per minute, latency, failures), which the new indexes serve.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

READER = "agentlog_reader"
ALL_TENANTS = "*"
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


def _policy(schema: str, table: str, using: str) -> None:
    op.execute(f'DROP POLICY tenant_isolation ON "{schema}".{table}')
    op.execute(f'CREATE POLICY tenant_isolation ON "{schema}".{table} TO {READER} USING ({using})')


def upgrade(schema: str) -> None:
    for table in TENANT_TABLES:
        _policy(
            schema,
            table,
            "tenant_id = current_setting('agentlog.tenant_id', true)"
            f" OR current_setting('agentlog.tenant_id', true) = '{ALL_TENANTS}'",
        )
    op.execute(
        f'CREATE INDEX turns_finished ON "{schema}".turns (finished_at, turn_id)'
        " WHERE finished_at IS NOT NULL"
    )
    op.execute(f'CREATE INDEX turns_tenant_requested ON "{schema}".turns (tenant_id, requested_at)')
    op.execute(f'CREATE INDEX turns_requested ON "{schema}".turns (requested_at, turn_id)')


def downgrade(schema: str) -> None:
    for index in ("turns_requested", "turns_tenant_requested", "turns_finished"):
        op.execute(f'DROP INDEX "{schema}".{index}')
    for table in TENANT_TABLES:
        _policy(schema, table, "tenant_id = current_setting('agentlog.tenant_id', true)")
