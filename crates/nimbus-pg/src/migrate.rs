//! Versioned schema migrations, one list per store ("component"), recorded in
//! [`SCHEMA_TABLE`] and applied at start under an advisory lock (nodes starting together
//! take turns; the second finds the work done).
//!
//! Rolling upgrades: a node may run against a schema newer than the one it knows, as long
//! as every migration past its own is [`Migration::additive`] (new tables, new nullable
//! columns: old code keeps working). The table records, per component, the oldest list
//! length that still works (`compatible`); a node that knows fewer migrations than that
//! refuses to start, saying which component and what to do.

use crate::{Pg, PgError, Result};

/// Where the applied versions are recorded.
pub const SCHEMA_TABLE: &str = "nimbus_schema";

/// One step of a component's schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Statements run in the migration's transaction.
    pub sql: &'static str,
    /// Code that knows only the steps before this one keeps working after it.
    pub additive: bool,
}

impl Migration {
    /// A step older code cannot work with (a changed or dropped column, new constraints
    /// it would break).
    pub const fn breaking(sql: &'static str) -> Self {
        Migration {
            sql,
            additive: false,
        }
    }

    /// A step older code keeps working with.
    pub const fn additive(sql: &'static str) -> Self {
        Migration {
            sql,
            additive: true,
        }
    }
}

/// The advisory lock key of the migrations (any fixed number; "nimbus" in ASCII).
const LOCK: i64 = 0x6e_69_6d_62_75_73;

impl Pg {
    /// Brings `component`'s schema to the end of `steps` (each step in order, with the
    /// version recorded in the same transaction). Fails, changing nothing, when the
    /// database was migrated by a newer Nimbus past what this one can work with.
    pub fn migrate(&self, component: &str, steps: &[Migration]) -> Result<()> {
        let known = steps.len() as i32;
        self.transaction(async |tx| {
            // Another node's migrations may take longer than the usual lock timeout.
            tx.batch_execute("SET LOCAL lock_timeout = '120s'").await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
                .await?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (
                    component  TEXT PRIMARY KEY,
                    version    INTEGER NOT NULL,
                    compatible INTEGER NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )"
            ))
            .await?;
            let row = tx
                .query_opt(
                    &format!("SELECT version, compatible FROM {SCHEMA_TABLE} WHERE component = $1"),
                    &[&component],
                )
                .await?;
            let (version, compatible) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
            if compatible > known {
                return Err(PgError::Schema(format!(
                    "the database's {component} schema is at version {version}, which needs a \
                     Nimbus that knows at least {compatible} of its migrations (this one knows \
                     {known}): upgrade this node's nimbus binary"
                )));
            }
            if version >= known {
                return Ok(());
            }
            let mut compatible = compatible;
            for (i, step) in steps.iter().enumerate().skip(version as usize) {
                tx.batch_execute(step.sql).await.map_err(|e| {
                    PgError::Schema(format!(
                        "migration {} of the {component} schema failed: {}",
                        i + 1,
                        crate::query_message(&e)
                    ))
                })?;
                if !step.additive {
                    compatible = i as i32 + 1;
                }
            }
            tx.execute(
                &format!(
                    "INSERT INTO {SCHEMA_TABLE} (component, version, compatible) VALUES ($1, $2, $3)
                     ON CONFLICT (component) DO UPDATE
                     SET version = EXCLUDED.version, compatible = EXCLUDED.compatible,
                         updated_at = now()"
                ),
                &[&component, &known, &compatible],
            )
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const STEPS: &[Migration] = &[
        Migration::breaking("CREATE TABLE things (id BIGINT PRIMARY KEY)"),
        Migration::additive("ALTER TABLE things ADD COLUMN label TEXT"),
    ];

    fn version(pg: &Pg, component: &str) -> (i32, i32) {
        pg.with(async |c| {
            let r = c
                .query_one(
                    "SELECT version, compatible FROM nimbus_schema WHERE component = $1",
                    &[&component],
                )
                .await?;
            Ok((r.get(0), r.get(1)))
        })
        .unwrap()
    }

    #[test]
    fn migrations_apply_once_in_order() {
        let db = TestDb::new("migrate");
        db.pg.migrate("things", &STEPS[..1]).unwrap();
        assert_eq!(version(&db.pg, "things"), (1, 1));
        db.pg.migrate("things", STEPS).unwrap();
        assert_eq!(version(&db.pg, "things"), (2, 1));
        // Again: nothing to do, nothing fails.
        db.pg.migrate("things", STEPS).unwrap();
        db.pg
            .with(async |c| {
                c.execute("INSERT INTO things (id, label) VALUES (1, 'a')", &[])
                    .await?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn an_older_node_works_past_additive_steps_only() {
        let db = TestDb::new("migrate_old");
        db.pg.migrate("things", STEPS).unwrap();
        // Knows only the first step: the second is additive, so it may run.
        db.pg.migrate("things", &STEPS[..1]).unwrap();
        // A breaking third step locks out both older lists.
        let mut newer = STEPS.to_vec();
        newer.push(Migration::breaking("ALTER TABLE things DROP COLUMN label"));
        db.pg.migrate("things", &newer).unwrap();
        let e = db.pg.migrate("things", STEPS).unwrap_err().to_string();
        assert!(
            e.contains("things schema is at version 3") && e.contains("upgrade"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_step_changes_nothing() {
        let db = TestDb::new("migrate_fail");
        let bad = [
            Migration::breaking("CREATE TABLE ok_table (id BIGINT)"),
            Migration::breaking("CREATE TABLE broken ("),
        ];
        let e = db.pg.migrate("bad", &bad).unwrap_err().to_string();
        assert!(
            e.contains("migration 2 of the bad schema failed") && e.contains("syntax error"),
            "the server's message is shown: {e}"
        );
        let tables: i64 = db
            .pg
            .with(async |c| {
                Ok(c.query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = 'ok_table'",
                    &[],
                )
                .await?
                .get(0))
            })
            .unwrap();
        assert_eq!(tables, 0, "the first step rolled back with the second");
    }

    #[test]
    fn a_lock_held_by_another_node_times_out_as_transient() {
        let db = TestDb::new("lock_timeout");
        db.pg.migrate("things", STEPS).unwrap();
        let other = Pg::connect(&crate::PgConfig::new(&db.url)).unwrap();
        let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                other
                    .transaction(async |tx| {
                        tx.execute("INSERT INTO things (id) VALUES (1)", &[])
                            .await?;
                        held.wait();
                        release.wait();
                        Ok(())
                    })
                    .unwrap()
            });
            held.wait();
            let t0 = std::time::Instant::now();
            let e = db
                .pg
                .with(async |c| {
                    c.execute("INSERT INTO things (id) VALUES (1)", &[]).await?;
                    Ok(())
                })
                .unwrap_err();
            release.wait();
            assert_eq!(e.code(), Some("55P03"), "{e}");
            assert!(e.is_transient());
            assert!(t0.elapsed() >= std::time::Duration::from_secs(4));
        });
    }

    #[test]
    fn concurrent_starts_migrate_once() {
        let db = TestDb::new("migrate_race");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pg = db.pg.clone();
                std::thread::spawn(move || pg.migrate("things", STEPS))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(version(&db.pg, "things"), (2, 1));
    }
}
