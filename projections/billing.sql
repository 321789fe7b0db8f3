-- The billing read models: a fold of the usage and billing topics, in a schema of their
-- own so that they are replayed and swapped apart from the core read models.
CREATE TABLE {schema}.log_source (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cluster_id text NOT NULL,
    topic_prefix text NOT NULL
);
CREATE TABLE {schema}.operators (
    operator_id text PRIMARY KEY,
    display_name text NOT NULL,
    key_id text NOT NULL UNIQUE,
    key_prefix text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);
CREATE TABLE {schema}.price_plans (
    plan_id text NOT NULL,
    version integer NOT NULL,
    currency text NOT NULL,
    plan jsonb NOT NULL,
    operator_id text NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (plan_id, version)
);
CREATE TABLE {schema}.plan_assignments (
    tenant_id text NOT NULL,
    effective_from timestamptz NOT NULL,
    plan_id text NOT NULL,
    version integer NOT NULL,
    operator_id text NOT NULL,
    billing_partition integer NOT NULL,
    billing_offset bigint NOT NULL,
    assigned_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, effective_from)
);
-- One row per usage event (its first occurrence in the log), deduplicated by event id.
CREATE TABLE {schema}.usage_ledger (
    event_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    kind text NOT NULL,
    resource text NOT NULL,
    quantities jsonb NOT NULL,
    used_at timestamptz NOT NULL,
    agent_id text NOT NULL,
    agent_version integer NOT NULL,
    session_id text NOT NULL,
    turn_id text NOT NULL,
    step integer NOT NULL,
    call_id text NOT NULL,
    trace_id text NOT NULL,
    usage_partition integer NOT NULL,
    usage_offset bigint NOT NULL
);
CREATE INDEX ON {schema}.usage_ledger (tenant_id, used_at, event_id);
-- Usage by tenant × day × agent × (kind, resource, unit).
CREATE TABLE {schema}.usage_daily (
    tenant_id text NOT NULL,
    day date NOT NULL,
    agent_id text NOT NULL,
    kind text NOT NULL,
    resource text NOT NULL,
    unit text NOT NULL,
    quantity bigint NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, agent_id, kind, resource, unit)
);
CREATE TABLE {schema}.invoices (
    invoice_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    period text NOT NULL,
    currency text NOT NULL,
    revision integer NOT NULL,
    total numeric NOT NULL,
    content_hash text NOT NULL,
    drafted_at timestamptz NOT NULL
);
CREATE INDEX ON {schema}.invoices (tenant_id, period, invoice_id);
CREATE TABLE {schema}.invoice_revisions (
    invoice_id text NOT NULL,
    revision integer NOT NULL,
    tenant_id text NOT NULL,
    request_id text NOT NULL,
    period text NOT NULL,
    currency text NOT NULL,
    subtotal numeric NOT NULL,
    total numeric NOT NULL,
    lines jsonb NOT NULL,
    plans jsonb NOT NULL,
    offsets jsonb NOT NULL,
    usage_events integer NOT NULL,
    content_hash text NOT NULL,
    changes jsonb NOT NULL,
    event_id text NOT NULL,
    drafted_at timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, revision)
);
-- Every draft request and what became of it.
CREATE TABLE {schema}.draft_requests (
    request_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    invoice_id text NOT NULL,
    period text NOT NULL,
    status text NOT NULL,
    revision integer,
    code text,
    detail text,
    billing_partition integer NOT NULL,
    billing_offset bigint NOT NULL,
    requested_at timestamptz NOT NULL
)
