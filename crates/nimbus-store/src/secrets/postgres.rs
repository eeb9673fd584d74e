//! The rows of [`super::SecretStore`] on PostgreSQL (component `secrets`), shared by the
//! nodes of a cluster: `secrets_secrets` and `secrets_access_keys` hold what `secrets.db`'s
//! `secrets` and `access_keys` hold (nonce, ciphertext, id of the sealing key; never a key
//! or a plaintext), and `secrets_master` records the id of the master key in use.
//!
//! # One master key per cluster
//! SQLite's store checks at open that no stored value was sealed under another key. A
//! cluster needs more: its nodes must agree on the key even before anything is sealed, and
//! a rotation on one node must not let another node (still holding the old key) seal new
//! values under the old key, which nobody could read after its restart with the new key.
//! So:
//! - `secrets_master` (one row) holds the id of the key in use: recorded by the first node
//!   to open the store, changed only by a rotation. A node opening with another key is
//!   refused, naming both ids (as SQLite refuses a key that sealed nothing stored).
//! - Every write that seals (a secret, an access key) takes `FOR SHARE` on that row in its
//!   transaction and checks the id against the key it sealed with. A rotation takes
//!   `FOR UPDATE` on the row, then `EXCLUSIVE` locks on both tables (plain reads go on,
//!   writes and deletes wait), re-seals every row and records the new id, all in one
//!   transaction. So a write either commits before the rotation (and is re-sealed by it)
//!   or waits for it and then finds the new id: it is refused (`Conflict`, "restart this
//!   node with the new key") instead of storing a value sealed under the old key. Both
//!   take the row lock before any table lock, so they cannot deadlock.
//! - Reads need no lock: a node with the old key reading a value sealed by the new one is
//!   refused by [`super::SecretStore`] by the key id stored with the value (`Conflict`),
//!   before trying to decrypt it. A node with the old key cannot rotate either.
//!
//! Access key names (and ids) are unique by constraint: two nodes creating the same name
//! at once, one wins and the other gets the `Conflict` SQLite gives.

use super::KEY_AAD_PREFIX;
use super::{access_key_taken, Handover, KeyRow, MasterKey, Reseal, Rows, Sealed, SecretInfo};
use crate::sqlite::now_ms;
use crate::{Result, StoreError};
use nimbus_pg::{Migration, Pg, PgError, Row, Transaction};

