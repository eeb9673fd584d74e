//! [`crate::BusStore`] on PostgreSQL (component `bus`, tables `bus_buses` and
//! `bus_rules`): the same buses, rules and watermarks as [`crate::SqliteBusStore`], shared
//! by every node.
//!
//! Where SQLite relies on its single writer, this backend relies on row locks and single
//! statements: a rule is written by one upsert (its kept creation time and watermark are
//! decided on the locked row, so two nodes replacing a rule at once cannot lose either
//! rule), a bus is deleted under `FOR UPDATE` on its row while rule writers hold
//! `FOR KEY SHARE` on it (and a foreign key backs that up), and a firing is claimed by one
//! conditional `UPDATE` ([`crate::BusStore::claim_firing`]): under READ COMMITTED a
//! second claimant waits for the first's commit and then re-checks the condition on the
//! new watermark, so exactly one of them wins.

use crate::bus::{Bus, BusStore, Rule, RuleTarget, DEFAULT_BUS};
use crate::{Result, StoreError};
use nimbus_pg::{Migration, Pg, Row};

const MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE bus_buses (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_ms BIGINT NOT NULL
);
CREATE TABLE bus_rules (
    bus           TEXT COLLATE "C" NOT NULL REFERENCES bus_buses(name),
    name          TEXT COLLATE "C" NOT NULL,
    pattern       TEXT,
    schedule      TEXT,
    timezone      TEXT,
    enabled       BOOLEAN NOT NULL,
    targets       TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    last_fired_ms BIGINT,
    PRIMARY KEY (bus, name)
);
"#,
)];

const RULE_COLUMNS: &str =
    "bus, name, pattern, schedule, timezone, enabled, targets, created_ms, last_fired_ms";

/// [`BusStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PgBusStore {
    pg: Pg,
}

impl PgBusStore {
    /// Brings the `bus` schema up to date; the default bus always exists (created at
    /// `now_ms` by the first node to open the store).
    pub fn open(pg: &Pg, now_ms: i64) -> Result<Self> {
        pg.migrate("bus", MIGRATIONS)?;
        let s = Self { pg: pg.clone() };
        s.put_bus(DEFAULT_BUS, now_ms)?;
        Ok(s)
    }
}

fn decode_bus(r: &Row) -> Bus {
    Bus {
        name: r.get(0),
        created_ms: r.get(1),
    }
}

fn decode_rule(r: &Row) -> Result<Rule> {
    let targets: String = r.get(6);
    let targets: Vec<RuleTarget> = serde_json::from_str(&targets).map_err(|e| {
        StoreError::Corrupt(format!(
            "targets of rule {} on bus {}: {e}",
            r.get::<_, String>(1),
            r.get::<_, String>(0)
        ))
    })?;
    Ok(Rule {
        bus: r.get(0),
        name: r.get(1),
        pattern: r.get(2),
        schedule: r.get(3),
        timezone: r.get(4),
        enabled: r.get(5),
        targets,
        created_ms: r.get(7),
        last_fired_ms: r.get(8),
    })
}

fn bus_missing(name: &str) -> StoreError {
    StoreError::NotFound(format!("event bus not found: {name}"))
}

fn rule_missing(bus: &str, name: &str) -> StoreError {
    StoreError::NotFound(format!("rule not found: {name} on bus {bus}"))
}

impl BusStore for PgBusStore {
    fn put_bus(&self, name: &str, now_ms: i64) -> Result<Bus> {
        // The no-op update returns the stored row (and its creation time) whether this call
        // or an earlier one created it, in one atomic statement.
        let row = self.pg.with(async |c| {
            Ok(c.query_one(
                "INSERT INTO bus_buses (name, created_ms) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING name, created_ms",
                &[&name, &now_ms],
            )
            .await?)
        })?;
        Ok(decode_bus(&row))
    }

    fn get_bus(&self, name: &str) -> Result<Bus> {
        let row = self.pg.with(async |c| {
            Ok(c.query_opt(
                "SELECT name, created_ms FROM bus_buses WHERE name = $1",
                &[&name],
            )
            .await?)
        })?;
        row.as_ref()
            .map(decode_bus)
            .ok_or_else(|| bus_missing(name))
    }

    fn list_buses(&self) -> Result<Vec<Bus>> {
        let rows = self.pg.with(async |c| {
            Ok(
                c.query("SELECT name, created_ms FROM bus_buses ORDER BY name", &[])
                    .await?,
            )
        })?;
        Ok(rows.iter().map(decode_bus).collect())
    }

