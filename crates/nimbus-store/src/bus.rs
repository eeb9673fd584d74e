//! Event buses and their rules (`DATA_DIR/bus.db`, its own file and migrations; WAL,
//! `synchronous=FULL`: a rule acknowledged by the API survives `kill -9`).
//!
//! A rule either matches events put on its bus (an EventBridge event pattern, stored as
//! JSON text) or fires on a schedule (an EventBridge schedule expression with a time zone).
//! Schedule rules carry a durable watermark, `last_fired_ms`: every firing at or before it
//! has been handed to the async engine, so a restarted scheduler resumes after it. In a
//! cluster the rules live in PostgreSQL ([`crate::postgres::bus::PgBusStore`]) and each
//! firing is claimed by one node ([`BusStore::claim_firing`]).

use crate::db::Db;
use crate::sqlite::open_db;
use crate::{Result, StoreError};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &["
CREATE TABLE buses (
    name       TEXT PRIMARY KEY NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE rules (
    bus           TEXT NOT NULL REFERENCES buses(name),
    name          TEXT NOT NULL,
    pattern       TEXT,
    schedule      TEXT,
    timezone      TEXT,
    enabled       INTEGER NOT NULL,
    targets       TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    last_fired_ms INTEGER,
    PRIMARY KEY (bus, name)
) STRICT;
"];

/// The bus every server has; it cannot be deleted.
pub const DEFAULT_BUS: &str = "default";

/// A named event bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bus {
    pub name: String,
    pub created_ms: i64,
}

/// Where a rule sends what it matched: a function (ARN or name, maybe qualified), with an
/// optional constant `Input` that replaces the event (as EventBridge's target `Input`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTarget {
    /// EventBridge's target `Id` (set through the AWS API; `None` from the native API,
    /// where targets are listed by position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// EventBridge's `SqsParameters.MessageGroupId`: the message group of what a FIFO queue
    /// target receives (required for one, refused for other targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_group_id: Option<String>,
}

/// A rule of a bus: exactly one of `pattern` (JSON text) and `schedule` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub bus: String,
    pub name: String,
    pub pattern: Option<String>,
    pub schedule: Option<String>,
    /// IANA time zone of a schedule (cron and `at` are read in it); `None` is UTC.
    pub timezone: Option<String>,
    pub enabled: bool,
    pub targets: Vec<RuleTarget>,
    pub created_ms: i64,
    /// Schedules: every firing at or before this instant has been submitted.
    pub last_fired_ms: Option<i64>,
}

/// Buses and rules.
pub trait BusStore: Send + Sync + 'static {
    /// Creates the bus if missing (idempotent); returns it.
    fn put_bus(&self, name: &str, now_ms: i64) -> Result<Bus>;
    /// `NotFound` when missing.
    fn get_bus(&self, name: &str) -> Result<Bus>;
    /// Sorted by name.
    fn list_buses(&self) -> Result<Vec<Bus>>;
    /// Deletes a bus without rules (`Conflict` while it has some, `NotFound` when missing).
    fn delete_bus(&self, name: &str) -> Result<()>;
    /// Creates or replaces a rule (its bus must exist). Creation sets `created_ms` and, for a
    /// schedule, the watermark to `now_ms`; a replacement keeps `created_ms`, and keeps the
    /// watermark unless the schedule or time zone changed (then it restarts at `now_ms`, so a
    /// new schedule never catches up on the old one's past).
    fn put_rule(&self, rule: &Rule, now_ms: i64) -> Result<Rule>;
    /// `NotFound` when missing.
    fn get_rule(&self, bus: &str, name: &str) -> Result<Rule>;
    /// Rules of `bus` (or of every bus), sorted by bus then name.
    fn list_rules(&self, bus: Option<&str>) -> Result<Vec<Rule>>;
    /// `NotFound` when missing.
    fn delete_rule(&self, bus: &str, name: &str) -> Result<()>;
    /// Moves a schedule rule's watermark forward to `fired_ms` (never backwards); a no-op
    /// for a rule deleted meanwhile.
    fn advance_watermark(&self, bus: &str, name: &str, fired_ms: i64) -> Result<()>;
    /// Claims the schedule firing at `fired_ms` (compare-and-set on the watermark): moves
    /// the rule's watermark to `fired_ms` when it is below it (or unset) and returns true;
    /// returns false, changing nothing, when the watermark is already at or past
    /// `fired_ms` (someone claimed this firing or a later one) or the rule is gone. The
    /// check and the move are one atomic step, so among any number of callers — threads,
    /// or nodes sharing one database — exactly one gets true for a given firing.
    ///
    /// How a scheduler running on several nodes uses it (instead of firing everything in
    /// `(watermark, now]` and then calling [`BusStore::advance_watermark`]): for each due
    /// firing `f` of a rule, oldest first, call `claim_firing(bus, name, f)`; on true, this
    /// node owns `f` and submits it (under its idempotency key, retrying a failed
    /// submission itself, since no other node will); on false, another node owns `f` and
    /// everything before it: stop handling this rule in this tick and read it again on the
    /// next one. Claiming before submitting makes a firing run on at most one node; a node
    /// that dies between its claim and its submission loses that firing (the idempotency
    /// key cannot bring it back). Moves that fire nothing (a disabled rule's window, the
    /// firings `skip` drops at start) keep using [`BusStore::advance_watermark`].
    fn claim_firing(&self, bus: &str, name: &str, fired_ms: i64) -> Result<bool>;
}