const MIGRATIONS: &[Migration] = &[
    Migration::breaking(
        r#"
CREATE TABLE secrets_master (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    key_id     TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE secrets_secrets (
    name       TEXT COLLATE "C" PRIMARY KEY,
    key_id     TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE secrets_access_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    policy     TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
"#,
    ),
    // A rotation's new key sealed under the old one, for the other nodes to follow it
    // (`SecretStore::follow_rotation`); NULL outside the handover window.
    Migration::additive(
        "ALTER TABLE secrets_master ADD COLUMN handover_from TEXT,
            ADD COLUMN handover_nonce BYTEA, ADD COLUMN handover_key BYTEA,
            ADD COLUMN handover_until_ms BIGINT",
    ),
];

/// The rows and the key in use of a store on PostgreSQL.
pub(super) struct PgInner {
    pub(super) rows: PgRows,
    pub(super) key: MasterKey,
}

pub(super) struct PgRows {
    pg: Pg,
}

fn now() -> i64 {
    now_ms(time::OffsetDateTime::now_utc())
}

impl PgRows {
    /// Brings the schema up to date, records `key` as the key in use when none is, and
    /// refuses `key` when another one is in use.
    pub(super) fn open(pg: &Pg, key: &MasterKey) -> Result<Self> {
        pg.migrate("secrets", MIGRATIONS)?;
        let ours = key.id();
        let now = now();
        let other: Option<String> = pg.transaction(async |tx| {
            // Two nodes starting at once: the second waits for the first's row, then keeps it.
            tx.execute(
                "INSERT INTO secrets_master (singleton, key_id, updated_ms) VALUES (TRUE, $1, $2)
                 ON CONFLICT (singleton) DO NOTHING",
                &[&ours, &now],
            )
            .await?;
            let current: String = tx
                .query_one("SELECT key_id FROM secrets_master", &[])
                .await?
                .get(0);
            if current != ours {
                return Ok(Some(current));
            }
            let row = tx
                .query_opt(
                    "SELECT key_id FROM secrets_secrets WHERE key_id <> $1
                     UNION ALL SELECT key_id FROM secrets_access_keys WHERE key_id <> $1 LIMIT 1",
                    &[&ours],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })?;
        if let Some(other) = other {
            return Err(StoreError::InvalidInput(format!(
                "the secrets in PostgreSQL ({}) are encrypted with master key {other}, but this \
                 node's master key is {ours}: every node of a cluster must be given the same \
                 master key (NIMBUS_MASTER_KEY or the master key file), the one the secrets \
                 were set or rotated with",
                pg.target()
            )));
        }
        Ok(Self { pg: pg.clone() })
    }

    /// The id of the key in use and the last rotation's handover, if any is kept.
    pub(super) fn handover(&self) -> Result<(String, Option<Handover>)> {
        let row = self.pg.with(async |c| {
            Ok(c.query_one(
                "SELECT key_id, handover_from, handover_nonce, handover_key, handover_until_ms
                 FROM secrets_master",
                &[],
            )
            .await?)
        })?;
        let from: Option<String> = row.get(1);
        let handover = from.map(|from| Handover {
            from,
            nonce: row.get::<_, Option<Vec<u8>>>(2).unwrap_or_default(),
            sealed_key: row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default(),
            until_ms: row.get::<_, Option<i64>>(4).unwrap_or(0),
        });
        Ok((row.get(0), handover))
    }

    /// Removes a handover whose window ended by `now_ms`.
    pub(super) fn clear_handover(&self, now_ms: i64) -> Result<()> {
        self.pg.with(async |c| {
            c.execute(
                "UPDATE secrets_master SET handover_from = NULL, handover_nonce = NULL,
                     handover_key = NULL, handover_until_ms = NULL
                 WHERE handover_until_ms <= $1",
                &[&now_ms],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }
}

/// Locks the recorded key id for the rest of `tx` (shared with other writers; a rotation
/// waits for them, they for a rotation) and checks that `what` was sealed under it.
async fn check_key(
    tx: &Transaction<'_>,
    what: &str,
    sealed_with: &str,
) -> Result<Option<StoreError>, PgError> {
    let current: Option<String> = tx
        .query_opt("SELECT key_id FROM secrets_master FOR SHARE", &[])
        .await?
        .map(|r| r.get(0));
    Ok(match current {
        Some(current) if current == sealed_with => None,
        Some(current) => Some(StoreError::Conflict(format!(
            "refusing to store {what} encrypted with master key {sealed_with}: the secrets are \
             now encrypted with master key {current} (rotated on another node since this node \
             started); restart this node with the new key"
        ))),
        None => Some(StoreError::Corrupt(
            "no master key id is recorded in secrets_master: restart a node to record its key"
                .into(),
        )),
    })
}

fn sealed_at(r: &Row, at: usize) -> Sealed {
    Sealed {
        key_id: r.get(at),
        nonce: r.get(at + 1),
        ciphertext: r.get(at + 2),
    }
}

impl Rows for PgRows {
    fn put_secret(&self, name: &str, sealed: &Sealed, now_ms: i64) -> Result<bool> {
        self.pg.transaction(async |tx| {
            if let Some(e) = check_key(tx, &format!("secret {name}"), &sealed.key_id).await? {
                return Ok(Err(e));
            }
            // `xmax` is 0 on a row this statement inserted, the updating transaction's id
            // on one it updated.
            let created: bool = tx
                .query_one(
                    "INSERT INTO secrets_secrets
                         (name, key_id, nonce, ciphertext, created_ms, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id,
                         nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                         updated_ms = excluded.updated_ms
                     RETURNING (xmax = 0)",
                    &[
                        &name,
                        &sealed.key_id,
                        &sealed.nonce,
                        &sealed.ciphertext,
                        &now_ms,
                    ],
                )
                .await?
                .get(0);
            Ok(Ok(created))
        })?
    }

    fn secret(&self, name: &str) -> Result<Option<Sealed>> {
        let row = self.pg.with(async |c| {
            Ok(c.query_opt(
                "SELECT key_id, nonce, ciphertext FROM secrets_secrets WHERE name = $1",
                &[&name],
            )
            .await?)
        })?;
        Ok(row.map(|r| sealed_at(&r, 0)))
    }

    fn list(&self) -> Result<Vec<SecretInfo>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                "SELECT name, created_ms, updated_ms FROM secrets_secrets ORDER BY name",
                &[],
            )
            .await?)
        })?;
        Ok(rows
            .iter()
            .map(|r| SecretInfo {
                name: r.get(0),
                created_ms: r.get(1),
                updated_ms: r.get(2),
            })
            .collect())
    }

    fn delete_secret(&self, name: &str) -> Result<bool> {
        let n = self.pg.with(async |c| {
            Ok(
                c.execute("DELETE FROM secrets_secrets WHERE name = $1", &[&name])
                    .await?,
            )
        })?;
        Ok(n > 0)
    }

    fn rotate(
        &mut self,
        old_id: &str,
        new_id: &str,
        reseal: Reseal<'_>,
        handover: &Handover,
    ) -> Result<usize> {
        let now = now();
        self.pg.transaction(async |tx| {
            let current: Option<String> = tx
                .query_opt("SELECT key_id FROM secrets_master FOR UPDATE", &[])
                .await?
                .map(|r| r.get(0));
            if current.as_deref() != Some(old_id) {
                return Ok(Err(StoreError::Conflict(format!(
                    "cannot rotate: the secrets are encrypted with master key {}, not with this \
                     node's key {old_id} (rotated on another node since this node started); \
                     restart this node with the key in use",
                    current.as_deref().unwrap_or("(none recorded)")
                ))));
            }
            tx.batch_execute("LOCK TABLE secrets_secrets, secrets_access_keys IN EXCLUSIVE MODE")
                .await?;
            let secrets = tx
                .query("SELECT name, nonce, ciphertext FROM secrets_secrets", &[])
                .await?;
            let keys = tx
                .query("SELECT id, nonce, ciphertext FROM secrets_access_keys", &[])
                .await?;
            // Everything is re-sealed before anything is written, so a value that does not
            // open leaves the tables untouched (the transaction then only released locks).
            let mut new_secrets = Vec::with_capacity(secrets.len());
            for r in &secrets {
                let name: String = r.get(0);
                let (nonce, ct): (Vec<u8>, Vec<u8>) = (r.get(1), r.get(2));
                match reseal(&name, &nonce, &ct) {
                    Ok(sealed) => new_secrets.push((name, sealed)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            let mut new_keys = Vec::with_capacity(keys.len());
            for r in &keys {
                let id: String = r.get(0);
                let (nonce, ct): (Vec<u8>, Vec<u8>) = (r.get(1), r.get(2));
                match reseal(&format!("{KEY_AAD_PREFIX}{id}"), &nonce, &ct) {
                    Ok(sealed) => new_keys.push((id, sealed)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            for (name, (nonce, ct)) in &new_secrets {
                tx.execute(
                    "UPDATE secrets_secrets SET key_id = $2, nonce = $3, ciphertext = $4
                     WHERE name = $1",
                    &[name, &new_id, nonce, ct],
                )
                .await?;
            }
            for (id, (nonce, ct)) in &new_keys {
                tx.execute(
                    "UPDATE secrets_access_keys SET key_id = $2, nonce = $3, ciphertext = $4
                     WHERE id = $1",
                    &[id, &new_id, nonce, ct],
                )
                .await?;
            }
            tx.execute(
                "UPDATE secrets_master SET key_id = $1, updated_ms = $2, handover_from = $3,
                     handover_nonce = $4, handover_key = $5, handover_until_ms = $6",
                &[
                    &new_id,
                    &now,
                    &handover.from,
                    &handover.nonce,
                    &handover.sealed_key,
                    &handover.until_ms,
                ],
            )
            .await?;
            Ok(Ok(new_secrets.len()))
        })?
    }

    fn insert_access_key(&self, key: &KeyRow) -> Result<()> {
        self.pg.transaction(async |tx| {
            let what = format!("access key {}", key.id);
            if let Some(e) = check_key(tx, &what, &key.sealed.key_id).await? {
                return Ok(Err(e));
            }
            // A taken name or id (the constraints; another node's insert in flight is
            // waited for) inserts nothing.
            let n = tx
                .execute(
                    "INSERT INTO secrets_access_keys
                         (id, name, policy, key_id, nonce, ciphertext, created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT DO NOTHING",
                    &[
                        &key.id,
                        &key.name,
                        &key.policy,
                        &key.sealed.key_id,
                        &key.sealed.nonce,
                        &key.sealed.ciphertext,
                        &key.created_ms,
                    ],
                )
                .await?;
            Ok(if n == 0 {
                Err(access_key_taken(&key.name))
            } else {
                Ok(())
            })
        })?
    }

    fn access_keys(&self) -> Result<Vec<KeyRow>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                "SELECT id, name, policy, key_id, nonce, ciphertext, created_ms
                 FROM secrets_access_keys ORDER BY name",
                &[],
            )
            .await?)
        })?;
        Ok(rows
            .iter()
            .map(|r| KeyRow {
                id: r.get(0),
                name: r.get(1),
                policy: r.get(2),
                sealed: sealed_at(r, 3),
                created_ms: r.get(6),
            })
            .collect())
    }

    fn shared_by_nodes(&self) -> bool {
        true
    }

    fn delete_access_key(&self, id: &str) -> Result<bool> {
        let n = self.pg.with(async |c| {
            Ok(
                c.execute("DELETE FROM secrets_access_keys WHERE id = $1", &[&id])
                    .await?,
            )
        })?;
        Ok(n > 0)
    }
}
