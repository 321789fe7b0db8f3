"""The operators' activity read model (``projections.activity``): turns and model calls
summed over spans of 1, 10 and 60 minutes. ``turn_activity`` rows are a tenant's; the
latency histograms of turns and model calls are every tenant's together, and only a
session that names every tenant (an operator's) reads them.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

READER = "agentlog_reader"
SCOPE = "current_setting('agentlog.tenant_id', true)"
TENANT_ROWS = f"tenant_id = {SCOPE} OR {SCOPE} = '*'"
OPERATORS_ONLY = f"{SCOPE} = '*'"
TABLES = {
    "turn_activity": (
        """
        span smallint NOT NULL,
        start timestamptz NOT NULL,
        tenant_id text NOT NULL,
        agent_id text NOT NULL,
        outcome text NOT NULL,
        error_code text NOT NULL,
        turns bigint NOT NULL,
        latency_ms bigint NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        PRIMARY KEY (span, start, tenant_id, agent_id, outcome, error_code)
        """,
        TENANT_ROWS,
    ),
    "turn_latency": (
        """
        span smallint NOT NULL,
        start timestamptz NOT NULL,
        outcome text NOT NULL,
        latency_bucket smallint NOT NULL,
        turns bigint NOT NULL,
        PRIMARY KEY (span, start, outcome, latency_bucket)
        """,
        OPERATORS_ONLY,
    ),
    "model_activity": (
        """
        span smallint NOT NULL,
        start timestamptz NOT NULL,
        provider text NOT NULL,
        model text NOT NULL,
        outcome text NOT NULL,
        error_code text NOT NULL,
        latency_bucket smallint NOT NULL,
        calls bigint NOT NULL,
        latency_ms bigint NOT NULL,
        input_tokens bigint NOT NULL,
        cached_input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        PRIMARY KEY (span, start, provider, model, outcome, error_code, latency_bucket)
        """,
        OPERATORS_ONLY,
    ),
}


def upgrade(schema: str) -> None:
    for table, (columns, visible) in TABLES.items():
        op.execute(f'CREATE TABLE "{schema}".{table} ({columns})')
        op.execute(f'GRANT SELECT ON "{schema}".{table} TO {READER}')
        op.execute(f'ALTER TABLE "{schema}".{table} ENABLE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY tenant_isolation ON "{schema}".{table} TO {READER} USING ({visible})'
        )


def downgrade(schema: str) -> None:
    for table in TABLES:
        op.execute(f'DROP TABLE "{schema}".{table}')
