//! State machines, their revisions, versions and aliases.

use super::{decode_token, json_text, paginate, parse_json, u32_of, Tx};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use nimbus_pg::Row;
use std::collections::BTreeMap;

const MACHINE_COLS: &str = "m.arn, m.name, m.machine_type, m.status, m.tags, m.description, \
     m.created, m.updated, r.revision_id, r.definition, r.role_arn, r.logging, r.tracing, r.created";

fn machine_row(r: &Row) -> StoreResult<Machine> {
    let arn: String = r.get(0);
    let machine_type: String = r.get(2);
    let status: String = r.get(3);
    let tags: String = r.get(4);
    let logging: String = r.get(11);
    let tracing: String = r.get(12);
    Ok(Machine {
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Corrupt(format!("tags of {arn}: {e}")))?,
        arn,
        name: r.get(1),
        machine_type: MachineType::parse(&machine_type).unwrap_or(MachineType::Standard),
        status: MachineStatus::parse(&status).unwrap_or(MachineStatus::Active),
        description: r.get(5),
        created: r.get(6),
        updated: r.get(7),
        revision: Revision {
            revision_id: r.get(8),
            definition: r.get(9),
            role_arn: r.get(10),
            logging: parse_json(&logging)?,
            tracing: parse_json(&tracing)?,
            created: r.get(13),
        },
    })
}

pub(super) async fn get(tx: &Tx<'_>, arn: &str) -> StoreResult<Machine> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {MACHINE_COLS} FROM flows_machines m \
                 JOIN flows_revisions r USING (revision_id) WHERE m.arn = $1"
            ),
            &[&arn],
        )
        .await?
        .ok_or_else(|| StoreError::MachineDoesNotExist(arn.into()))?;
    machine_row(&row)
}

/// Locks the machine's row (`FOR UPDATE`, or `FOR SHARE` when `shared`) and reads it.
pub(super) async fn lock(tx: &Tx<'_>, arn: &str, shared: bool) -> StoreResult<Machine> {
    let mode = if shared { "SHARE" } else { "UPDATE" };
    tx.query_opt(
        &format!("SELECT 1 FROM flows_machines WHERE arn = $1 FOR {mode}"),
        &[&arn],
    )
    .await?
    .ok_or_else(|| StoreError::MachineDoesNotExist(arn.into()))?;
    get(tx, arn).await
}

fn refuse_deleting(m: Machine) -> StoreResult<Machine> {
    if m.status == MachineStatus::Deleting {
        return Err(StoreError::MachineDeleting(m.arn));
    }
    Ok(m)
}

async fn insert_revision(
    tx: &Tx<'_>,
    machine_arn: &str,
    definition: &str,
    role_arn: &str,
    logging: &serde_json::Value,
    tracing: &serde_json::Value,
    now: Millis,
) -> StoreResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO flows_revisions (revision_id, machine_arn, definition, role_arn, logging, \
         tracing, created) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            &machine_arn,
            &definition,
            &role_arn,
            &json_text(logging),
            &json_text(tracing),
            &now,
        ],
    )
    .await?;
    Ok(id)
}

