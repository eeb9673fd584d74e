//! Execution roles: a name, a path, a trust policy (stored as given) and inline identity
//! policies, in `DATA_DIR/secrets.db` beside the access keys (schema migration 3). The
//! gateway's IAM API reads and writes them through [`RoleStore`]; the credentials minted
//! for a function's instances carry the union of a role's inline policies.
//!
//! Role names are unique without regard to case, as in IAM.

use crate::secrets::SecretStore;
use crate::{Result, StoreError};
use rusqlite::{params, OptionalExtension};

/// A role as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `AROA` + 17 characters.
    pub id: String,
    /// The trust policy document (`AssumeRolePolicyDocument`), as given.
    pub trust_policy: String,
    pub description: Option<String>,
    /// 3600–43200 seconds.
    pub max_session_s: u32,
    pub tags: Vec<(String, String)>,
    pub created_ms: i64,
}

/// A change to a role's settings (`UpdateRole`): `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleUpdate {
    pub description: Option<String>,
    pub max_session_s: Option<u32>,
}

/// Roles and their inline policies: domain operations only, so another backend can
/// implement them.
pub trait RoleStore: Send + Sync {
    /// `Conflict` when a role of that name (in any case) exists.
    fn create_role(&self, role: &Role) -> Result<()>;
    fn role(&self, name: &str) -> Result<Option<Role>>;
    /// Every role, sorted by name.
    fn roles(&self) -> Result<Vec<Role>>;
    /// `NotFound` when there is no such role.
    fn update_role(&self, name: &str, update: &RoleUpdate) -> Result<()>;
    /// `NotFound` when there is no such role; `Conflict` while it has inline policies.
    fn delete_role(&self, name: &str) -> Result<()>;
    /// Creates or replaces an inline policy; `NotFound` when there is no such role.
    fn put_role_policy(&self, role: &str, policy: &str, document: &str) -> Result<()>;
    /// `(policy name, document)` of every inline policy of `role`, sorted by name.
    fn role_policies(&self, role: &str) -> Result<Vec<(String, String)>>;
    /// `NotFound` when the role or the policy does not exist.
    fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()>;
    /// Adds or replaces tags; `NotFound` when there is no such role.
    fn tag_role(&self, role: &str, tags: &[(String, String)]) -> Result<()>;
    /// Removes tags by key; `NotFound` when there is no such role.
    fn untag_role(&self, role: &str, keys: &[String]) -> Result<()>;
}

fn tags_json(tags: &[(String, String)]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

fn role_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Role> {
    let tags: String = r.get(6)?;
    Ok(Role {
        name: r.get(0)?,
        path: r.get(1)?,
        id: r.get(2)?,
        trust_policy: r.get(3)?,
        description: r.get(4)?,
        max_session_s: r.get(5)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_ms: r.get(7)?,
    })
}

const ROLE_COLUMNS: &str =
    "name, path, id, trust_policy, description, max_session_s, tags, created_ms";

fn no_role(name: &str) -> StoreError {
    StoreError::NotFound(format!("The role with name {name} cannot be found."))
}

impl SecretStore {
    fn with_role<T>(
        &self,
        name: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Role) -> Result<T>,
    ) -> Result<T> {
        let mut inner = self.inner();
        let tx = inner.db.write_tx()?;
        let role = tx
            .query_row(
                &format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = ?1"),
                [name],
                role_row,
            )
            .optional()?
            .ok_or_else(|| no_role(name))?;
        let out = f(&tx, role)?;
        tx.commit()?;
        Ok(out)
    }
}

