//! The schema of `flows.db` and its migrations (entry `i` takes `user_version` from `i`
//! to `i + 1`, all in one transaction).

use crate::store::error::{StoreError, StoreResult};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: machines, revisions, versions, aliases, executions, events, steps, tokens.
    "
CREATE TABLE machines (
    arn TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    machine_type TEXT NOT NULL,
    status TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE revisions (
    revision_id TEXT PRIMARY KEY,
    machine_arn TEXT NOT NULL,
    definition TEXT NOT NULL,
    role_arn TEXT NOT NULL,
    logging TEXT NOT NULL,
    tracing TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX revisions_by_machine ON revisions (machine_arn);
CREATE TABLE versions (
    machine_arn TEXT NOT NULL,
    version INTEGER NOT NULL,
    revision_id TEXT NOT NULL,
    description TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (machine_arn, version)
);
CREATE TABLE aliases (
    machine_arn TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    routing TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (machine_arn, name)
);
CREATE TABLE executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    start_date INTEGER NOT NULL,
    stop_date INTEGER,
    redrive_count INTEGER NOT NULL DEFAULT 0,
    redrive_date INTEGER,
    trace_header TEXT,
    event_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_machine ON executions (machine_arn, start_date DESC, id DESC);
CREATE INDEX executions_by_stop ON executions (stop_date) WHERE stop_date IS NOT NULL;
CREATE TABLE events (
    execution_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    previous_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    type TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (execution_id, id)
) WITHOUT ROWID;
CREATE TABLE steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    due INTEGER NOT NULL,
    payload TEXT NOT NULL,
    task_token TEXT,
    resolution TEXT,
    claim TEXT,
    available_at INTEGER NOT NULL
);
CREATE INDEX steps_available ON steps (available_at, id);
CREATE INDEX steps_by_execution ON steps (execution_id);
CREATE TABLE task_tokens (
    token TEXT PRIMARY KEY,
    execution_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    resolution TEXT,
    created INTEGER NOT NULL,
    heartbeat INTEGER
);
CREATE INDEX task_tokens_by_step ON task_tokens (execution_id, scope, state, attempt);
",
    // 2: fan-outs (Parallel branches, Map iterations) and their children.
    "
CREATE TABLE joins (
    execution_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    parent_scope TEXT NOT NULL,
    parent_state TEXT NOT NULL,
    parent_attempt INTEGER NOT NULL,
    parent_payload TEXT NOT NULL,
    total INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    tolerated INTEGER NOT NULL,
    next_index INTEGER NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0,
    first_error TEXT,
    PRIMARY KEY (execution_id, key)
) WITHOUT ROWID;
CREATE TABLE join_items (
    execution_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL,
    result TEXT,
    PRIMARY KEY (execution_id, key, idx)
) WITHOUT ROWID;
",
    // 3: where a failed execution's redrive starts.
    "ALTER TABLE executions ADD COLUMN redrive_step TEXT;",
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {current}, this nimbus knows up to {known}: upgrade nimbus",
            path.display()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}
