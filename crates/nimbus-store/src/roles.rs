//! Execution roles: a name, a path, a trust policy (stored as given) and inline identity
//! policies, in `DATA_DIR/secrets.db` beside the access keys (schema migration 3). The
//! gateway's IAM API reads and writes them through [`RoleStore`]; the credentials minted
//! for a function's instances carry the union of a role's inline policies.
//!
//! Role names are unique without regard to case, as in IAM. In a cluster the roles live in
//! PostgreSQL ([`crate::postgres::roles::PgRoleStore`]).

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
        if let Some(pg) = self.pg_roles() {
            return pg.create_role(role);
        }
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
        if let Some(pg) = self.pg_roles() {
            return pg.role(name);
        }
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
        if let Some(pg) = self.pg_roles() {
            return pg.roles();
        }
        let inner = self.inner();
        let mut stmt = inner
            .db
            .prepare(&format!("SELECT {ROLE_COLUMNS} FROM roles ORDER BY name"))?;
        let rows = stmt.query_map([], role_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update_role(&self, name: &str, update: &RoleUpdate) -> Result<()> {
        if let Some(pg) = self.pg_roles() {
            return pg.update_role(name, update);
        }

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
        if let Some(pg) = self.pg_roles() {
            return pg.delete_role(name);
        }

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
        if let Some(pg) = self.pg_roles() {
            return pg.put_role_policy(role, policy, document);
        }

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
        if let Some(pg) = self.pg_roles() {
            return pg.role_policies(role);
        }
        let inner = self.inner();
        let mut stmt = inner
            .db
            .prepare("SELECT name, document FROM role_policies WHERE role = ?1 ORDER BY name")?;
        let rows = stmt.query_map([role], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_role_policy(&self, role: &str, policy: &str) -> Result<()> {
        if let Some(pg) = self.pg_roles() {
            return pg.delete_role_policy(role, policy);
        }

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
        if let Some(pg) = self.pg_roles() {
            return pg.tag_role(role, tags);
        }
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
        if let Some(pg) = self.pg_roles() {
            return pg.untag_role(role, keys);
        }

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
    use crate::postgres::roles::PgRoleStore;
    use crate::MasterKey;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::{Pg, PgConfig};
    use std::sync::{Arc, Barrier};

    /// The backend's store as one more node sees it.
    type Open<'a> = &'a dyn Fn() -> Arc<dyn RoleStore>;

    /// SQLite serves one node: every "node" shares its one store.
    fn sqlite(body: fn(Open)) {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn RoleStore> =
            Arc::new(SecretStore::open(dir.path(), MasterKey::generate()).unwrap());
        body(&|| s.clone());
    }

    /// Every open is a pool of its own, as on another node.
    fn postgres(body: fn(Open)) {
        let db = TestDb::new("roles");
        body(&|| {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgRoleStore::open(&pg).unwrap())
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

    on_both_backends!(roles_and_their_policies, nodes_racing_on_one_role);

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

    fn roles_and_their_policies(open: Open) {
        let s = open();
        s.create_role(&role("Thumbs")).unwrap();
        let mut other = role("thumbs");
        other.id = "AROAEXAMPLE0000000002".into();
        assert!(matches!(
            s.create_role(&other),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.role("THUMBS").unwrap().unwrap(), role("Thumbs"));
        assert!(s.role("nope").unwrap().is_none());
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
        assert_eq!(s.role_policies("tHUMBS").unwrap().len(), 2);
        assert!(s.role_policies("nope").unwrap().is_empty());
        assert!(matches!(
            s.delete_role("Thumbs"),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.delete_role_policy("Thumbs", "nope"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.delete_role_policy("nope", "p0"),
            Err(StoreError::NotFound(_))
        ));
        s.delete_role_policy("Thumbs", "p0").unwrap();
        s.delete_role_policy("THUMBS", "p1").unwrap();
        s.update_role(
            "Thumbs",
            &RoleUpdate {
                description: Some("d".into()),
                max_session_s: Some(7200),
            },
        )
        .unwrap();
        // Fields left out stay as they are.
        s.update_role("thumbs", &RoleUpdate::default()).unwrap();
        assert!(matches!(
            s.update_role("nope", &RoleUpdate::default()),
            Err(StoreError::NotFound(_))
        ));
        s.tag_role(
            "Thumbs",
            &[("team".into(), "b".into()), ("x".into(), "y".into())],
        )
        .unwrap();
        s.untag_role("Thumbs", &["x".into()]).unwrap();
        assert!(matches!(
            s.tag_role("nope", &[]),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.untag_role("nope", &[]),
            Err(StoreError::NotFound(_))
        ));
        let r = s.role("Thumbs").unwrap().unwrap();
        assert_eq!(r.description.as_deref(), Some("d"));
        assert_eq!(r.max_session_s, 7200);
        assert_eq!(r.tags, vec![("team".into(), "b".into())]);
        let mut b = role("beta");
        b.id = "AROAEXAMPLE0000000003".into();
        s.create_role(&b).unwrap();
        let mut a = role("Alpha");
        a.id = "AROAEXAMPLE0000000004".into();
        s.create_role(&a).unwrap();
        let names: Vec<_> = s.roles().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            ["Alpha", "beta", "Thumbs"],
            "sorted without regard to case"
        );
        s.delete_role("Thumbs").unwrap();
        assert!(s.role("Thumbs").unwrap().is_none());
        assert!(matches!(
            s.delete_role("Thumbs"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.put_role_policy("Thumbs", "p", "{}"),
            Err(StoreError::NotFound(_))
        ));
    }

    /// Two nodes (two pools on PostgreSQL), two threads on each: one creation of a name
    /// wins, the others are conflicts; concurrent tag changes are all kept.
    fn nodes_racing_on_one_role(open: Open) {
        const THREADS: usize = 4;
        let stores = [open(), open()];
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let mut r = role(if t % 2 == 0 { "Racer" } else { "RACER" });
                    r.id = format!("AROAEXAMPLE000000010{t}");
                    start.wait();
                    let created = match store.create_role(&r) {
                        Ok(()) => true,
                        Err(StoreError::Conflict(_)) => false,
                        Err(e) => panic!("{e}"),
                    };
                    start.wait();
                    for i in 0..10 {
                        store
                            .tag_role("racer", &[(format!("k{t}"), i.to_string())])
                            .unwrap();
                    }
                    created
                })
            })
            .collect();
        let created = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|c| *c)
            .count();
        assert_eq!(created, 1);
        let mut tags = stores[1].role("racer").unwrap().unwrap().tags;
        tags.sort();
        let mut expected: Vec<(String, String)> = (0..THREADS)
            .map(|t| (format!("k{t}"), "9".into()))
            .collect();
        expected.push(("team".into(), "a".into()));
        assert_eq!(tags, expected, "no tag change lost");
    }
}
