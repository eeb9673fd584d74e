//! [`crate::RoleStore`] on PostgreSQL (component `roles`, tables `roles_roles` and
//! `roles_policies`): the same roles and inline policies as the SQLite backend (which
//! keeps them in `secrets.db`, [`crate::SecretStore`]), shared by every node.
//!
//! Role names are unique without regard to case, as in IAM: SQLite compares them with
//! `COLLATE NOCASE`, which folds ASCII letters only; here every row carries its name
//! folded the same way (`name_key`, [`str::to_ascii_lowercase`]), which is the key that
//! is looked up, made unique and sorted on. A role's writes (its settings, tags, policies,
//! its deletion) run under `FOR UPDATE` on its row, so two nodes' changes to one role
//! apply one after the other, and a creation racing another node's is a `Conflict`.

use crate::roles::{Role, RoleStore, RoleUpdate};
use crate::{Result, StoreError};
use nimbus_pg::{Migration, Pg, PgError, Row, Transaction};

const MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE roles_roles (
    name_key      TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL,
    path          TEXT NOT NULL,
    id            TEXT NOT NULL UNIQUE,
    trust_policy  TEXT NOT NULL,
    description   TEXT,
    max_session_s BIGINT NOT NULL,
    tags          TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);
CREATE TABLE roles_policies (
    role_key TEXT COLLATE "C" NOT NULL REFERENCES roles_roles(name_key),
    name     TEXT COLLATE "C" NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (role_key, name)
);
"#,
)];

const ROLE_COLUMNS: &str =
    "name, path, id, trust_policy, description, max_session_s, tags, created_ms";

/// [`RoleStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PgRoleStore {
    pg: Pg,
}

impl PgRoleStore {
    /// Brings the `roles` schema up to date.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("roles", MIGRATIONS)?;
        Ok(Self { pg: pg.clone() })
    }
}