    fn delete_bus(&self, name: &str) -> Result<()> {
        self.pg.transaction(async |tx| {
            // Rule writers hold FOR KEY SHARE on the bus: none can add a rule between
            // the count and the delete.
            let found = tx
                .query_opt(
                    "SELECT 1 FROM bus_buses WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .await?
                .is_some();
            let rules: i64 = tx
                .query_one("SELECT COUNT(*) FROM bus_rules WHERE bus = $1", &[&name])
                .await?
                .get(0);
            if rules > 0 {
                return Ok(Err(StoreError::Conflict(format!(
                    "event bus {name} still has {rules} rule(s): delete them first"
                ))));
            }
            if !found {
                return Ok(Err(bus_missing(name)));
            }
            tx.execute("DELETE FROM bus_buses WHERE name = $1", &[&name])
                .await?;
            Ok(Ok(()))
        })?
    }

    fn put_rule(&self, rule: &Rule, now_ms: i64) -> Result<Rule> {
        if rule.pattern.is_some() == rule.schedule.is_some() {
            return Err(StoreError::InvalidInput(
                "a rule has either an event pattern or a schedule expression".into(),
            ));
        }
        let targets = serde_json::to_string(&rule.targets)
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let fresh_watermark = rule.schedule.as_ref().map(|_| now_ms);
        self.pg.transaction(async |tx| {
            let bus = tx
                .query_opt(
                    "SELECT 1 FROM bus_buses WHERE name = $1 FOR KEY SHARE",
                    &[&rule.bus],
                )
                .await?;
            if bus.is_none() {
                return Ok(Err(bus_missing(&rule.bus)));
            }
            // A replacement keeps the creation time, and the watermark unless the schedule
            // or the time zone changed; decided on the locked row by the upsert itself.
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO bus_rules ({RULE_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (bus, name) DO UPDATE SET
                             pattern = EXCLUDED.pattern,
                             schedule = EXCLUDED.schedule,
                             timezone = EXCLUDED.timezone,
                             enabled = EXCLUDED.enabled,
                             targets = EXCLUDED.targets,
                             created_ms = bus_rules.created_ms,
                             last_fired_ms = CASE
                                 WHEN bus_rules.schedule IS NOT DISTINCT FROM EXCLUDED.schedule
                                  AND bus_rules.timezone IS NOT DISTINCT FROM EXCLUDED.timezone
                                 THEN bus_rules.last_fired_ms
                                 ELSE EXCLUDED.last_fired_ms
                             END
                         RETURNING created_ms, last_fired_ms"
                    ),
                    &[
                        &rule.bus,
                        &rule.name,
                        &rule.pattern,
                        &rule.schedule,
                        &rule.timezone,
                        &rule.enabled,
                        &targets,
                        &now_ms,
                        &fresh_watermark,
                    ],
                )
                .await?;
            Ok(Ok(Rule {
                created_ms: row.get(0),
                last_fired_ms: row.get(1),
                ..rule.clone()
            }))
        })?
    }

    fn get_rule(&self, bus: &str, name: &str) -> Result<Rule> {
        let row = self.pg.with(async |c| {
            Ok(c.query_opt(
                &format!("SELECT {RULE_COLUMNS} FROM bus_rules WHERE bus = $1 AND name = $2"),
                &[&bus, &name],
            )
            .await?)
        })?;
        match row {
            Some(r) => decode_rule(&r),
            None => Err(rule_missing(bus, name)),
        }
    }

    fn list_rules(&self, bus: Option<&str>) -> Result<Vec<Rule>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                &format!(
                    "SELECT {RULE_COLUMNS} FROM bus_rules
                     WHERE $1::TEXT IS NULL OR bus = $1 ORDER BY bus, name"
                ),
                &[&bus],
            )
            .await?)
        })?;
        rows.iter().map(decode_rule).collect()
    }

    fn delete_rule(&self, bus: &str, name: &str) -> Result<()> {
        let n = self.pg.with(async |c| {
            Ok(c.execute(
                "DELETE FROM bus_rules WHERE bus = $1 AND name = $2",
                &[&bus, &name],
            )
            .await?)
        })?;
        if n == 0 {
            return Err(rule_missing(bus, name));
        }
        Ok(())
    }

    fn advance_watermark(&self, bus: &str, name: &str, fired_ms: i64) -> Result<()> {
        self.pg.with(async |c| {
            c.execute(
                "UPDATE bus_rules SET last_fired_ms = GREATEST(COALESCE(last_fired_ms, $3), $3)
                 WHERE bus = $1 AND name = $2",
                &[&bus, &name, &fired_ms],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn claim_firing(&self, bus: &str, name: &str, fired_ms: i64) -> Result<bool> {
        // A concurrent claimant blocks on the row lock, then re-evaluates the WHERE clause
        // against the committed watermark (READ COMMITTED's re-check): it matches no row.
        let n = self.pg.with(async |c| {
            Ok(c.execute(
                "UPDATE bus_rules SET last_fired_ms = $3
                 WHERE bus = $1 AND name = $2
                   AND (last_fired_ms IS NULL OR last_fired_ms < $3)",
                &[&bus, &name, &fired_ms],
            )
            .await?)
        })?;
        Ok(n == 1)
    }
}