/// [`BusStore`] on SQLite.
pub struct SqliteBusStore {
    db: Mutex<Db>,
}

impl SqliteBusStore {
    /// Opens (or creates) `data_dir/bus.db`; the default bus always exists.
    pub fn open(data_dir: &Path, now_ms: i64) -> Result<Self> {
        let s = Self {
            db: Mutex::new(open_db(&data_dir.join("bus.db"), "FULL", MIGRATIONS)?),
        };
        s.put_bus(DEFAULT_BUS, now_ms)?;
        Ok(s)
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const RULE_COLUMNS: &str =
    "bus, name, pattern, schedule, timezone, enabled, targets, created_ms, last_fired_ms";

fn decode_rule(r: &Row<'_>) -> rusqlite::Result<Rule> {
    let targets: String = r.get(6)?;
    Ok(Rule {
        bus: r.get(0)?,
        name: r.get(1)?,
        pattern: r.get(2)?,
        schedule: r.get(3)?,
        timezone: r.get(4)?,
        enabled: r.get::<_, i64>(5)? != 0,
        targets: serde_json::from_str(&targets).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_ms: r.get(7)?,
        last_fired_ms: r.get(8)?,
    })
}

fn bus_missing(name: &str) -> StoreError {
    StoreError::NotFound(format!("event bus not found: {name}"))
}

impl BusStore for SqliteBusStore {
    fn put_bus(&self, name: &str, now_ms: i64) -> Result<Bus> {
        let db = self.db();
        db.execute(
            "INSERT INTO buses (name, created_ms) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![name, now_ms],
        )?;
        db.query_row(
            "SELECT name, created_ms FROM buses WHERE name = ?1",
            [name],
            |r| {
                Ok(Bus {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                })
            },
        )
        .map_err(Into::into)
    }

    fn get_bus(&self, name: &str) -> Result<Bus> {
        self.db()
            .query_row(
                "SELECT name, created_ms FROM buses WHERE name = ?1",
                [name],
                |r| {
                    Ok(Bus {
                        name: r.get(0)?,
                        created_ms: r.get(1)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| bus_missing(name))
    }

    fn list_buses(&self) -> Result<Vec<Bus>> {
        let db = self.db();
        let mut st = db.prepare_cached("SELECT name, created_ms FROM buses ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(Bus {
                name: r.get(0)?,
                created_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_bus(&self, name: &str) -> Result<()> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        let rules: i64 =
            tx.query_row("SELECT COUNT(*) FROM rules WHERE bus = ?1", [name], |r| {
                r.get(0)
            })?;
        if rules > 0 {
            return Err(StoreError::Conflict(format!(
                "event bus {name} still has {rules} rule(s): delete them first"
            )));
        }
        if tx.execute("DELETE FROM buses WHERE name = ?1", [name])? == 0 {
            return Err(bus_missing(name));
        }
        tx.commit()?;
        Ok(())
    }

    fn put_rule(&self, rule: &Rule, now_ms: i64) -> Result<Rule> {
        if rule.pattern.is_some() == rule.schedule.is_some() {
            return Err(StoreError::InvalidInput(
                "a rule has either an event pattern or a schedule expression".into(),
            ));
        }
        let targets = serde_json::to_string(&rule.targets)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let mut db = self.db();
        let tx = db.write_tx()?;
        let bus: Option<String> = tx
            .query_row("SELECT name FROM buses WHERE name = ?1", [&rule.bus], |r| {
                r.get(0)
            })
            .optional()?;
        if bus.is_none() {
            return Err(bus_missing(&rule.bus));
        }
        let old = tx
            .query_row(
                &format!("SELECT {RULE_COLUMNS} FROM rules WHERE bus = ?1 AND name = ?2"),
                params![rule.bus, rule.name],
                decode_rule,
            )
            .optional()?;
        let (created_ms, last_fired_ms) = match old {
            Some(old) if old.schedule == rule.schedule && old.timezone == rule.timezone => {
                (old.created_ms, old.last_fired_ms)
            }
            Some(old) => (old.created_ms, rule.schedule.as_ref().map(|_| now_ms)),
            None => (now_ms, rule.schedule.as_ref().map(|_| now_ms)),
        };
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO rules ({RULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                rule.bus,
                rule.name,
                rule.pattern,
                rule.schedule,
                rule.timezone,
                rule.enabled as i64,
                targets,
                created_ms,
                last_fired_ms
            ],
        )?;
        tx.commit()?;
        Ok(Rule {
            created_ms,
            last_fired_ms,
            ..rule.clone()
        })
    }

    fn get_rule(&self, bus: &str, name: &str) -> Result<Rule> {
        self.db()
            .query_row(
                &format!("SELECT {RULE_COLUMNS} FROM rules WHERE bus = ?1 AND name = ?2"),
                params![bus, name],
                decode_rule,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("rule not found: {name} on bus {bus}")))
    }

    fn list_rules(&self, bus: Option<&str>) -> Result<Vec<Rule>> {
        let db = self.db();
        let mut st = db.prepare_cached(&format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE ?1 IS NULL OR bus = ?1 ORDER BY bus, name"
        ))?;
        let rows = st.query_map([bus], decode_rule)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_rule(&self, bus: &str, name: &str) -> Result<()> {
        let n = self.db().execute(
            "DELETE FROM rules WHERE bus = ?1 AND name = ?2",
            params![bus, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "rule not found: {name} on bus {bus}"
            )));
        }
        Ok(())
    }

    fn advance_watermark(&self, bus: &str, name: &str, fired_ms: i64) -> Result<()> {
        self.db().execute(
            "UPDATE rules SET last_fired_ms = MAX(COALESCE(last_fired_ms, ?3), ?3)
             WHERE bus = ?1 AND name = ?2",
            params![bus, name, fired_ms],
        )?;
        Ok(())
    }

    fn claim_firing(&self, bus: &str, name: &str, fired_ms: i64) -> Result<bool> {
        // One statement: SQLite runs it under its write lock, so the check and the move
        // cannot interleave with another writer's.
        let n = self.db().execute(
            "UPDATE rules SET last_fired_ms = ?3
             WHERE bus = ?1 AND name = ?2 AND (last_fired_ms IS NULL OR last_fired_ms < ?3)",
            params![bus, name, fired_ms],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::bus::PgBusStore;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::{Pg, PgConfig};
    use std::sync::{Arc, Barrier};

    /// Opens the backend's store (again), as a restarted node or another node does.
    type Open<'a> = &'a dyn Fn(i64) -> Arc<dyn BusStore>;

    fn sqlite(body: fn(Open)) {
        let dir = tempfile::tempdir().unwrap();
        body(&|now| Arc::new(SqliteBusStore::open(dir.path(), now).unwrap()));
    }

    /// Every open is a pool of its own, as on another node.
    fn postgres(body: fn(Open)) {
        let db = TestDb::new("bus");
        body(&|now| {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgBusStore::open(&pg, now).unwrap())
        });
    }

    /// Runs each test body on SQLite and on PostgreSQL (`<body>::sqlite`, `<body>::postgres`).
    macro_rules! on_both_backends {
        ($($body:ident),* $(,)?) => {$(
            mod $body {
                #[test]
                fn sqlite() {
                    super::sqlite(super::$body)
                }
                #[test]
                fn postgres() {
                    super::postgres(super::$body)
                }
            }
        )*};
    }

    on_both_backends!(
        buses_and_rules_survive_reopen,
        a_firing_is_claimed_once,
        racing_claimants_win_each_firing_once,
    );

    fn rule(bus: &str, name: &str, schedule: Option<&str>) -> Rule {
        Rule {
            bus: bus.into(),
            name: name.into(),
            pattern: schedule
                .is_none()
                .then(|| r#"{"source":["a"]}"#.to_string()),
            schedule: schedule.map(str::to_string),
            timezone: None,
            enabled: true,
            targets: vec![RuleTarget {
                id: None,
                arn: "f".into(),
                input: None,
                message_group_id: None,
            }],
            created_ms: 0,
            last_fired_ms: None,
        }
    }

    fn buses_and_rules_survive_reopen(open: Open) {
        {
            let s = open(1);
            assert_eq!(s.list_buses().unwrap()[0].name, DEFAULT_BUS);
            s.put_bus("orders", 5).unwrap();
            assert_eq!(s.put_bus("orders", 9).unwrap().created_ms, 5);
            assert!(s
                .put_rule(&rule("nope", "r", None), 1)
                .unwrap_err()
                .is_not_found());
            let r = s.put_rule(&rule("orders", "r1", None), 10).unwrap();
            assert_eq!((r.created_ms, r.last_fired_ms), (10, None));
            let r = s
                .put_rule(&rule("default", "tick", Some("rate(1 minute)")), 20)
                .unwrap();
            assert_eq!(r.last_fired_ms, Some(20));
            s.advance_watermark("default", "tick", 80).unwrap();
            s.advance_watermark("default", "tick", 50).unwrap();
            assert!(s.delete_bus("orders").unwrap_err().is_conflict());
        }
        let s = open(100);
        assert_eq!(s.list_buses().unwrap().len(), 2);
        assert_eq!(s.get_bus(DEFAULT_BUS).unwrap().created_ms, 1);
        let tick = s.get_rule("default", "tick").unwrap();
        assert_eq!(tick.last_fired_ms, Some(80), "never moves backwards");
        assert_eq!(tick.targets, rule("default", "tick", None).targets);
        // Same schedule: the watermark stays; a new schedule restarts it.
        let mut again = rule("default", "tick", Some("rate(1 minute)"));
        again.enabled = false;
        let r = s.put_rule(&again, 200).unwrap();
        assert_eq!(
            (r.created_ms, r.last_fired_ms, r.enabled),
            (20, Some(80), false)
        );
        assert_eq!(s.get_rule("default", "tick").unwrap(), r);
        let r = s
            .put_rule(&rule("default", "tick", Some("rate(2 minutes)")), 300)
            .unwrap();
        assert_eq!((r.created_ms, r.last_fired_ms), (20, Some(300)));
        // A new time zone restarts it too.
        let mut zoned = rule("default", "tick", Some("rate(2 minutes)"));
        zoned.timezone = Some("Europe/Paris".into());
        let r = s.put_rule(&zoned, 400).unwrap();
        assert_eq!((r.created_ms, r.last_fired_ms), (20, Some(400)));
        // A schedule replaced by a pattern: no watermark.
        let r = s.put_rule(&rule("default", "tick", None), 500).unwrap();
        assert_eq!((r.created_ms, r.last_fired_ms), (20, None));
        let mut both = rule("default", "bad", Some("rate(1 minute)"));
        both.pattern = Some("{}".into());
        assert!(s.put_rule(&both, 1).unwrap_err().is_invalid_input());
        let names: Vec<_> = s
            .list_rules(None)
            .unwrap()
            .into_iter()
            .map(|r| (r.bus, r.name))
            .collect();
        assert_eq!(
            names,
            [
                ("default".into(), "tick".into()),
                ("orders".into(), "r1".into())
            ]
        );
        assert_eq!(s.list_rules(Some("orders")).unwrap().len(), 1);
        assert!(s.list_rules(Some("none")).unwrap().is_empty());
        s.delete_rule("orders", "r1").unwrap();
        assert!(s.delete_rule("orders", "r1").unwrap_err().is_not_found());
        assert!(s.get_rule("orders", "r1").unwrap_err().is_not_found());
        s.delete_bus("orders").unwrap();
        assert!(s.get_bus("orders").unwrap_err().is_not_found());
        assert!(s.delete_bus("orders").unwrap_err().is_not_found());
        // A deleted rule's watermark: a no-op.
        s.advance_watermark("orders", "r1", 10).unwrap();
    }

    fn a_firing_is_claimed_once(open: Open) {
        let s = open(1);
        s.put_rule(&rule("default", "tick", Some("rate(1 minute)")), 20)
            .unwrap();
        assert!(s.claim_firing("default", "tick", 60).unwrap());
        assert!(!s.claim_firing("default", "tick", 60).unwrap(), "once");
        assert!(!s.claim_firing("default", "tick", 40).unwrap(), "past");
        assert!(!s.claim_firing("default", "tick", 20).unwrap());
        assert_eq!(
            s.get_rule("default", "tick").unwrap().last_fired_ms,
            Some(60)
        );
        assert!(s.claim_firing("default", "tick", 120).unwrap());
        // advance_watermark past a firing makes it claimed.
        s.advance_watermark("default", "tick", 200).unwrap();
        assert!(!s.claim_firing("default", "tick", 180).unwrap());
        assert!(s.claim_firing("default", "tick", 240).unwrap());
        assert_eq!(
            s.get_rule("default", "tick").unwrap().last_fired_ms,
            Some(240)
        );
        // No watermark yet counts as below every firing; a missing rule claims nothing.
        s.put_rule(&rule("default", "pat", None), 1).unwrap();
        assert!(s.claim_firing("default", "pat", 5).unwrap());
        assert!(!s.claim_firing("default", "pat", 5).unwrap());
        assert!(!s.claim_firing("default", "gone", 5).unwrap());
        assert!(!s.claim_firing("nobus", "tick", 500).unwrap());
    }

    /// Two stores (on PostgreSQL, two pools: two nodes), two threads on each, all claiming
    /// every firing of one rule at the same moment: each firing has exactly one winner.
    fn racing_claimants_win_each_firing_once(open: Open) {
        const FIRINGS: i64 = 40;
        const THREADS: usize = 4;
        let stores = [open(1), open(1)];
        stores[0]
            .put_rule(&rule("default", "tick", Some("rate(1 minute)")), 0)
            .unwrap();
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let mut won = Vec::new();
                    for f in 1..=FIRINGS {
                        start.wait();
                        if store.claim_firing("default", "tick", f * 60_000).unwrap() {
                            won.push(f);
                        }
                    }
                    won
                })
            })
            .collect();
        let mut wins = vec![0; FIRINGS as usize + 1];
        for t in threads {
            for f in t.join().unwrap() {
                wins[f as usize] += 1;
            }
        }
        assert!(
            wins[1..].iter().all(|&w| w == 1),
            "winners per firing: {wins:?}"
        );
        assert_eq!(
            stores[1].get_rule("default", "tick").unwrap().last_fired_ms,
            Some(FIRINGS * 60_000)
        );
    }
}