pub(super) async fn create(
    tx: &Tx<'_>,
    m: &NewMachine,
    now: Millis,
) -> StoreResult<CreatedMachine> {
    // Two nodes creating the same name take turns: the second sees the first's machine.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('flows_machines:' || $1, 0))",
        &[&m.name],
    )
    .await?;
    let existing = tx
        .query_opt("SELECT arn FROM flows_machines WHERE name = $1", &[&m.name])
        .await?;
    if let Some(row) = existing {
        let arn: String = row.get(0);
        let old = get(tx, &arn).await?;
        let same = old.status == MachineStatus::Active
            && old.arn == m.arn
            && old.machine_type == m.machine_type
            && old.revision.definition == m.definition
            && old.revision.role_arn == m.role_arn;
        return if same {
            Ok(CreatedMachine {
                machine: old,
                created: false,
            })
        } else if old.status == MachineStatus::Deleting {
            Err(StoreError::MachineDeleting(arn))
        } else {
            Err(StoreError::MachineAlreadyExists(arn))
        };
    }
    let rev = insert_revision(
        tx,
        &m.arn,
        &m.definition,
        &m.role_arn,
        &m.logging,
        &m.tracing,
        now,
    )
    .await?;
    let tags = serde_json::to_string(&m.tags).expect("tags serialise");
    let inserted = tx
        .execute(
            "INSERT INTO flows_machines (arn, name, machine_type, status, revision_id, \
             description, tags, created, updated) \
             VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
            &[
                &m.arn,
                &m.name,
                &m.machine_type.as_str(),
                &rev,
                &m.description,
                &tags,
                &now,
            ],
        )
        .await?;
    if inserted == 0 {
        // The ARN is taken under another name (the caller builds ARNs from names, so
        // only a foreign ARN gets here).
        return Err(StoreError::MachineAlreadyExists(m.arn.clone()));
    }
    Ok(CreatedMachine {
        machine: get(tx, &m.arn).await?,
        created: true,
    })
}

pub(super) async fn update(
    tx: &Tx<'_>,
    arn: &str,
    u: &MachineUpdate,
    now: Millis,
) -> StoreResult<Machine> {
    let m = refuse_deleting(lock(tx, arn, false).await?)?;
    let r = &m.revision;
    let rev = insert_revision(
        tx,
        arn,
        u.definition.as_deref().unwrap_or(&r.definition),
        u.role_arn.as_deref().unwrap_or(&r.role_arn),
        u.logging.as_ref().unwrap_or(&r.logging),
        u.tracing.as_ref().unwrap_or(&r.tracing),
        now,
    )
    .await?;
    tx.execute(
        "UPDATE flows_machines SET revision_id = $2, updated = $3, description = $4 \
         WHERE arn = $1",
        &[
            &arn,
            &rev,
            &now,
            &u.description.as_deref().unwrap_or(&m.description),
        ],
    )
    .await?;
    get(tx, arn).await
}

pub(super) async fn delete(tx: &Tx<'_>, arn: &str) -> StoreResult<()> {
    lock(tx, arn, false).await?;
    tx.execute(
        "UPDATE flows_machines SET status = 'DELETING' WHERE arn = $1",
        &[&arn],
    )
    .await?;
    remove_if_idle(tx, arn).await?;
    Ok(())
}

/// Removes a `DELETING` machine with its versions and aliases once no execution of it is
/// open; revisions stay while a recorded execution uses them. Reads the machine's status
/// `FOR SHARE` (which waits for a delete in flight), so a delete and the end of the
/// machine's last execution, committing at the same time, cannot both miss each other;
/// the ends of executions of an active machine do not wait for one another.
pub(super) async fn remove_if_idle(tx: &Tx<'_>, arn: &str) -> StoreResult<bool> {
    let status = tx
        .query_opt(
            "SELECT status FROM flows_machines WHERE arn = $1 FOR SHARE",
            &[&arn],
        )
        .await?;
    if status.is_none_or(|r| r.get::<_, String>(0) != "DELETING") {
        return Ok(false);
    }
    let n = tx
        .execute(
            "DELETE FROM flows_machines WHERE arn = $1 AND status = 'DELETING' AND NOT EXISTS \
             (SELECT 1 FROM flows_executions WHERE machine_arn = $1 \
              AND status IN ('RUNNING', 'PENDING_REDRIVE'))",
            &[&arn],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    tx.execute("DELETE FROM flows_versions WHERE machine_arn = $1", &[&arn])
        .await?;
    tx.execute("DELETE FROM flows_aliases WHERE machine_arn = $1", &[&arn])
        .await?;
    purge_revisions(tx).await?;
    Ok(true)
}

/// Deletes revisions no machine, version or execution refers to.
pub(super) async fn purge_revisions(tx: &Tx<'_>) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM flows_revisions r WHERE \
         NOT EXISTS (SELECT 1 FROM flows_machines m WHERE m.revision_id = r.revision_id) \
         AND NOT EXISTS (SELECT 1 FROM flows_versions v WHERE v.revision_id = r.revision_id) \
         AND NOT EXISTS (SELECT 1 FROM flows_executions e WHERE e.revision_id = r.revision_id)",
        &[],
    )
    .await?;
    Ok(())
}

