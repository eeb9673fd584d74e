//! State machines, their revisions, versions and aliases.

use super::{decode_token, json_text, paginate, parse_json};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use rusqlite::{params, OptionalExtension, Row, Transaction};
use std::collections::BTreeMap;

const MACHINE_COLS: &str = "m.arn, m.name, m.machine_type, m.status, m.tags, m.description, \
     m.created, m.updated, r.revision_id, r.definition, r.role_arn, r.logging, r.tracing, r.created";

fn machine_row(r: &Row<'_>) -> rusqlite::Result<(Machine, [String; 3])> {
    let raw: [String; 3] = [r.get(4)?, r.get(11)?, r.get(12)?];
    let machine_type: String = r.get(2)?;
    let status: String = r.get(3)?;
    Ok((
        Machine {
            arn: r.get(0)?,
            name: r.get(1)?,
            machine_type: MachineType::parse(&machine_type).unwrap_or(MachineType::Standard),
            status: MachineStatus::parse(&status).unwrap_or(MachineStatus::Active),
            tags: BTreeMap::new(),
            description: r.get(5)?,
            created: r.get(6)?,
            updated: r.get(7)?,
            revision: Revision {
                revision_id: r.get(8)?,
                definition: r.get(9)?,
                role_arn: r.get(10)?,
                logging: serde_json::Value::Null,
                tracing: serde_json::Value::Null,
                created: r.get(13)?,
            },
        },
        raw,
    ))
}

fn finish_machine(
    (mut m, [tags, logging, tracing]): (Machine, [String; 3]),
) -> StoreResult<Machine> {
    m.tags = serde_json::from_str(&tags)
        .map_err(|e| StoreError::Corrupt(format!("tags of {}: {e}", m.arn)))?;
    m.revision.logging = parse_json(&logging)?;
    m.revision.tracing = parse_json(&tracing)?;
    Ok(m)
}

pub(super) fn get(tx: &Transaction<'_>, arn: &str) -> StoreResult<Machine> {
    let row = tx
        .query_row(
            &format!(
                "SELECT {MACHINE_COLS} FROM machines m JOIN revisions r USING (revision_id) \
                 WHERE m.arn = ?1"
            ),
            [arn],
            machine_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::MachineDoesNotExist(arn.into()))?;
    finish_machine(row)
}

/// The machine, refused when it is being deleted.
pub(super) fn get_active(tx: &Transaction<'_>, arn: &str) -> StoreResult<Machine> {
    let m = get(tx, arn)?;
    if m.status == MachineStatus::Deleting {
        return Err(StoreError::MachineDeleting(arn.into()));
    }
    Ok(m)
}

fn insert_revision(
    tx: &Transaction<'_>,
    machine_arn: &str,
    definition: &str,
    role_arn: &str,
    logging: &serde_json::Value,
    tracing: &serde_json::Value,
    now: Millis,
) -> StoreResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO revisions (revision_id, machine_arn, definition, role_arn, logging, tracing, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, machine_arn, definition, role_arn, json_text(logging), json_text(tracing), now],
    )?;
    Ok(id)
}

pub(super) fn create(
    tx: &Transaction<'_>,
    m: &NewMachine,
    now: Millis,
) -> StoreResult<CreatedMachine> {
    let existing: Option<String> = tx
        .query_row("SELECT arn FROM machines WHERE name = ?1", [&m.name], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(arn) = existing {
        let old = get(tx, &arn)?;
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
    )?;
    let tags = serde_json::to_string(&m.tags).expect("tags serialise");
    tx.execute(
        "INSERT INTO machines (arn, name, machine_type, status, revision_id, description, tags, created, updated) \
         VALUES (?1, ?2, ?3, 'ACTIVE', ?4, ?5, ?6, ?7, ?7)",
        params![m.arn, m.name, m.machine_type.as_str(), rev, m.description, tags, now],
    )?;
    Ok(CreatedMachine {
        machine: get(tx, &m.arn)?,
        created: true,
    })
}

pub(super) fn update(
    tx: &Transaction<'_>,
    arn: &str,
    u: &MachineUpdate,
    now: Millis,
) -> StoreResult<Machine> {
    let m = get_active(tx, arn)?;
    let r = &m.revision;
    let rev = insert_revision(
        tx,
        arn,
        u.definition.as_deref().unwrap_or(&r.definition),
        u.role_arn.as_deref().unwrap_or(&r.role_arn),
        u.logging.as_ref().unwrap_or(&r.logging),
        u.tracing.as_ref().unwrap_or(&r.tracing),
        now,
    )?;
    tx.execute(
        "UPDATE machines SET revision_id = ?2, updated = ?3, description = ?4 WHERE arn = ?1",
        params![
            arn,
            rev,
            now,
            u.description.as_deref().unwrap_or(&m.description)
        ],
    )?;
    get(tx, arn)
}

pub(super) fn delete(tx: &Transaction<'_>, arn: &str) -> StoreResult<()> {
    get(tx, arn)?;
    tx.execute(
        "UPDATE machines SET status = 'DELETING' WHERE arn = ?1",
        [arn],
    )?;
    remove_if_idle(tx, arn)?;
    Ok(())
}

/// Removes a `DELETING` machine with its versions and aliases once no execution of it is
/// open; revisions stay while a recorded execution uses them.
pub(super) fn remove_if_idle(tx: &Transaction<'_>, arn: &str) -> StoreResult<bool> {
    let n = tx.execute(
        "DELETE FROM machines WHERE arn = ?1 AND status = 'DELETING' AND NOT EXISTS \
         (SELECT 1 FROM executions WHERE machine_arn = ?1 AND status IN ('RUNNING', 'PENDING_REDRIVE'))",
        [arn],
    )?;
    if n == 0 {
        return Ok(false);
    }
    tx.execute("DELETE FROM versions WHERE machine_arn = ?1", [arn])?;
    tx.execute("DELETE FROM aliases WHERE machine_arn = ?1", [arn])?;
    purge_revisions(tx)?;
    Ok(true)
}

/// Deletes revisions no machine, version or execution refers to.
pub(super) fn purge_revisions(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM revisions WHERE revision_id NOT IN (SELECT revision_id FROM machines) \
         AND revision_id NOT IN (SELECT revision_id FROM versions) \
         AND revision_id NOT IN (SELECT revision_id FROM executions)",
        [],
    )?;
    Ok(())
}

