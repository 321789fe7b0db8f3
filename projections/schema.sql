-- The core read models. Every row carries its tenant, and every table is a fold of events.
-- {schema} is replaced by the target schema (the live one, or a rebuild beside it).
CREATE TABLE {schema}.tenants (
    tenant_id text PRIMARY KEY,
    display_name text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE {schema}.api_keys (
    key_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    key_prefix text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);
CREATE TABLE {schema}.tools (
    tool_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    definition jsonb NOT NULL,
    secret_header_names jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE {schema}.agents (
    agent_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    version integer NOT NULL,
    config jsonb NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ON {schema}.agents (tenant_id, created_at, agent_id);
CREATE TABLE {schema}.agent_versions (
    agent_id text NOT NULL,
    version integer NOT NULL,
    tenant_id text NOT NULL,
    config jsonb NOT NULL,
    change text NOT NULL,
    changed jsonb NOT NULL,
    event_id text NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (agent_id, version)
);
CREATE TABLE {schema}.command_outcomes (
    command_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    subject text NOT NULL,
    outcome text NOT NULL,
    code text,
    detail text,
    recorded_at timestamptz NOT NULL
);
CREATE TABLE {schema}.sessions (
    session_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    agent_id text NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX ON {schema}.sessions (tenant_id, created_at, session_id);
CREATE TABLE {schema}.messages (
    message_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    session_id text NOT NULL,
    turn_id text NOT NULL,
    position bigint NOT NULL,
    role text NOT NULL,
    content text,
    tool_calls jsonb NOT NULL,
    tool_call_id text,
    created_at timestamptz NOT NULL
);
CREATE INDEX ON {schema}.messages (session_id, position);
CREATE TABLE {schema}.turns (
    turn_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    session_id text NOT NULL,
    status text NOT NULL,
    mode text NOT NULL,
    request text NOT NULL,
    agent_version integer,
    accepted_partition integer,
    accepted_offset bigint,
    answer_message_id text,
    error_code text,
    error_detail text,
    steps integer NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX ON {schema}.turns (session_id, requested_at);
CREATE TABLE {schema}.turn_steps (
    event_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    turn_id text NOT NULL,
    position bigint NOT NULL,
    type text NOT NULL,
    detail jsonb NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX ON {schema}.turn_steps (turn_id, position);
CREATE TABLE {schema}.tool_calls (
    tool_call_id text NOT NULL,
    tenant_id text NOT NULL,
    turn_id text NOT NULL,
    tool text NOT NULL,
    arguments jsonb NOT NULL,
    status text NOT NULL,
    code text,
    detail text,
    result text,
    requested_at timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (turn_id, tool_call_id)
);