impl RoleStore for SecretStore {
    fn create_role(&self, role: &Role) -> Result<()> {
        let inner = self.inner();
        let taken: bool = inner.db.query_row(
            "SELECT EXISTS (SELECT 1 FROM roles WHERE name = ?1)",
            [&role.name],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::Conflict(format!(
                "Role with name {} already exists.",
                role.name
            )));
        }
        inner.db.execute(
            &format!("INSERT INTO roles ({ROLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                role.name,
                role.path,
                role.id,
                role.trust_policy,
                role.description,
                role.max_session_s,
                tags_json(&role.tags),
                role.created_ms
            ],
        )?;
        Ok(())
    }

    fn role(&self, name: &str) -> Result<Option<Role>> {
        let inner = self.inner();
        Ok(inner
            .db
            .query_row(
                &format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = ?1"),
                [name],
                role_row,
            )
            .optional()?)
    }

    fn roles(&self) -> Result<Vec<Role>> {
        let inner = self.inner();
        let mut stmt = inner
            .db
            .prepare(&format!("SELECT {ROLE_COLUMNS} FROM roles ORDER BY name"))?;
        let rows = stmt.query_map([], role_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update_role(&self, name: &str, update: &RoleUpdate) -> Result<()> {
        self.with_role(name, |tx, role| {
            tx.execute(
                "UPDATE roles SET description = ?2, max_session_s = ?3 WHERE name = ?1",
                params![
                    role.name,
                    update.description.clone().or(role.description),
                    update.max_session_s.unwrap_or(role.max_session_s)
                ],
            )?;
            Ok(())
        })
    }

    fn delete_role(&self, name: &str) -> Result<()> {
        self.with_role(name, |tx, role| {
            let policies: i64 = tx.query_row(
                "SELECT COUNT(*) FROM role_policies WHERE role = ?1",
                [&role.name],
                |r| r.get(0),
            )?;
            if policies > 0 {
                return Err(StoreError::Conflict(
                    "Cannot delete entity, must delete policies first.".into(),
                ));
            }
            tx.execute("DELETE FROM roles WHERE name = ?1", [&role.name])?;
            Ok(())
        })
    }

    fn put_role_policy(&self, role: &str, policy: &str, document: &str) -> Result<()> {
        self.with_role(role, |tx, role| {
            tx.execute(
                "INSERT INTO role_policies (role, name, document) VALUES (?1, ?2, ?3)
                 ON CONFLICT (role, name) DO UPDATE SET document = excluded.document",
                params![role.name, policy, document],
            )?;
            Ok(())
        })
    }

    fn role_policies(&self, role: &str) -> Result<Vec<(String, String)>> {
        let inner = self.inner();
        let mut stmt = inner
            .db
            .prepare("SELECT name, document FROM role_policies WHERE role = ?1 ORDER BY name")?;
        let rows = stmt.query_map([role], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()> {
        self.with_role(role, |tx, role| {
            let n = tx.execute(
                "DELETE FROM role_policies WHERE role = ?1 AND name = ?2",
                params![role.name, policy],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "The role policy with name {policy} cannot be found."
                )));
            }
            Ok(())
        })
    }

    fn tag_role(&self, role: &str, tags: &[(String, String)]) -> Result<()> {
        self.with_role(role, |tx, role| {
            let mut all = role.tags;
            for (k, v) in tags {
                match all.iter_mut().find(|(ek, _)| ek == k) {
                    Some(e) => e.1 = v.clone(),
                    None => all.push((k.clone(), v.clone())),
                }
            }
            tx.execute(
                "UPDATE roles SET tags = ?2 WHERE name = ?1",
                params![role.name, tags_json(&all)],
            )?;
            Ok(())
        })
    }

    fn untag_role(&self, role: &str, keys: &[String]) -> Result<()> {
        self.with_role(role, |tx, role| {
            let mut all = role.tags;
            all.retain(|(k, _)| !keys.contains(k));
            tx.execute(
                "UPDATE roles SET tags = ?2 WHERE name = ?1",
                params![role.name, tags_json(&all)],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    fn role(name: &str) -> Role {
        Role {
            name: name.into(),
            path: "/".into(),
            id: "AROAEXAMPLE0000000001".into(),
            trust_policy: "{}".into(),
            description: None,
            max_session_s: 3600,
            tags: vec![("team".into(), "a".into())],
            created_ms: 1,
        }
    }

    #[test]
    fn roles_and_their_policies() {
        let dir = tempfile::tempdir().unwrap();
        let s = SecretStore::open(dir.path(), MasterKey::generate()).unwrap();
        s.create_role(&role("Thumbs")).unwrap();
        let mut other = role("thumbs");
        other.id = "AROAEXAMPLE0000000002".into();
        assert!(matches!(
            s.create_role(&other),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.role("THUMBS").unwrap().unwrap().name, "Thumbs");
        s.put_role_policy("thumbs", "p1", "{\"a\":1}").unwrap();
        s.put_role_policy("Thumbs", "p1", "{\"a\":2}").unwrap();
        s.put_role_policy("Thumbs", "p0", "{}").unwrap();
        assert_eq!(
            s.role_policies("Thumbs").unwrap(),
            vec![
                ("p0".into(), "{}".into()),
                ("p1".into(), "{\"a\":2}".into())
            ]
        );
        assert!(matches!(
            s.delete_role("Thumbs"),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.delete_role_policy("Thumbs", "nope"),
            Err(StoreError::NotFound(_))
        ));
        s.delete_role_policy("Thumbs", "p0").unwrap();
        s.delete_role_policy("Thumbs", "p1").unwrap();
        s.update_role(
            "Thumbs",
            &RoleUpdate {
                description: Some("d".into()),
                max_session_s: Some(7200),
            },
        )
        .unwrap();
        s.tag_role(
            "Thumbs",
            &[("team".into(), "b".into()), ("x".into(), "y".into())],
        )
        .unwrap();
        s.untag_role("Thumbs", &["x".into()]).unwrap();
        let r = s.role("Thumbs").unwrap().unwrap();
        assert_eq!(r.description.as_deref(), Some("d"));
        assert_eq!(r.max_session_s, 7200);
        assert_eq!(r.tags, vec![("team".into(), "b".into())]);
        s.delete_role("Thumbs").unwrap();
        assert!(s.role("Thumbs").unwrap().is_none());
        assert!(matches!(
            s.put_role_policy("Thumbs", "p", "{}"),
            Err(StoreError::NotFound(_))
        ));
    }
}