pub(super) fn list(
    tx: &Transaction<'_>,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Machine>> {
    let after = token.map(decode_token).transpose()?.unwrap_or_default();
    let mut st = tx.prepare(&format!(
        "SELECT {MACHINE_COLS} FROM machines m JOIN revisions r USING (revision_id) \
         WHERE m.name > ?1 ORDER BY m.name LIMIT ?2"
    ))?;
    let rows = st
        .query_map(params![after, max as i64 + 1], machine_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let machines = rows
        .into_iter()
        .map(finish_machine)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(machines, max, |m| m.name.clone()))
}

pub(super) fn revision(tx: &Transaction<'_>, id: &str) -> StoreResult<Revision> {
    let row = tx
        .query_row(
            "SELECT revision_id, definition, role_arn, logging, tracing, created FROM revisions \
             WHERE revision_id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::Corrupt(format!("revision {id} is missing")))?;
    Ok(Revision {
        revision_id: row.0,
        definition: row.1,
        role_arn: row.2,
        logging: parse_json(&row.3)?,
        tracing: parse_json(&row.4)?,
        created: row.5,
    })
}

pub(super) fn retag(
    tx: &Transaction<'_>,
    arn: &str,
    f: impl FnOnce(&mut BTreeMap<String, String>),
) -> StoreResult<()> {
    let mut m = get(tx, arn)?;
    f(&mut m.tags);
    let tags = serde_json::to_string(&m.tags).expect("tags serialise");
    tx.execute(
        "UPDATE machines SET tags = ?2 WHERE arn = ?1",
        params![arn, tags],
    )?;
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

pub(super) fn publish(
    tx: &Transaction<'_>,
    machine_arn: &str,
    description: &str,
    expected_revision: Option<&str>,
    now: Millis,
) -> StoreResult<Version> {
    let m = get_active(tx, machine_arn)?;
    if let Some(exp) = expected_revision {
        if exp != m.revision.revision_id {
            return Err(StoreError::Conflict(format!(
                "the current revision of {machine_arn} is {}, not {exp}",
                m.revision.revision_id
            )));
        }
    }
    let latest: Option<(u32, String)> = tx
        .query_row(
            "SELECT version, revision_id FROM versions WHERE machine_arn = ?1 \
             ORDER BY version DESC LIMIT 1",
            [machine_arn],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((v, rev)) = latest {
        if rev == m.revision.revision_id {
            return version(tx, &format!("{machine_arn}:{v}"));
        }
    }
    let n: u32 = tx.query_row(
        "UPDATE machines SET next_version = next_version + 1 WHERE arn = ?1 RETURNING next_version - 1",
        [machine_arn],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO versions (machine_arn, version, revision_id, description, created) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![machine_arn, n, m.revision.revision_id, description, now],
    )?;
    version(tx, &format!("{machine_arn}:{n}"))
}

pub(super) fn version(tx: &Transaction<'_>, version_arn: &str) -> StoreResult<Version> {
    let (machine_arn, n) = split_version(version_arn)?;
    let row: Option<(String, String, i64)> = tx
        .query_row(
            "SELECT revision_id, description, created FROM versions \
             WHERE machine_arn = ?1 AND version = ?2",
            params![machine_arn, n],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (rev, description, created) =
        row.ok_or_else(|| StoreError::VersionDoesNotExist(version_arn.into()))?;
    Ok(Version {
        arn: version_arn.into(),
        machine_arn: machine_arn.into(),
        version: n,
        description,
        created,
        revision: revision(tx, &rev)?,
    })
}

pub(super) fn list_versions(
    tx: &Transaction<'_>,
    machine_arn: &str,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Version>> {
    get(tx, machine_arn)?;
    let before: i64 = match token {
        Some(t) => decode_token(t)?
            .parse()
            .map_err(|_| StoreError::InvalidToken(t.into()))?,
        None => i64::MAX,
    };
    let mut st = tx.prepare(
        "SELECT version FROM versions WHERE machine_arn = ?1 AND version < ?2 \
         ORDER BY version DESC LIMIT ?3",
    )?;
    let numbers = st
        .query_map(params![machine_arn, before, max as i64 + 1], |r| {
            r.get::<_, u32>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let versions = numbers
        .into_iter()
        .map(|n| version(tx, &format!("{machine_arn}:{n}")))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(versions, max, |v| v.version.to_string()))
}

pub(super) fn delete_version(tx: &Transaction<'_>, version_arn: &str) -> StoreResult<()> {
    let (machine_arn, _) = split_version(version_arn)?;
    version(tx, version_arn)?;
    for a in list_aliases(tx, machine_arn)? {
        if a.routing.iter().any(|r| r.version_arn == version_arn) {
            return Err(StoreError::Conflict(format!(
                "alias {} routes to {version_arn}",
                a.arn
            )));
        }
    }
    let (m, n) = split_version(version_arn)?;
    tx.execute(
        "DELETE FROM versions WHERE machine_arn = ?1 AND version = ?2",
        params![m, n],
    )?;
    purge_revisions(tx)?;
    Ok(())
}

// ---- aliases ----

fn check_routing(tx: &Transaction<'_>, machine_arn: &str, routing: &[Route]) -> StoreResult<()> {
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
        let v = version(tx, &r.version_arn)?;
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

pub(super) fn create_alias(
    tx: &Transaction<'_>,
    machine_arn: &str,
    name: &str,
    description: &str,
    routing: &[Route],
    now: Millis,
) -> StoreResult<Alias> {
    get_active(tx, machine_arn)?;
    check_routing(tx, machine_arn, routing)?;
    let arn = format!("{machine_arn}:{name}");
    let n = tx.execute(
        "INSERT OR IGNORE INTO aliases (machine_arn, name, description, routing, created, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![
            machine_arn,
            name,
            description,
            serde_json::to_string(routing).expect("routes serialise"),
            now
        ],
    )?;
    if n == 0 {
        return Err(StoreError::AliasAlreadyExists(arn));
    }
    alias(tx, &arn)
}

pub(super) fn alias(tx: &Transaction<'_>, alias_arn: &str) -> StoreResult<Alias> {
    let (machine_arn, name) = split_alias(alias_arn)?;
    let row: Option<(String, String, i64, i64)> = tx
        .query_row(
            "SELECT description, routing, created, updated FROM aliases \
             WHERE machine_arn = ?1 AND name = ?2",
            params![machine_arn, name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (description, routing, created, updated) =
        row.ok_or_else(|| StoreError::AliasDoesNotExist(alias_arn.into()))?;
    Ok(Alias {
        arn: alias_arn.into(),
        machine_arn: machine_arn.into(),
        name: name.into(),
        description,
        routing: serde_json::from_str(&routing)
            .map_err(|e| StoreError::Corrupt(format!("routing of {alias_arn}: {e}")))?,
        created,
        updated,
    })
}

pub(super) fn update_alias(
    tx: &Transaction<'_>,
    alias_arn: &str,
    description: Option<&str>,
    routing: Option<&[Route]>,
    now: Millis,
) -> StoreResult<Alias> {
    let mut a = alias(tx, alias_arn)?;
    if let Some(r) = routing {
        check_routing(tx, &a.machine_arn, r)?;
        a.routing = r.to_vec();
    }
    if let Some(d) = description {
        a.description = d.into();
    }
    tx.execute(
        "UPDATE aliases SET description = ?3, routing = ?4, updated = ?5 \
         WHERE machine_arn = ?1 AND name = ?2",
        params![
            a.machine_arn,
            a.name,
            a.description,
            serde_json::to_string(&a.routing).expect("routes serialise"),
            now
        ],
    )?;
    alias(tx, alias_arn)
}

pub(super) fn delete_alias(tx: &Transaction<'_>, alias_arn: &str) -> StoreResult<()> {
    let a = alias(tx, alias_arn)?;
    tx.execute(
        "DELETE FROM aliases WHERE machine_arn = ?1 AND name = ?2",
        params![a.machine_arn, a.name],
    )?;
    Ok(())
}

pub(super) fn list_aliases(tx: &Transaction<'_>, machine_arn: &str) -> StoreResult<Vec<Alias>> {
    get(tx, machine_arn)?;
    let mut st = tx.prepare("SELECT name FROM aliases WHERE machine_arn = ?1 ORDER BY name")?;
    let names = st
        .query_map([machine_arn], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    names
        .iter()
        .map(|n| alias(tx, &format!("{machine_arn}:{n}")))
        .collect()
}