pub(super) async fn list(
    tx: &Tx<'_>,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Machine>> {
    let after = token.map(decode_token).transpose()?.unwrap_or_default();
    let rows = tx
        .query(
            &format!(
                "SELECT {MACHINE_COLS} FROM flows_machines m \
                 JOIN flows_revisions r USING (revision_id) \
                 WHERE m.name COLLATE \"C\" > $1 ORDER BY m.name COLLATE \"C\" LIMIT $2"
            ),
            &[&after, &(max as i64 + 1)],
        )
        .await?;
    let machines = rows
        .iter()
        .map(machine_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(machines, max, |m| m.name.clone()))
}

pub(super) async fn revision(tx: &Tx<'_>, id: &str) -> StoreResult<Revision> {
    let row = tx
        .query_opt(
            "SELECT revision_id, definition, role_arn, logging, tracing, created \
             FROM flows_revisions WHERE revision_id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("revision {id} is missing")))?;
    Ok(Revision {
        revision_id: row.get(0),
        definition: row.get(1),
        role_arn: row.get(2),
        logging: parse_json(row.get(3))?,
        tracing: parse_json(row.get(4))?,
        created: row.get(5),
    })
}

pub(super) async fn retag(
    tx: &Tx<'_>,
    arn: &str,
    f: impl FnOnce(&mut BTreeMap<String, String>),
) -> StoreResult<()> {
    let mut m = lock(tx, arn, false).await?;
    f(&mut m.tags);
    let tags = serde_json::to_string(&m.tags).expect("tags serialise");
    tx.execute(
        "UPDATE flows_machines SET tags = $2 WHERE arn = $1",
        &[&arn, &tags],
    )
    .await?;
    Ok(())
}

// ---- versions ----

/// Splits `<machine arn>:<qualifier>`; a machine ARN has 7 `:`-separated parts.
fn split_qualified(arn: &str) -> Option<(&str, &str)> {
    let (machine, q) = arn.rsplit_once(':')?;
    (machine.split(':').count() == 7).then_some((machine, q))
}

fn split_version(arn: &str) -> StoreResult<(&str, u32)> {
    split_qualified(arn)
        .and_then(|(m, q)| Some((m, q.parse().ok()?)))
        .ok_or_else(|| StoreError::VersionDoesNotExist(arn.into()))
}

pub(super) async fn publish(
    tx: &Tx<'_>,
    machine_arn: &str,
    description: &str,
    expected_revision: Option<&str>,
    now: Millis,
) -> StoreResult<Version> {
    let m = refuse_deleting(lock(tx, machine_arn, false).await?)?;
    if let Some(exp) = expected_revision {
        if exp != m.revision.revision_id {
            return Err(StoreError::Conflict(format!(
                "the current revision of {machine_arn} is {}, not {exp}",
                m.revision.revision_id
            )));
        }
    }
    let latest = tx
        .query_opt(
            "SELECT version, revision_id FROM flows_versions WHERE machine_arn = $1 \
             ORDER BY version DESC LIMIT 1",
            &[&machine_arn],
        )
        .await?;
    if let Some(row) = latest {
        let rev: String = row.get(1);
        if rev == m.revision.revision_id {
            return version(tx, &format!("{machine_arn}:{}", row.get::<_, i64>(0))).await;
        }
    }
    let n: i64 = tx
        .query_one(
            "UPDATE flows_machines SET next_version = next_version + 1 WHERE arn = $1 \
             RETURNING next_version - 1",
            &[&machine_arn],
        )
        .await?
        .get(0);
    tx.execute(
        "INSERT INTO flows_versions (machine_arn, version, revision_id, description, created) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &machine_arn,
            &n,
            &m.revision.revision_id,
            &description,
            &now,
        ],
    )
    .await?;
    version(tx, &format!("{machine_arn}:{n}")).await
}

