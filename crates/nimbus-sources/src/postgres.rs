//! The PostgreSQL backend of [`SourceStore`] and [`TargetStore`] (cluster mode): source
//! mappings, connector checkpoints, targets and the outbox in the tables `sources_…` of
//! the cluster's database, with the SQLite backend's semantics.
//!
//! Several nodes share these rows. The store keeps each operation atomic; deciding which
//! node polls a mapping or drains a target's outbox (so one node at a time does) is the
//! runners' business, through leases, not the store's.

use crate::error::{Result, SourceError};
use crate::model::SourceMapping;
use crate::store::SourceStore;
use crate::targets::store::{OutboxMessage, TargetStore};
use crate::targets::Target;
use nimbus_pg::{Migration, Pg, PgError};

const MIGRATIONS: &[Migration] = &[Migration::breaking(
    "
CREATE TABLE sources_mappings (
    uuid    TEXT PRIMARY KEY,
    created BIGINT NOT NULL,
    body    TEXT NOT NULL
);
CREATE TABLE sources_checkpoints (
    uuid  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (uuid, key)
);
CREATE TABLE sources_targets (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE sources_outbox (
    seq        BIGSERIAL PRIMARY KEY,
    target     TEXT NOT NULL REFERENCES sources_targets (name) ON DELETE CASCADE,
    body       TEXT NOT NULL,
    trace      TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    next_ms    BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX sources_outbox_by_target ON sources_outbox (target, seq);
",
)];

/// Source mappings, checkpoints, targets and the outbox in PostgreSQL.
pub struct PgSourceStore {
    pg: Pg,
}

impl PgSourceStore {
    /// Brings the `sources` schema up to date.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("sources", MIGRATIONS).map_err(store_error)?;
        Ok(Self { pg: pg.clone() })
    }
}

fn store_error(e: PgError) -> SourceError {
    SourceError::Store(e.to_string())
}

fn decode_mapping(body: String) -> Result<SourceMapping> {
    serde_json::from_str(&body).map_err(|e| SourceError::Store(format!("corrupt mapping: {e}")))
}

fn decode_target(body: String) -> Result<Target> {
    serde_json::from_str(&body).map_err(|e| SourceError::Store(format!("corrupt target: {e}")))
}

impl SourceStore for PgSourceStore {
    fn create(&self, m: &SourceMapping) -> Result<()> {
        let body = serde_json::to_string(m).expect("a mapping serialises");
        let n = self
            .pg
            .with(async |c| {
                Ok(c.execute(
                    "INSERT INTO sources_mappings (uuid, created, body) VALUES ($1, $2, $3)
                     ON CONFLICT (uuid) DO NOTHING",
                    &[&m.uuid, &crate::source::now_ms(), &body],
                )
                .await?)
            })
            .map_err(store_error)?;
        if n == 0 {
            return Err(SourceError::Config(format!(
                "a mapping with id {} exists",
                m.uuid
            )));
        }
        Ok(())
    }

    fn get(&self, uuid: &str) -> Result<Option<SourceMapping>> {
        let body: Option<String> = self
            .pg
            .with(async |c| {
                Ok(c.query_opt(
                    "SELECT body FROM sources_mappings WHERE uuid = $1",
                    &[&uuid],
                )
                .await?
                .map(|r| r.get(0)))
            })
            .map_err(store_error)?;
        body.map(decode_mapping).transpose()
    }

    fn update(&self, m: &SourceMapping) -> Result<bool> {
        let body = serde_json::to_string(m).expect("a mapping serialises");
        let n = self
            .pg
            .with(async |c| {
                Ok(c.execute(
                    "UPDATE sources_mappings SET body = $2 WHERE uuid = $1",
                    &[&m.uuid, &body],
                )
                .await?)
            })
            .map_err(store_error)?;
        Ok(n > 0)
    }

    fn delete(&self, uuid: &str) -> Result<Option<SourceMapping>> {
        let body: Option<String> = self
            .pg
            .transaction(async |tx| {
                let body = tx
                    .query_opt(
                        "DELETE FROM sources_mappings WHERE uuid = $1 RETURNING body",
                        &[&uuid],
                    )
                    .await?
                    .map(|r| r.get(0));
                tx.execute("DELETE FROM sources_checkpoints WHERE uuid = $1", &[&uuid])
                    .await?;
                Ok(body)
            })
            .map_err(store_error)?;
        body.map(decode_mapping).transpose()
    }

    fn list(&self) -> Result<Vec<SourceMapping>> {
        let bodies: Vec<String> = self
            .pg
            .with(async |c| {
                Ok(c.query(
                    "SELECT body FROM sources_mappings ORDER BY created, uuid",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
            })
            .map_err(store_error)?;
        bodies.into_iter().map(decode_mapping).collect()
    }

    fn checkpoint(&self, uuid: &str, key: &str) -> Result<Option<String>> {
        self.pg
            .with(async |c| {
                Ok(c.query_opt(
                    "SELECT value FROM sources_checkpoints WHERE uuid = $1 AND key = $2",
                    &[&uuid, &key],
                )
                .await?
                .map(|r| r.get(0)))
            })
            .map_err(store_error)
    }

    fn set_checkpoint(&self, uuid: &str, key: &str, value: &str) -> Result<()> {
        self.pg
            .with(async |c| {
                c.execute(
                    "INSERT INTO sources_checkpoints (uuid, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (uuid, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&uuid, &key, &value],
                )
                .await?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn delete_checkpoint(&self, uuid: &str, key: &str) -> Result<()> {
        self.pg
            .with(async |c| {
                c.execute(
                    "DELETE FROM sources_checkpoints WHERE uuid = $1 AND key = $2",
                    &[&uuid, &key],
                )
                .await?;
                Ok(())
            })
            .map_err(store_error)
    }
}

impl TargetStore for PgSourceStore {
    fn put_target(&self, t: &Target) -> Result<()> {
        let body = serde_json::to_string(t).expect("a target serialises");
        self.pg
            .with(async |c| {
                c.execute(
                    "INSERT INTO sources_targets (name, body) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
                    &[&t.name, &body],
                )
                .await?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn get_target(&self, name: &str) -> Result<Option<Target>> {
        let body: Option<String> = self
            .pg
            .with(async |c| {
                Ok(
                    c.query_opt("SELECT body FROM sources_targets WHERE name = $1", &[&name])
                        .await?
                        .map(|r| r.get(0)),
                )
            })
            .map_err(store_error)?;
        body.map(decode_target).transpose()
    }

    fn list_targets(&self) -> Result<Vec<Target>> {
        let bodies: Vec<String> = self
            .pg
            .with(async |c| {
                Ok(
                    c.query("SELECT body FROM sources_targets ORDER BY name", &[])
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect(),
                )
            })
            .map_err(store_error)?;
        bodies.into_iter().map(decode_target).collect()
    }

    fn delete_target(&self, name: &str) -> Result<Option<u64>> {
        self.pg
            .transaction(async |tx| {
                // Counted before the cascade removes them.
                let dropped = tx
                    .execute("DELETE FROM sources_outbox WHERE target = $1", &[&name])
                    .await?;
                let n = tx
                    .execute("DELETE FROM sources_targets WHERE name = $1", &[&name])
                    .await?;
                Ok((n > 0).then_some(dropped))
            })
            .map_err(store_error)
    }

    fn enqueue(&self, target: &str, body: &str, trace: Option<&str>, now_ms: i64) -> Result<i64> {
        // The foreign key makes the check and the insert one atomic step: a target deleted
        // by another node meanwhile refuses the message instead of orphaning it.
        let seq = self.pg.with(async |c| {
            Ok(c.query_one(
                "INSERT INTO sources_outbox (target, body, trace, created_ms, next_ms)
                 VALUES ($1, $2, $3, $4, $4) RETURNING seq",
                &[&target, &body, &trace, &now_ms],
            )
            .await?
            .get::<_, i64>(0))
        });
        match seq {
            Ok(seq) => Ok(seq),
            Err(e) if e.code() == Some("23503") => Err(SourceError::Missing(format!(
                "no target {target}: declare it with PUT /v1/targets/{target}"
            ))),
            Err(e) => Err(store_error(e)),
        }
    }

    fn head(&self, target: &str, limit: usize) -> Result<Vec<OutboxMessage>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pg
            .with(async |c| {
                let rows = c
                    .query(
                        "SELECT seq, target, body, trace, attempts, created_ms, next_ms
                         FROM sources_outbox WHERE target = $1 ORDER BY seq LIMIT $2",
                        &[&target, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| OutboxMessage {
                        seq: r.get(0),
                        target: r.get(1),
                        body: r.get(2),
                        trace: r.get(3),
                        attempts: r.get::<_, i32>(4).max(0) as u32,
                        created_ms: r.get(5),
                        next_ms: r.get(6),
                    })
                    .collect())
            })
            .map_err(store_error)
    }

    fn delivered(&self, seq: i64) -> Result<()> {
        self.pg
            .with(async |c| {
                c.execute("DELETE FROM sources_outbox WHERE seq = $1", &[&seq])
                    .await?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn failed(&self, seq: i64, next_ms: i64, error: &str) -> Result<()> {
        self.pg
            .with(async |c| {
                c.execute(
                    "UPDATE sources_outbox SET attempts = attempts + 1, next_ms = $2,
                     last_error = $3 WHERE seq = $1",
                    &[&seq, &next_ms, &error],
                )
                .await?;
                Ok(())
            })
            .map_err(store_error)
    }

    fn depth(&self, target: &str) -> Result<u64> {
        self.pg
            .with(async |c| {
                Ok(c.query_one(
                    "SELECT count(*) FROM sources_outbox WHERE target = $1",
                    &[&target],
                )
                .await?
                .get::<_, i64>(0) as u64)
            })
            .map_err(store_error)
    }
}

/// The store suite, run on both backends: every behaviour of the SQLite store holds on
/// PostgreSQL, and the other way round.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Kind, SourceSpec, StartingPosition};
    use crate::store::SqliteSourceStore;
    use nimbus_pg::testing::TestDb;
    use std::collections::BTreeMap;

    pub(crate) fn mapping(uuid: &str) -> SourceMapping {
        SourceMapping::new(
            uuid.into(),
            "f".into(),
            SourceSpec {
                kind: Kind::Redis,
                endpoints: vec!["redis://127.0.0.1:6379".into()],
                topics: vec!["s".into()],
                group: None,
                secret: None,
                options: Default::default(),
                starting_position: StartingPosition::TrimHorizon,
            },
        )
    }

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            kind: Kind::Nats,
            endpoints: vec!["nats://127.0.0.1:4222".into()],
            secret: None,
            options: BTreeMap::from([("subject".to_string(), "out".to_string())]),
            last_modified_s: 0,
        }
    }

    /// Mappings and checkpoints; `reopen` gives a new handle on the same data.
    fn mappings_and_checkpoints<S: SourceStore>(reopen: impl Fn() -> S) {
        let m = mapping("a1");
        {
            let s = reopen();
            s.create(&m).unwrap();
            assert!(matches!(s.create(&m), Err(SourceError::Config(_))));
            s.set_checkpoint("a1", "lsn", "0/16").unwrap();
            s.set_checkpoint("a1", "lsn", "0/17").unwrap();
            s.set_checkpoint("a1", "other", "x").unwrap();
            s.delete_checkpoint("a1", "other").unwrap();
        }
        let s = reopen();
        assert_eq!(s.list().unwrap(), vec![m.clone()]);
        assert_eq!(s.checkpoint("a1", "lsn").unwrap().as_deref(), Some("0/17"));
        assert_eq!(s.checkpoint("a1", "other").unwrap(), None);
        let mut m2 = m.clone();
        m2.enabled = false;
        assert!(s.update(&m2).unwrap());
        assert_eq!(s.get("a1").unwrap(), Some(m2.clone()));
        s.create(&mapping("b2")).unwrap();
        let ids: Vec<String> = s.list().unwrap().into_iter().map(|m| m.uuid).collect();
        assert_eq!(ids, ["a1", "b2"], "oldest first");
        assert_eq!(s.delete("a1").unwrap(), Some(m2));
        assert_eq!(s.delete("a1").unwrap(), None);
        assert_eq!(s.checkpoint("a1", "lsn").unwrap(), None);
        assert!(!s.update(&m).unwrap());
        assert_eq!(s.get("a1").unwrap(), None);
    }

    fn targets_and_outbox<S: TargetStore>(s: S) {
        assert!(matches!(
            s.enqueue("out", "x", None, 1),
            Err(SourceError::Missing(m)) if m.contains("no target out")
        ));
        s.put_target(&target("out")).unwrap();
        let mut t2 = target("out");
        t2.last_modified_s = 5;
        s.put_target(&t2).unwrap();
        assert_eq!(s.get_target("out").unwrap(), Some(t2));
        s.put_target(&target("another")).unwrap();
        let names: Vec<String> = s
            .list_targets()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["another", "out"]);
        let a = s.enqueue("out", "m1", Some("00-aa-bb-01"), 10).unwrap();
        let b = s.enqueue("out", "m2", None, 11).unwrap();
        s.enqueue("another", "n1", None, 12).unwrap();
        assert!(b > a);
        s.failed(a, 500, "broker down").unwrap();
        let head = s.head("out", 10).unwrap();
        assert_eq!(head.len(), 2);
        assert_eq!(
            head[0],
            OutboxMessage {
                seq: a,
                target: "out".into(),
                body: "m1".into(),
                trace: Some("00-aa-bb-01".into()),
                attempts: 1,
                created_ms: 10,
                next_ms: 500,
            }
        );
        assert_eq!(s.head("out", 1).unwrap().len(), 1);
        s.delivered(a).unwrap();
        assert_eq!(s.depth("out").unwrap(), 1);
        assert_eq!(s.delete_target("out").unwrap(), Some(1));
        assert_eq!(s.delete_target("out").unwrap(), None);
        assert_eq!(s.depth("out").unwrap(), 0);
        assert_eq!(s.depth("another").unwrap(), 1);
    }

    #[test]
    fn mappings_and_checkpoints_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        mappings_and_checkpoints(|| SqliteSourceStore::open(dir.path()).unwrap());
    }

    #[test]
    fn mappings_and_checkpoints_postgres() {
        let db = TestDb::new("sources");
        mappings_and_checkpoints(|| {
            PgSourceStore::open(&Pg::connect(&nimbus_pg::PgConfig::new(&db.url)).unwrap()).unwrap()
        });
    }

    #[test]
    fn targets_and_outbox_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        targets_and_outbox(SqliteSourceStore::open(dir.path()).unwrap());
    }

    #[test]
    fn targets_and_outbox_postgres() {
        let db = TestDb::new("targets");
        targets_and_outbox(PgSourceStore::open(&db.pg).unwrap());
    }

    /// Two nodes creating the same mapping at once: exactly one succeeds.
    #[test]
    fn concurrent_creates_from_two_nodes_make_one_mapping() {
        let db = TestDb::new("sources_race");
        let stores: Vec<_> = (0..2)
            .map(|_| {
                PgSourceStore::open(&Pg::connect(&nimbus_pg::PgConfig::new(&db.url)).unwrap())
                    .unwrap()
            })
            .collect();
        std::thread::scope(|s| {
            let results: Vec<_> = stores
                .iter()
                .map(|st| {
                    s.spawn(move || {
                        (0..20)
                            .map(|i| st.create(&mapping(&format!("m{i}"))).is_ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            for i in 0..20 {
                assert_eq!(
                    results.iter().filter(|r| r[i]).count(),
                    1,
                    "mapping m{i} created exactly once"
                );
            }
        });
        assert_eq!(stores[0].list().unwrap().len(), 20);
    }
}