/// What names are compared by (SQLite's `NOCASE`: ASCII letters folded).
fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn tags_json(tags: &[(String, String)]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

fn decode_role(r: &Row) -> Role {
    let tags: &str = r.get(6);
    Role {
        name: r.get(0),
        path: r.get(1),
        id: r.get(2),
        trust_policy: r.get(3),
        description: r.get(4),
        max_session_s: r.get::<_, i64>(5).clamp(0, u32::MAX as i64) as u32,
        tags: serde_json::from_str(tags).unwrap_or_default(),
        created_ms: r.get(7),
    }
}

fn no_role(name: &str) -> StoreError {
    StoreError::NotFound(format!("The role with name {name} cannot be found."))
}

/// The role named `name` (in any case), locked for the rest of `tx`.
async fn lock_role(tx: &Transaction<'_>, name: &str) -> Result<Option<Role>, PgError> {
    let row = tx
        .query_opt(
            &format!("SELECT {ROLE_COLUMNS} FROM roles_roles WHERE name_key = $1 FOR UPDATE"),
            &[&key(name)],
        )
        .await?;
    Ok(row.as_ref().map(decode_role))
}

impl PgRoleStore {
    /// Replaces the tags of the role `name` with `f` of its current ones.
    fn retag(&self, name: &str, f: impl FnOnce(&mut Vec<(String, String)>)) -> Result<()> {
        self.pg.transaction(async |tx| {
            let Some(role) = lock_role(tx, name).await? else {
                return Ok(Err(no_role(name)));
            };
            let mut tags = role.tags;
            f(&mut tags);
            tx.execute(
                "UPDATE roles_roles SET tags = $2 WHERE name_key = $1",
                &[&key(&role.name), &tags_json(&tags)],
            )
            .await?;
            Ok(Ok(()))
        })?
    }
}

impl RoleStore for PgRoleStore {
    fn create_role(&self, role: &Role) -> Result<()> {
        let max_session_s = i64::from(role.max_session_s);
        let n = self.pg.with(async |c| {
            Ok(c.execute(
                &format!(
                    "INSERT INTO roles_roles (name_key, {ROLE_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (name_key) DO NOTHING"
                ),
                &[
                    &key(&role.name),
                    &role.name,
                    &role.path,
                    &role.id,
                    &role.trust_policy,
                    &role.description,
                    &max_session_s,
                    &tags_json(&role.tags),
                    &role.created_ms,
                ],
            )
            .await?)
        })?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "Role with name {} already exists.",
                role.name
            )));
        }
        Ok(())
    }

    fn role(&self, name: &str) -> Result<Option<Role>> {
        let row = self.pg.with(async |c| {
            Ok(c.query_opt(
                &format!("SELECT {ROLE_COLUMNS} FROM roles_roles WHERE name_key = $1"),
                &[&key(name)],
            )
            .await?)
        })?;
        Ok(row.as_ref().map(decode_role))
    }

    fn roles(&self) -> Result<Vec<Role>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                &format!("SELECT {ROLE_COLUMNS} FROM roles_roles ORDER BY name_key"),
                &[],
            )
            .await?)
        })?;
        Ok(rows.iter().map(decode_role).collect())
    }

    fn update_role(&self, name: &str, update: &RoleUpdate) -> Result<()> {
        self.pg.transaction(async |tx| {
            let Some(role) = lock_role(tx, name).await? else {
                return Ok(Err(no_role(name)));
            };
            let description = update.description.clone().or(role.description);
            let max_session_s = i64::from(update.max_session_s.unwrap_or(role.max_session_s));
            tx.execute(
                "UPDATE roles_roles SET description = $2, max_session_s = $3 WHERE name_key = $1",
                &[&key(&role.name), &description, &max_session_s],
            )
            .await?;
            Ok(Ok(()))
        })?
    }

    fn delete_role(&self, name: &str) -> Result<()> {
        self.pg.transaction(async |tx| {
            let Some(role) = lock_role(tx, name).await? else {
                return Ok(Err(no_role(name)));
            };
            let role_key = key(&role.name);
            let policies: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM roles_policies WHERE role_key = $1",
                    &[&role_key],
                )
                .await?
                .get(0);
            if policies > 0 {
                return Ok(Err(StoreError::Conflict(
                    "Cannot delete entity, must delete policies first.".into(),
                )));
            }
            tx.execute("DELETE FROM roles_roles WHERE name_key = $1", &[&role_key])
                .await?;
            Ok(Ok(()))
        })?
    }

    fn put_role_policy(&self, role: &str, policy: &str, document: &str) -> Result<()> {
        self.pg.transaction(async |tx| {
            let Some(found) = lock_role(tx, role).await? else {
                return Ok(Err(no_role(role)));
            };
            tx.execute(
                "INSERT INTO roles_policies (role_key, name, document) VALUES ($1, $2, $3)
                 ON CONFLICT (role_key, name) DO UPDATE SET document = EXCLUDED.document",
                &[&key(&found.name), &policy, &document],
            )
            .await?;
            Ok(Ok(()))
        })?
    }

    fn role_policies(&self, role: &str) -> Result<Vec<(String, String)>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                "SELECT name, document FROM roles_policies WHERE role_key = $1 ORDER BY name",
                &[&key(role)],
            )
            .await?)
        })?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()> {
        self.pg.transaction(async |tx| {
            let Some(found) = lock_role(tx, role).await? else {
                return Ok(Err(no_role(role)));
            };
            let n = tx
                .execute(
                    "DELETE FROM roles_policies WHERE role_key = $1 AND name = $2",
                    &[&key(&found.name), &policy],
                )
                .await?;
            if n == 0 {
                return Ok(Err(StoreError::NotFound(format!(
                    "The role policy with name {policy} cannot be found."
                ))));
            }
            Ok(Ok(()))
        })?
    }

    fn tag_role(&self, role: &str, tags: &[(String, String)]) -> Result<()> {
        self.retag(role, |all| {
            for (k, v) in tags {
                match all.iter_mut().find(|(ek, _)| ek == k) {
                    Some(e) => e.1 = v.clone(),
                    None => all.push((k.clone(), v.clone())),
                }
            }
        })
    }

    fn untag_role(&self, role: &str, keys: &[String]) -> Result<()> {
        self.retag(role, |all| all.retain(|(k, _)| !keys.contains(k)))
    }
}