pub(super) async fn version(tx: &Tx<'_>, version_arn: &str) -> StoreResult<Version> {
    let (machine_arn, n) = split_version(version_arn)?;
    let row = tx
        .query_opt(
            "SELECT revision_id, description, created FROM flows_versions \
             WHERE machine_arn = $1 AND version = $2",
            &[&machine_arn, &i64::from(n)],
        )
        .await?
        .ok_or_else(|| StoreError::VersionDoesNotExist(version_arn.into()))?;
    let rev: String = row.get(0);
    Ok(Version {
        arn: version_arn.into(),
        machine_arn: machine_arn.into(),
        version: n,
        description: row.get(1),
        created: row.get(2),
        revision: revision(tx, &rev).await?,
    })
}

pub(super) async fn list_versions(
    tx: &Tx<'_>,
    machine_arn: &str,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Version>> {
    get(tx, machine_arn).await?;
    let before: i64 = match token {
        Some(t) => decode_token(t)?
            .parse()
            .map_err(|_| StoreError::InvalidToken(t.into()))?,
        None => i64::MAX,
    };
    let rows = tx
        .query(
            "SELECT version FROM flows_versions WHERE machine_arn = $1 AND version < $2 \
             ORDER BY version DESC LIMIT $3",
            &[&machine_arn, &before, &(max as i64 + 1)],
        )
        .await?;
    let mut versions = Vec::with_capacity(rows.len());
    for r in &rows {
        versions.push(version(tx, &format!("{machine_arn}:{}", u32_of(r, 0))).await?);
    }
    Ok(paginate(versions, max, |v| v.version.to_string()))
}

pub(super) async fn delete_version(tx: &Tx<'_>, version_arn: &str) -> StoreResult<()> {
    let (machine_arn, n) = split_version(version_arn)?;
    // The machine's lock orders this against an alias update routing to the version.
    tx.query_opt(
        "SELECT 1 FROM flows_machines WHERE arn = $1 FOR UPDATE",
        &[&machine_arn],
    )
    .await?;
    version(tx, version_arn).await?;
    for a in list_aliases(tx, machine_arn).await? {
        if a.routing.iter().any(|r| r.version_arn == version_arn) {
            return Err(StoreError::Conflict(format!(
                "alias {} routes to {version_arn}",
                a.arn
            )));
        }
    }
    tx.execute(
        "DELETE FROM flows_versions WHERE machine_arn = $1 AND version = $2",
        &[&machine_arn, &i64::from(n)],
    )
    .await?;
    purge_revisions(tx).await?;
    Ok(())
}

// ---- aliases ----

async fn check_routing(tx: &Tx<'_>, machine_arn: &str, routing: &[Route]) -> StoreResult<()> {
    if routing.is_empty() || routing.len() > 2 {
        return Err(StoreError::InvalidRouting(
            "an alias routes to one or two versions".into(),
        ));
    }
    if routing.len() == 2 && routing[0].version_arn == routing[1].version_arn {
        return Err(StoreError::InvalidRouting(
            "the two versions must differ".into(),
        ));
    }
    if routing.iter().map(|r| r.weight).sum::<u32>() != 100 {
        return Err(StoreError::InvalidRouting("weights must sum to 100".into()));
    }
    for r in routing {
        let v = version(tx, &r.version_arn).await?;
        if v.machine_arn != machine_arn {
            return Err(StoreError::InvalidRouting(format!(
                "{} is not a version of {machine_arn}",
                r.version_arn
            )));
        }
    }
    Ok(())
}

fn split_alias(arn: &str) -> StoreResult<(&str, &str)> {
    split_qualified(arn)
        .filter(|(_, q)| q.parse::<u32>().is_err())
        .ok_or_else(|| StoreError::AliasDoesNotExist(arn.into()))
}

pub(super) async fn create_alias(
    tx: &Tx<'_>,
    machine_arn: &str,
    name: &str,
    description: &str,
    routing: &[Route],
    now: Millis,
) -> StoreResult<Alias> {
    refuse_deleting(lock(tx, machine_arn, false).await?)?;
    check_routing(tx, machine_arn, routing).await?;
    let arn = format!("{machine_arn}:{name}");
    let n = tx
        .execute(
            "INSERT INTO flows_aliases (machine_arn, name, description, routing, created, \
             updated) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
            &[
                &machine_arn,
                &name,
                &description,
                &serde_json::to_string(routing).expect("routes serialise"),
                &now,
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::AliasAlreadyExists(arn));
    }
    alias(tx, &arn).await
}

pub(super) async fn alias(tx: &Tx<'_>, alias_arn: &str) -> StoreResult<Alias> {
    let (machine_arn, name) = split_alias(alias_arn)?;
    let row = tx
        .query_opt(
            "SELECT description, routing, created, updated FROM flows_aliases \
             WHERE machine_arn = $1 AND name = $2",
            &[&machine_arn, &name],
        )
        .await?
        .ok_or_else(|| StoreError::AliasDoesNotExist(alias_arn.into()))?;
    let routing: String = row.get(1);
    Ok(Alias {
        arn: alias_arn.into(),
        machine_arn: machine_arn.into(),
        name: name.into(),
        description: row.get(0),
        routing: serde_json::from_str(&routing)
            .map_err(|e| StoreError::Corrupt(format!("routing of {alias_arn}: {e}")))?,
        created: row.get(2),
        updated: row.get(3),
    })
}

pub(super) async fn update_alias(
    tx: &Tx<'_>,
    alias_arn: &str,
    description: Option<&str>,
    routing: Option<&[Route]>,
    now: Millis,
) -> StoreResult<Alias> {
    if let Some((machine_arn, _)) = split_qualified(alias_arn) {
        tx.query_opt(
            "SELECT 1 FROM flows_machines WHERE arn = $1 FOR UPDATE",
            &[&machine_arn],
        )
        .await?;
    }
    let mut a = alias(tx, alias_arn).await?;
    if let Some(r) = routing {
        check_routing(tx, &a.machine_arn, r).await?;
        a.routing = r.to_vec();
    }
    if let Some(d) = description {
        a.description = d.into();
    }
    tx.execute(
        "UPDATE flows_aliases SET description = $3, routing = $4, updated = $5 \
         WHERE machine_arn = $1 AND name = $2",
        &[
            &a.machine_arn,
            &a.name,
            &a.description,
            &serde_json::to_string(&a.routing).expect("routes serialise"),
            &now,
        ],
    )
    .await?;
    alias(tx, alias_arn).await
}

pub(super) async fn delete_alias(tx: &Tx<'_>, alias_arn: &str) -> StoreResult<()> {
    let a = alias(tx, alias_arn).await?;
    tx.execute(
        "DELETE FROM flows_aliases WHERE machine_arn = $1 AND name = $2",
        &[&a.machine_arn, &a.name],
    )
    .await?;
    Ok(())
}

pub(super) async fn list_aliases(tx: &Tx<'_>, machine_arn: &str) -> StoreResult<Vec<Alias>> {
    get(tx, machine_arn).await?;
    let rows = tx
        .query(
            "SELECT name FROM flows_aliases WHERE machine_arn = $1 ORDER BY name COLLATE \"C\"",
            &[&machine_arn],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let n: String = r.get(0);
        out.push(alias(tx, &format!("{machine_arn}:{n}")).await?);
    }
    Ok(out)
}
