-- What every projection's schema keeps beside its read models (core and billing alike):
-- where each topic partition was applied up to, and which event ids were applied.
-- {schema} is replaced by the target schema (the live one, or a rebuild beside it).
CREATE TABLE {schema}.projection_positions (
    projection text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);
-- Every event id applied: an event re-published after a crash (same id) is applied once.
CREATE TABLE {schema}.applied_events (
    event_id text PRIMARY KEY
);
