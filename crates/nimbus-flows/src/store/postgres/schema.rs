//! The `flows_…` tables and their migrations (component `flows` in
//! [`nimbus_pg::SCHEMA_TABLE`]). Never edit a landed migration: add one.

use nimbus_pg::Migration;

pub(super) const COMPONENT: &str = "flows";

pub(super) const MIGRATIONS: &[Migration] = &[
    // 1: machines, revisions, versions, aliases, executions, events, steps, tokens,
    // fan-outs (the SQLite schema's three migrations in one).
    Migration::breaking(
        "
CREATE TABLE flows_machines (
    arn TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    machine_type TEXT NOT NULL,
    status TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    next_version BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE flows_revisions (
    revision_id TEXT PRIMARY KEY,
    machine_arn TEXT NOT NULL,
    definition TEXT NOT NULL,
    role_arn TEXT NOT NULL,
    logging TEXT NOT NULL,
    tracing TEXT NOT NULL,
    created BIGINT NOT NULL
);
CREATE INDEX flows_revisions_by_machine ON flows_revisions (machine_arn);
CREATE TABLE flows_versions (
    machine_arn TEXT NOT NULL,
    version BIGINT NOT NULL,
    revision_id TEXT NOT NULL,
    description TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (machine_arn, version)
);
CREATE INDEX flows_versions_by_revision ON flows_versions (revision_id);
CREATE TABLE flows_aliases (
    machine_arn TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    routing TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (machine_arn, name)
);
CREATE TABLE flows_executions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    machine_arn TEXT NOT NULL,
    name TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    version_arn TEXT,
    alias_arn TEXT,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    cause TEXT,
    start_date BIGINT NOT NULL,
    stop_date BIGINT,
    redrive_count BIGINT NOT NULL DEFAULT 0,
    redrive_date BIGINT,
    trace_header TEXT,
    event_count BIGINT NOT NULL DEFAULT 0,
    redrive_step TEXT
);
CREATE INDEX flows_executions_by_machine
    ON flows_executions (machine_arn, start_date DESC, id DESC);
CREATE INDEX flows_executions_by_stop ON flows_executions (stop_date)
    WHERE stop_date IS NOT NULL;
CREATE INDEX flows_executions_by_revision ON flows_executions (revision_id);
CREATE TABLE flows_events (
    execution_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    previous_id BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    type TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (execution_id, id)
);
CREATE TABLE flows_steps (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id BIGINT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    due BIGINT NOT NULL,
    payload TEXT NOT NULL,
    task_token TEXT,
    resolution TEXT,
    claim TEXT,
    available_at BIGINT NOT NULL
);
CREATE INDEX flows_steps_available ON flows_steps (available_at, id);
CREATE INDEX flows_steps_by_execution ON flows_steps (execution_id);
CREATE TABLE flows_task_tokens (
    token TEXT PRIMARY KEY,
    execution_id BIGINT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    created BIGINT NOT NULL,
    heartbeat BIGINT
);
CREATE INDEX flows_task_tokens_by_step
    ON flows_task_tokens (execution_id, scope, state, attempt);
CREATE TABLE flows_joins (
    execution_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    parent_scope TEXT NOT NULL,
    parent_state TEXT NOT NULL,
    parent_attempt BIGINT NOT NULL,
    parent_payload TEXT NOT NULL,
    total BIGINT NOT NULL,
    max_concurrency BIGINT NOT NULL,
    tolerated BIGINT NOT NULL,
    next_index BIGINT NOT NULL,
    succeeded BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    closed BOOLEAN NOT NULL DEFAULT FALSE,
    first_error TEXT,
    PRIMARY KEY (execution_id, key)
);
CREATE TABLE flows_join_items (
    execution_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    idx BIGINT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (execution_id, key, idx)
);
",
    ),
];
