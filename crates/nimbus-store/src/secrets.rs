//! Secrets, encrypted at rest (`DATA_DIR/secrets.db`, WAL, `synchronous=FULL`).
//!
//! Each value is sealed with XChaCha20-Poly1305 under a 256-bit master key, with a fresh
//! random 24-byte nonce per write and the secret's name bound as associated data, so a
//! ciphertext copied onto another name does not decrypt. The database holds only the nonce,
//! the ciphertext and the id of the key that sealed it (a short hash of the key, not the
//! key): neither the key nor any plaintext is ever written under the data directory by this
//! module unless the operator lets the key file live there (the default, `master.key`, mode
//! 0600).
//!
//! [`SecretStore::rotate`] re-encrypts every secret under a new key in one transaction and
//! then uses the new key; a server started with the old key afterwards refuses to start.
//!
//! In cluster mode the same sealed rows live in PostgreSQL instead
//! ([`SecretStore::open_postgres`], `secrets/postgres.rs`), shared by every node; the
//! database also records which master key is in use, so nodes given different keys, and
//! nodes still holding the key a rotation replaced, are refused rather than sealing values
//! the others cannot open.

use crate::db::Db;
use crate::sqlite::{now_ms, open_db};
use crate::{Result, StoreError};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock};

mod postgres;

/// Largest secret value accepted, in bytes.
pub const MAX_SECRET_VALUE: usize = 4096;
/// Longest secret name accepted.
pub const MAX_SECRET_NAME: usize = nimbus_core::SECRET_NAME_MAX;

const NONCE_LEN: usize = 24;
const AAD_PREFIX: &[u8] = b"nimbus-secret-v1:";

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
",
    "
CREATE TABLE access_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    policy     TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
",
    // Execution roles (`roles.rs`): not secret, but the identities access keys and
    // session credentials act as live beside them.
    "
CREATE TABLE roles (
    name           TEXT PRIMARY KEY NOT NULL COLLATE NOCASE,
    path           TEXT NOT NULL,
    id             TEXT NOT NULL UNIQUE,
    trust_policy   TEXT NOT NULL,
    description    TEXT,
    max_session_s  INTEGER NOT NULL,
    tags           TEXT NOT NULL,
    created_ms     INTEGER NOT NULL
) STRICT;
CREATE TABLE role_policies (
    role     TEXT NOT NULL COLLATE NOCASE,
    name     TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (role, name)
) STRICT;
",
];

/// Access key secrets are sealed as if named `\0access-key:ID`: no secret name holds a NUL, so
/// a secret's ciphertext never opens as a key's or the other way round.
const KEY_AAD_PREFIX: &str = "\u{0}access-key:";

/// Replaces `path` atomically with a file of mode 0600 holding `contents`: written to a
/// temporary file beside it, flushed, renamed over it, and the directory flushed. For key
/// material (the master key file, credentials files).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A secret name: 1–128 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit
/// (the rule is [`nimbus_core::validate_secret_name`], which function configs use too).
pub fn validate_secret_name(name: &str) -> Result<()> {
    nimbus_core::validate_secret_name(name).map_err(StoreError::InvalidInput)
}

/// The 256-bit master key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl MasterKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// Exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            StoreError::InvalidInput(format!(
                "a master key is 32 bytes (256 bits), got {}",
                bytes.len()
            ))
        })?;
        Ok(Self(key))
    }

    /// The standard base64 of 32 bytes (surrounding whitespace ignored), as in
    /// `NIMBUS_MASTER_KEY` and key files.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                StoreError::InvalidInput(format!(
                    "a master key is the base64 of 32 random bytes (for example \
                     `head -c32 /dev/urandom | base64`): {e}"
                ))
            })?;
        Self::from_bytes(&bytes)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A short public id of the key (the first 8 bytes of its SHA-256, hex), stored beside
    /// each ciphertext to tell which key sealed it.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(
            b"nimbus-master-key-id:"
                .iter()
                .chain(&self.0)
                .copied()
                .collect::<Vec<u8>>(),
        );
        hex::encode(&digest[..8])
    }

    /// Reads a key file holding the base64 key. Refuses a file readable or writable by the
    /// group or others (Unix).
    pub fn read_file(path: &Path) -> Result<Self> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("reading master key file {}: {e}", path.display()),
            ))
        })?;
        Self::from_base64(&text).map_err(|e| {
            StoreError::InvalidInput(format!("master key file {}: {e}", path.display()))
        })
    }

    /// Reads `path`, or when it does not exist creates it (mode 0600) with a new random key.
    /// The second value is true when the key was generated.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool)> {
        if path.exists() {
            return Ok((Self::read_file(path)?, false));
        }
        let key = Self::generate();
        let io = |e: std::io::Error| {
            StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("creating master key file {}: {e}", path.display()),
            ))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        use std::io::Write;
        file.write_all(format!("{}\n", key.to_base64()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok((key, true))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    /// Seals `value` for the secret `name`: `(nonce, ciphertext)`.
    pub fn seal(&self, name: &str, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(name);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a bounded value cannot fail");
        (nonce.to_vec(), ciphertext)
    }

    /// Opens what [`MasterKey::seal`] sealed for `name`. Fails with a wrong key, another
    /// name, or altered bytes.
    pub fn open(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        if nonce.len() != NONCE_LEN {
            return Err(StoreError::Corrupt(format!(
                "secret {name}: nonce of {} bytes",
                nonce.len()
            )));
        }
        let aad = aad(name);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "secret {name} does not decrypt with master key {}: wrong key or altered data",
                    self.id()
                ))
            })
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        StoreError::Io(std::io::Error::new(
            e.kind(),
            format!("reading master key file {}: {e}", path.display()),
        ))
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::InvalidInput(format!(
            "master key file {} is accessible by group or others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

/// A secret's name and times; never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The encrypted secrets store: on SQLite (`DATA_DIR/secrets.db`, [`SecretStore::open`]) or
/// on PostgreSQL, shared by the nodes of a cluster ([`SecretStore::open_postgres`]). The
/// sealing is the same on both; only where the sealed rows live differs.
///
/// The execution roles ([`crate::RoleStore`]) of a single server live in `secrets.db` too,
/// and its `RoleStore` methods use that file. A store opened with
/// [`SecretStore::open_postgres`] holds no roles (a cluster keeps them in
/// [`crate::postgres::roles::PgRoleStore`]): calling its `RoleStore` methods is a wiring
/// mistake and panics, saying so.
pub struct SecretStore {
    backend: Backend,
    /// On PostgreSQL the execution roles have their own store (`roles.rs` hands the
    /// `RoleStore` calls to it); on SQLite they live in `secrets.db`.
    pg_roles: Option<crate::postgres::roles::PgRoleStore>,
}

/// Where the sealed rows live, with the key in use beside them (rotation swaps both under
/// one lock).
enum Backend {
    Sqlite(Mutex<Inner>),
    /// Readers and writers share the lock, so a node's requests run side by side; only a
    /// rotation takes it alone.
    Postgres(RwLock<postgres::PgInner>),
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    key: MasterKey,
}

/// A value as stored: the id of the key that sealed it, the nonce, the ciphertext.
struct Sealed {
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// An access key's row.
struct KeyRow {
    id: String,
    name: String,
    policy: String,
    sealed: Sealed,
    created_ms: i64,
}

/// Rotation's crypto, run by the backend on each stored value inside its transaction:
/// `(associated name, nonce, ciphertext)` opened under the old key, sealed under the new.
type Reseal<'a> = &'a dyn Fn(&str, &[u8], &[u8]) -> Result<(Vec<u8>, Vec<u8>)>;

/// How long the other nodes of a cluster can follow a rotation ([`SecretStore::follow_rotation`]):
/// the new key stays in the database, sealed under the old one, this long. Running nodes
/// follow within a poll (200 ms); a node that was cut off longer, or stopped, is started
/// with the new key.
pub const HANDOVER: std::time::Duration = std::time::Duration::from_secs(120);

/// The associated-data name of a handover: the new key, sealed under the old one.
fn handover_name(new_id: &str) -> String {
    format!("\u{0}master-key-handover:{new_id}")
}

/// A rotation's new key sealed under the old key, for the nodes still holding the old one.
pub(crate) struct Handover {
    /// The id of the key that sealed it (the old key).
    pub from: String,
    pub nonce: Vec<u8>,
    pub sealed_key: Vec<u8>,
    /// Unix ms after which it is no longer followed (and is removed).
    pub until_ms: i64,
}

/// The row storage of a backend. Values arrive sealed and leave sealed: no plaintext and no
/// key ever reaches a backend.
trait Rows {
    /// Creates or replaces the secret `name`, sealed under the key `sealed.key_id`. True
    /// when it was created. A backend shared by several nodes refuses (`Conflict`) a value
    /// sealed under another key than the store's current one.
    fn put_secret(&self, name: &str, sealed: &Sealed, now_ms: i64) -> Result<bool>;
    fn secret(&self, name: &str) -> Result<Option<Sealed>>;
    /// Names and times, sorted by name (bytewise).
    fn list(&self) -> Result<Vec<SecretInfo>>;
    /// False when there was no such secret.
    fn delete_secret(&self, name: &str) -> Result<bool>;
    /// In one transaction: every secret and access key re-sealed with `reseal` (associated
    /// names: the secret's name, [`KEY_AAD_PREFIX`] + the key's id) and recorded as sealed
    /// by `new_id`. All or nothing; `old_id` is the key this node holds. Returns how many
    /// secrets were re-sealed.
    /// `handover` is the new key sealed under the old one, for the other nodes of a cluster
    /// to follow the rotation (kept by stores shared by nodes, ignored by SQLite's).
    fn rotate(
        &mut self,
        old_id: &str,
        new_id: &str,
        reseal: Reseal<'_>,
        handover: &Handover,
    ) -> Result<usize>;
    /// Stores a new access key; `Conflict` ("an access key named … already exists") when
    /// its name or its id is taken; refuses a stale key as [`Rows::put_secret`] does.
    fn insert_access_key(&self, key: &KeyRow) -> Result<()>;
    /// Every access key, sorted by name (bytewise).
    fn access_keys(&self) -> Result<Vec<KeyRow>>;
    /// False when there was no such key.
    fn delete_access_key(&self, id: &str) -> Result<bool>;
    /// Several nodes use these rows, so another node may have rotated the key: a value
    /// sealed under another key than this node's is reported as such ([`stale_key`])
    /// rather than as undecryptable. (One process owns a SQLite file: there a value
    /// whose key id differs is simply corrupt, and fails to decrypt as before.)
    fn shared_by_nodes(&self) -> bool {
        false
    }
}

/// A value sealed under another key than the node's: the master key was rotated (by another
/// node of the cluster) after this node started.
fn stale_key(what: &str, sealed_with: &str, ours: &str) -> StoreError {
    StoreError::Conflict(format!(
        "{what} is encrypted with master key {sealed_with}, but this node's master key is \
         {ours}: the master key was rotated (on another node) since this node started; \
         restart it with the new key"
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SecretStore {
    /// Opens `DATA_DIR/secrets.db` with `key`. Refuses a key that did not seal the stored
    /// secrets (for example the old key after a rotation), naming both key ids.
    pub fn open(data_dir: &Path, key: MasterKey) -> Result<Self> {
        let db = open_db(&data_dir.join("secrets.db"), "FULL", MIGRATIONS)?;
        let other: Option<String> = db
            .query_row(
                "SELECT key_id FROM secrets WHERE key_id <> ?1
                 UNION ALL SELECT key_id FROM access_keys WHERE key_id <> ?1 LIMIT 1",
                [key.id()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = other {
            return Err(StoreError::InvalidInput(format!(
                "the secrets in {} are encrypted with master key {other}, but this server's \
                 master key is {}: start with the key the secrets were set or rotated with",
                data_dir.join("secrets.db").display(),
                key.id()
            )));
        }
        Ok(Self {
            backend: Backend::Sqlite(Mutex::new(Inner { db, key })),
            pg_roles: None,
        })
    }

    /// Opens the secrets and access keys in PostgreSQL (cluster mode; component `secrets`,
    /// its schema brought up to date) with `key`. Every node of a cluster must be given the
    /// same key: the database records the id of the key in use (the first node's, then each
    /// rotation's), and a node with another key is refused (`InvalidInput`, naming both key
    /// ids), even before any secret exists.
    ///
    /// After another node rotated the master key, this node (still holding the old key)
    /// refuses to seal anything under the old key and cannot read what the new key sealed:
    /// those calls fail with `Conflict`, saying to restart it with the new key.
    pub fn open_postgres(pg: &nimbus_pg::Pg, key: MasterKey) -> Result<Self> {
        let rows = postgres::PgRows::open(pg, &key)?;
        Ok(Self {
            backend: Backend::Postgres(RwLock::new(postgres::PgInner { rows, key })),
            pg_roles: Some(crate::postgres::roles::PgRoleStore::open(pg)?),
        })
    }

    /// The execution roles' PostgreSQL store, when this store is on PostgreSQL.
    pub(crate) fn pg_roles(&self) -> Option<&crate::postgres::roles::PgRoleStore> {
        self.pg_roles.as_ref()
    }

    /// The SQLite connection, for the execution roles kept in `secrets.db` (`roles.rs`).
    ///
    /// # Panics
    /// On a store opened with [`SecretStore::open_postgres`], whose roles are in
    /// [`SecretStore::pg_roles`] (`roles.rs` asks that first).
    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        match &self.backend {
            Backend::Sqlite(m) => lock(m),
            Backend::Postgres(_) => unreachable!("roles on PostgreSQL go to PgRoleStore"),
        }
    }

    /// `f` with the key in use and the rows; concurrent calls may run side by side on
    /// PostgreSQL, never with a rotation.
    fn shared<T>(&self, f: impl FnOnce(&MasterKey, &dyn Rows) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(m) => {
                let inner = lock(m);
                f(&inner.key, &inner.db)
            }
            Backend::Postgres(l) => {
                let inner = l.read().unwrap_or_else(|e| e.into_inner());
                f(&inner.key, &inner.rows)
            }
        }
    }

    /// `f` alone, able to replace the key.
    fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut MasterKey, &mut dyn Rows) -> Result<T>,
    ) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(m) => {
                let mut inner = lock(m);
                let Inner { db, key } = &mut *inner;
                f(key, db)
            }
            Backend::Postgres(l) => {
                let mut inner = l.write().unwrap_or_else(|e| e.into_inner());
                let postgres::PgInner { rows, key } = &mut *inner;
                f(key, rows)
            }
        }
    }

    /// The id of the key in use.
    pub fn key_id(&self) -> String {
        match &self.backend {
            Backend::Sqlite(m) => lock(m).key.id(),
            Backend::Postgres(l) => l.read().unwrap_or_else(|e| e.into_inner()).key.id(),
        }
    }

    /// Creates or replaces a secret. Returns true when it was created.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<bool> {
        validate_secret_name(name)?;
        if value.len() > MAX_SECRET_VALUE {
            return Err(StoreError::InvalidInput(format!(
                "secret {name} is {} bytes; the limit is {MAX_SECRET_VALUE}",
                value.len()
            )));
        }
        self.shared(|key, rows| {
            let (nonce, ciphertext) = key.seal(name, value);
            let sealed = Sealed {
                key_id: key.id(),
                nonce,
                ciphertext,
            };
            rows.put_secret(name, &sealed, now_ms(time::OffsetDateTime::now_utc()))
        })
    }

    /// The decrypted value, `None` when there is no such secret.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.shared(|key, rows| {
            let Some(sealed) = rows.secret(name)? else {
                return Ok(None);
            };
            let ours = key.id();
            if rows.shared_by_nodes() && sealed.key_id != ours {
                return Err(stale_key(&format!("secret {name}"), &sealed.key_id, &ours));
            }
            key.open(name, &sealed.nonce, &sealed.ciphertext).map(Some)
        })
    }

    /// Names and times, sorted by name.
    pub fn list(&self) -> Result<Vec<SecretInfo>> {
        self.shared(|_, rows| rows.list())
    }

    /// `NotFound` when there is no such secret.
    pub fn delete(&self, name: &str) -> Result<()> {
        if !self.shared(|_, rows| rows.delete_secret(name))? {
            return Err(StoreError::NotFound(format!("secret not found: {name}")));
        }
        Ok(())
    }

    /// Re-encrypts every secret under `new_key` in one transaction (all or nothing), then
    /// uses `new_key` from now on. Returns how many secrets were re-encrypted.
    ///
    /// On PostgreSQL the rotation locks the recorded key id and both tables for its
    /// transaction, so another node's writes wait for it and are then refused (sealed under
    /// the old key); a node that no longer holds the key in use cannot rotate (`Conflict`).
    ///
    /// On PostgreSQL the new key also stays in the database for [`HANDOVER`], sealed under
    /// the old key, so the other nodes (holding the old key) follow the rotation
    /// ([`SecretStore::follow_rotation`]) instead of failing until restarted.
    pub fn rotate(&self, new_key: MasterKey) -> Result<usize> {
        self.rotate_with_handover(new_key, HANDOVER)
    }

    fn rotate_with_handover(
        &self,
        new_key: MasterKey,
        window: std::time::Duration,
    ) -> Result<usize> {
        self.exclusive(|key, rows| {
            let old = &*key;
            let reseal = |aad_name: &str, nonce: &[u8], ct: &[u8]| {
                let value = old.open(aad_name, nonce, ct)?;
                Ok(new_key.seal(aad_name, &value))
            };
            let (nonce, sealed_key) = old.seal(&handover_name(&new_key.id()), &new_key.0);
            let handover = Handover {
                from: old.id(),
                nonce,
                sealed_key,
                until_ms: now_ms(time::OffsetDateTime::now_utc()) + window.as_millis() as i64,
            };
            let n = rows.rotate(&old.id(), &new_key.id(), &reseal, &handover)?;
            *key = new_key;
            Ok(n)
        })
    }

    /// Cluster mode: when another node rotated the master key from the key this node holds
    /// within the last [`HANDOVER`], takes the new key (opened with the old one) and uses it
    /// from now on; returns it, for the caller to replace its key file. `None` when the key
    /// in use is still this node's (or on SQLite), or when the rotation cannot be followed
    /// (too old, or rotated from another key): then reads and writes keep failing with
    /// `Conflict`, saying to restart with the new key. Removes an expired handover.
    pub fn follow_rotation(&self) -> Result<Option<MasterKey>> {
        let Backend::Postgres(l) = &self.backend else {
            return Ok(None);
        };
        let now = now_ms(time::OffsetDateTime::now_utc());
        let (ours, current, handover) = {
            let inner = l.read().unwrap_or_else(|e| e.into_inner());
            let (current, handover) = inner.rows.handover()?;
            if handover.as_ref().is_some_and(|h| h.until_ms <= now) {
                inner.rows.clear_handover(now)?;
            }
            (inner.key.clone(), current, handover)
        };
        if current == ours.id() {
            return Ok(None);
        }
        let Some(h) = handover.filter(|h| h.from == ours.id() && h.until_ms > now) else {
            return Ok(None);
        };
        let bytes = ours.open(&handover_name(&current), &h.nonce, &h.sealed_key)?;
        let new = MasterKey::from_bytes(&bytes)?;
        if new.id() != current {
            return Err(StoreError::Corrupt(format!(
                "the master key handed over is {}, but the key in use is recorded as {current}",
                new.id()
            )));
        }
        let mut inner = l.write().unwrap_or_else(|e| e.into_inner());
        if inner.key.id() != ours.id() {
            // Another caller followed it meanwhile.
            return Ok(None);
        }
        inner.key = new.clone();
        Ok(Some(new))
    }

    /// Removes a rotation's handover once it expired (the node that rotated calls this
    /// after [`HANDOVER`]; [`SecretStore::follow_rotation`] does it too).
    pub fn clear_expired_handover(&self) -> Result<()> {
        if let Backend::Postgres(l) = &self.backend {
            let inner = l.read().unwrap_or_else(|e| e.into_inner());
            inner
                .rows
                .clear_handover(now_ms(time::OffsetDateTime::now_utc()))?;
        }
        Ok(())
    }

    /// Stores an access key: its id, a unique name, its policy (JSON text) and its secret,
    /// sealed under the master key with the id bound as associated data. `Conflict` when
    /// the name or the id is taken.
    pub fn create_access_key(
        &self,
        id: &str,
        name: &str,
        policy: &str,
        secret: &str,
    ) -> Result<AccessKey> {
        validate_secret_name(name).map_err(|_| {
            StoreError::InvalidInput(format!(
                "invalid key name {name:?}: use 1-{MAX_SECRET_NAME} characters of A-Z, a-z, 0-9, \
                 '_', '.' and '-', starting with a letter or digit"
            ))
        })?;
        let now = now_ms(time::OffsetDateTime::now_utc());
        self.shared(|key, rows| {
            let (nonce, ciphertext) = key.seal(&format!("{KEY_AAD_PREFIX}{id}"), secret.as_bytes());
            rows.insert_access_key(&KeyRow {
                id: id.into(),
                name: name.into(),
                policy: policy.into(),
                sealed: Sealed {
                    key_id: key.id(),
                    nonce,
                    ciphertext,
                },
                created_ms: now,
            })
        })?;
        Ok(AccessKey {
            id: id.into(),
            name: name.into(),
            policy: policy.into(),
            secret: secret.into(),
            created_ms: now,
        })
    }

    /// Every access key with its decrypted secret, sorted by name (for the server's
    /// in-memory cache; never for an API response).
    pub fn access_keys(&self) -> Result<Vec<AccessKey>> {
        self.shared(|key, rows| {
            let ours = key.id();
            let mut out = Vec::new();
            for row in rows.access_keys()? {
                let KeyRow {
                    id,
                    name,
                    policy,
                    sealed,
                    created_ms,
                } = row;
                if rows.shared_by_nodes() && sealed.key_id != ours {
                    return Err(stale_key(
                        &format!("access key {id}"),
                        &sealed.key_id,
                        &ours,
                    ));
                }
                let secret = key.open(
                    &format!("{KEY_AAD_PREFIX}{id}"),
                    &sealed.nonce,
                    &sealed.ciphertext,
                )?;
                let secret = String::from_utf8(secret).map_err(|_| {
                    StoreError::Corrupt(format!("access key {id}: secret not UTF-8"))
                })?;
                out.push(AccessKey {
                    id,
                    name,
                    policy,
                    secret,
                    created_ms,
                });
            }
            Ok(out)
        })
    }

    /// Deletes an access key by id; `NotFound` when there is none.
    pub fn delete_access_key(&self, id: &str) -> Result<()> {
        if !self.shared(|_, rows| rows.delete_access_key(id))? {
            return Err(StoreError::NotFound(format!("access key not found: {id}")));
        }
        Ok(())
    }
}

/// The SQLite rows (`secrets.db`): one process owns the file, so the key it holds is always
/// the one every row was sealed with.
impl Rows for Db {
    fn put_secret(&self, name: &str, sealed: &Sealed, now_ms: i64) -> Result<bool> {
        let existed: bool = self.query_row(
            "SELECT EXISTS (SELECT 1 FROM secrets WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        self.execute(
            "INSERT INTO secrets (name, key_id, nonce, ciphertext, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,
                 ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
            params![name, sealed.key_id, sealed.nonce, sealed.ciphertext, now_ms],
        )?;
        Ok(!existed)
    }

    fn secret(&self, name: &str) -> Result<Option<Sealed>> {
        Ok(self
            .query_row(
                "SELECT key_id, nonce, ciphertext FROM secrets WHERE name = ?1",
                [name],
                |r| {
                    Ok(Sealed {
                        key_id: r.get(0)?,
                        nonce: r.get(1)?,
                        ciphertext: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    fn list(&self) -> Result<Vec<SecretInfo>> {
        let mut stmt =
            self.prepare("SELECT name, created_ms, updated_ms FROM secrets ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(SecretInfo {
                name: r.get(0)?,
                created_ms: r.get(1)?,
                updated_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_secret(&self, name: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM secrets WHERE name = ?1", [name])? > 0)
    }

    fn rotate(
        &mut self,
        _old_id: &str,
        new_id: &str,
        reseal: Reseal<'_>,
        _handover: &Handover,
    ) -> Result<usize> {
        // Dropped without commit on any error: rolled back.
        let tx = self.write_tx()?;
        let rows: Vec<(String, Vec<u8>, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT name, nonce, ciphertext FROM secrets")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (name, nonce, ct) in &rows {
            let (nonce, ct) = reseal(name, nonce, ct)?;
            tx.execute(
                "UPDATE secrets SET key_id = ?2, nonce = ?3, ciphertext = ?4 WHERE name = ?1",
                params![name, new_id, nonce, ct],
            )?;
        }
        let keys: Vec<(String, Vec<u8>, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT id, nonce, ciphertext FROM access_keys")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (id, nonce, ct) in &keys {
            let (nonce, ct) = reseal(&format!("{KEY_AAD_PREFIX}{id}"), nonce, ct)?;
            tx.execute(
                "UPDATE access_keys SET key_id = ?2, nonce = ?3, ciphertext = ?4 WHERE id = ?1",
                params![id, new_id, nonce, ct],
            )?;
        }
        tx.commit()?;
        Ok(rows.len())
    }

    fn insert_access_key(&self, key: &KeyRow) -> Result<()> {
        let taken: bool = self.query_row(
            "SELECT EXISTS (SELECT 1 FROM access_keys WHERE name = ?1 OR id = ?2)",
            params![key.name, key.id],
            |r| r.get(0),
        )?;
        if taken {
            return Err(access_key_taken(&key.name));
        }
        self.execute(
            "INSERT INTO access_keys (id, name, policy, key_id, nonce, ciphertext, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.id,
                key.name,
                key.policy,
                key.sealed.key_id,
                key.sealed.nonce,
                key.sealed.ciphertext,
                key.created_ms
            ],
        )?;
        Ok(())
    }

    fn access_keys(&self) -> Result<Vec<KeyRow>> {
        let mut stmt = self.prepare(
            "SELECT id, name, policy, key_id, nonce, ciphertext, created_ms FROM access_keys
             ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(KeyRow {
                id: r.get(0)?,
                name: r.get(1)?,
                policy: r.get(2)?,
                sealed: Sealed {
                    key_id: r.get(3)?,
                    nonce: r.get(4)?,
                    ciphertext: r.get(5)?,
                },
                created_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_access_key(&self, id: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM access_keys WHERE id = ?1", [id])? > 0)
    }
}

/// The `Conflict` of an access key whose name (or id) is taken.
fn access_key_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("an access key named {name} already exists"))
}

/// An access key as stored: the secret is decrypted only in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub name: String,
    /// The policy document, JSON text.
    pub policy: String,
    pub secret: String,
    pub created_ms: i64,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("secret", &"****")
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::{Pg, PgConfig};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(&path, "old and longer contents").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["credentials"], "no temporary file is left behind");
    }

    #[test]
    fn seal_open_round_trip_and_wrong_key_fails() {
        let key = MasterKey::generate();
        let (nonce, ct) = key.seal("db-pass", b"hunter2");
        assert_eq!(key.open("db-pass", &nonce, &ct).unwrap(), b"hunter2");
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        let other = MasterKey::generate();
        assert!(other.open("db-pass", &nonce, &ct).is_err());
    }

    #[test]
    fn name_is_bound_as_aad() {
        let key = MasterKey::generate();
        let (nonce, ct) = key.seal("a", b"value-of-a");
        assert!(key.open("b", &nonce, &ct).is_err());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(key.open("a", &nonce, &bad).is_err());
    }

    /// Where a test's secrets live. Each [`Place::open`] is a store as one more node (or, on
    /// SQLite, the same server restarted) sees it.
    enum Place {
        Sqlite(tempfile::TempDir),
        Postgres(TestDb),
    }

    impl Place {
        fn open(&self, key: MasterKey) -> Result<SecretStore> {
            match self {
                Place::Sqlite(dir) => SecretStore::open(dir.path(), key),
                Place::Postgres(db) => {
                    let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
                    SecretStore::open_postgres(&pg, key)
                }
            }
        }

        /// Runs `sql` written with SQLite's table names (`secrets`, `access_keys`) on the
        /// backend's tables, behind the store's back.
        fn execute(&self, sql: &str) {
            match self {
                Place::Sqlite(dir) => {
                    let c = rusqlite::Connection::open(dir.path().join("secrets.db")).unwrap();
                    c.execute_batch(sql).unwrap();
                }
                Place::Postgres(db) => {
                    let sql = sql
                        .replace("access_keys", "secrets_access_keys")
                        .replace("FROM secrets ", "FROM secrets_secrets ")
                        .replace("UPDATE secrets ", "UPDATE secrets_secrets ");
                    db.pg
                        .with(async |c| Ok(c.batch_execute(&sql).await?))
                        .unwrap();
                }
            }
        }

        /// Every byte the backend holds at rest (SQLite: the files of the data dir, read
        /// after the stores are dropped; PostgreSQL: every value of its tables).
        fn stored_bytes(&self) -> Vec<u8> {
            match self {
                Place::Sqlite(dir) => std::fs::read_dir(dir.path())
                    .unwrap()
                    .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
                    .collect(),
                Place::Postgres(db) => db
                    .pg
                    .with(async |c| {
                        let rows = c
                            .query(
                                "SELECT convert_to(name || key_id, 'UTF8') || nonce || ciphertext
                                 FROM secrets_secrets
                                 UNION ALL SELECT convert_to(id || name || policy || key_id, 'UTF8')
                                     || nonce || ciphertext FROM secrets_access_keys
                                 UNION ALL SELECT convert_to(key_id, 'UTF8') FROM secrets_master",
                                &[],
                            )
                            .await?;
                        Ok(rows.iter().flat_map(|r| r.get::<_, Vec<u8>>(0)).collect())
                    })
                    .unwrap(),
            }
        }
    }

    fn sqlite(body: fn(&Place)) {
        body(&Place::Sqlite(tempfile::tempdir().unwrap()))
    }

    fn postgres(body: fn(&Place)) {
        body(&Place::Postgres(TestDb::new("secrets")))
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
        swapped_ciphertexts_in_the_db_do_not_decrypt,
        store_set_get_list_delete_and_limits,
        rotation_re_encrypts_and_the_old_key_is_refused,
        rotation_is_all_or_nothing,
        access_keys_are_sealed_listed_rotated_and_deleted,
    );

    fn swapped_ciphertexts_in_the_db_do_not_decrypt(place: &Place) {
        let store = place.open(MasterKey::generate()).unwrap();
        store.set("a", b"AAAA").unwrap();
        store.set("b", b"BBBB").unwrap();
        place.execute(
            "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name='b'),
                                nonce = (SELECT nonce FROM secrets WHERE name='b')
             WHERE name = 'a'",
        );
        assert!(store.get("a").is_err());
        assert_eq!(store.get("b").unwrap().unwrap(), b"BBBB");
    }

    fn store_set_get_list_delete_and_limits(place: &Place) {
        let store = place.open(MasterKey::generate()).unwrap();
        assert!(store.set("db-pass", b"s3cr3t-value").unwrap());
        assert!(!store.set("db-pass", b"s3cr3t-value2").unwrap());
        assert_eq!(store.get("db-pass").unwrap().unwrap(), b"s3cr3t-value2");
        assert_eq!(store.get("nope").unwrap(), None);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "db-pass");
        assert!(store.set("bad/name", b"x").unwrap_err().is_invalid_input());
        assert!(store.set("-x", b"x").unwrap_err().is_invalid_input());
        assert!(store
            .set("big", &vec![b'x'; MAX_SECRET_VALUE + 1])
            .unwrap_err()
            .is_invalid_input());
        // Listed sorted bytewise, with their times.
        store.set("b", b"1").unwrap();
        store.set("B", b"1").unwrap();
        store.set("a.x", b"1").unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["B", "a.x", "b", "db-pass"]);
        let info = &store.list().unwrap()[3];
        assert!(info.created_ms > 0 && info.updated_ms >= info.created_ms);
        for name in ["b", "B", "a.x"] {
            store.delete(name).unwrap();
        }
        store.delete("db-pass").unwrap();
        assert!(store.delete("db-pass").unwrap_err().is_not_found());
        store.set("db-pass", b"s3cr3t-value3").unwrap();
        drop(store);
        let bytes = place.stored_bytes();
        assert!(!bytes.windows(12).any(|w| w == b"s3cr3t-value"));
    }

    fn rotation_re_encrypts_and_the_old_key_is_refused(place: &Place) {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let store = place.open(old.clone()).unwrap();
        store.set("one", b"1111").unwrap();
        store.set("two", b"2222").unwrap();
        assert_eq!(store.rotate(new.clone()).unwrap(), 2);
        assert_eq!(store.key_id(), new.id());
        assert_eq!(store.get("one").unwrap().unwrap(), b"1111");
        drop(store);
        let err = place.open(old.clone()).err().unwrap();
        assert!(err.to_string().contains(&old.id()), "{err}");
        let store = place.open(new).unwrap();
        assert_eq!(store.get("two").unwrap().unwrap(), b"2222");
    }

    /// A value that does not open under the key in use stops the rotation before it
    /// changes anything.
    fn rotation_is_all_or_nothing(place: &Place) {
        let old = MasterKey::generate();
        let store = place.open(old.clone()).unwrap();
        store.set("a", b"AAAA").unwrap();
        store.set("b", b"BBBB").unwrap();
        store
            .create_access_key("AKIAAAAAAAAAAAAAAAAA", "ci", "{}", "key-secret")
            .unwrap();
        place.execute(
            "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name='a')
             WHERE name = 'b'",
        );
        let err = store.rotate(MasterKey::generate()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert_eq!(store.key_id(), old.id());
        assert_eq!(store.get("a").unwrap().unwrap(), b"AAAA");
        assert_eq!(store.access_keys().unwrap()[0].secret, "key-secret");
        drop(store);
        let store = place.open(old).unwrap();
        assert_eq!(store.get("a").unwrap().unwrap(), b"AAAA");
    }

    fn access_keys_are_sealed_listed_rotated_and_deleted(place: &Place) {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let store = place.open(old.clone()).unwrap();
        let secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12";
        store
            .create_access_key("AKIAAAAAAAAAAAAAAAAA", "ci", "{\"Statement\":[]}", secret)
            .unwrap();
        let dup = store.create_access_key("AKIABBBBBBBBBBBBBBBB", "ci", "{}", "x");
        let dup = dup.unwrap_err();
        assert!(dup.is_conflict());
        assert_eq!(dup.to_string(), "an access key named ci already exists");
        let dup_id = store.create_access_key("AKIAAAAAAAAAAAAAAAAA", "other", "{}", "x");
        assert!(dup_id.unwrap_err().is_conflict());
        assert!(store
            .create_access_key("AKIACCCCCCCCCCCCCCCC", "bad name", "{}", "x")
            .is_err());
        let keys = store.access_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].secret, secret);
        assert_eq!(keys[0].policy, "{\"Statement\":[]}");
        assert!(!format!("{:?}", keys[0]).contains(secret));
        store
            .create_access_key("AKIADDDDDDDDDDDDDDDD", "aardvark", "{}", "second")
            .unwrap();
        let names: Vec<_> = store
            .access_keys()
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["aardvark", "ci"]);
        // Rotation re-encrypts keys too; the old master key is refused afterwards.
        store.rotate(new.clone()).unwrap();
        drop(store);
        assert!(place.open(old).is_err());
        let store = place.open(new.clone()).unwrap();
        assert_eq!(store.access_keys().unwrap()[1].secret, secret);
        drop(store);
        let bytes = place.stored_bytes();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        let store = place.open(new).unwrap();
        store.delete_access_key("AKIAAAAAAAAAAAAAAAAA").unwrap();
        assert!(store
            .delete_access_key("AKIAAAAAAAAAAAAAAAAA")
            .unwrap_err()
            .is_not_found());
        store.delete_access_key("AKIADDDDDDDDDDDDDDDD").unwrap();
        assert!(store.access_keys().unwrap().is_empty());
    }

    // ---- PostgreSQL: several nodes on one database ----

    /// One more node on `db`: a pool of its own.
    fn node(db: &TestDb, key: &MasterKey) -> Result<SecretStore> {
        let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
        SecretStore::open_postgres(&pg, key.clone())
    }

    #[test]
    fn postgres_refuses_a_node_with_another_master_key() {
        let db = TestDb::new("secrets_key");
        let k1 = MasterKey::generate();
        let k2 = MasterKey::generate();
        let a = node(&db, &k1).unwrap();
        // Refused even before anything is sealed: the first node's key is the cluster's.
        let err = node(&db, &k2).err().unwrap();
        assert!(err.is_invalid_input(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&k1.id()) && msg.contains(&k2.id()), "{msg}");
        assert!(msg.contains("same master key"), "{msg}");
        a.set("x", b"1").unwrap();
        assert!(node(&db, &k2).is_err());
        // A node with the same key joins and reads what the first sealed.
        let b = node(&db, &k1).unwrap();
        assert_eq!(b.get("x").unwrap().unwrap(), b"1");
        // A node started with another key in an emptied store is still refused: only a
        // rotation changes the cluster's key.
        a.delete("x").unwrap();
        assert!(node(&db, &k2).is_err());
        a.rotate(k2.clone()).unwrap();
        assert!(node(&db, &k2).is_ok());
        assert!(node(&db, &k1).is_err());
    }

    #[test]
    fn postgres_two_nodes_creating_one_access_key_name_one_wins() {
        let db = TestDb::new("secrets_race");
        let key = MasterKey::generate();
        let a = Arc::new(node(&db, &key).unwrap());
        let b = Arc::new(node(&db, &key).unwrap());
        for round in 0..20 {
            let barrier = Arc::new(Barrier::new(2));
            let name = format!("ci-{round}");
            let handles: Vec<_> = [(a.clone(), 'A'), (b.clone(), 'B')]
                .into_iter()
                .map(|(store, tag)| {
                    let (barrier, name) = (barrier.clone(), name.clone());
                    std::thread::spawn(move || {
                        let id = format!("AKIA{tag}{round:015}");
                        barrier.wait();
                        store.create_access_key(&id, &name, "{}", "secret")
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: {results:?}");
            let err = results.into_iter().find_map(|r| r.err()).unwrap();
            assert!(err.is_conflict(), "{err}");
            assert_eq!(
                err.to_string(),
                format!("an access key named {name} already exists")
            );
        }
        assert_eq!(a.access_keys().unwrap().len(), 20);
        assert_eq!(b.access_keys().unwrap().len(), 20);
    }

    #[test]
    fn postgres_rotation_on_one_node_then_reads_on_another() {
        let db = TestDb::new("secrets_rotate");
        let k1 = MasterKey::generate();
        let k2 = MasterKey::generate();
        let a = node(&db, &k1).unwrap();
        let b = node(&db, &k1).unwrap();
        a.set("s1", b"one").unwrap();
        b.create_access_key("AKIAAAAAAAAAAAAAAAAA", "ci", "{}", "key-secret")
            .unwrap();
        assert_eq!(a.rotate(k2.clone()).unwrap(), 1);
        // B still holds the old key: it can neither read what the new key sealed, nor
        // seal anything under the old key, nor rotate.
        let err = b.get("s1").unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(err.to_string().contains(&k2.id()), "{err}");
        assert!(err.to_string().contains("restart"), "{err}");
        let err = b.set("s2", b"two").unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(err.to_string().contains("restart"), "{err}");
        assert_eq!(
            a.get("s2").unwrap(),
            None,
            "nothing sealed under the old key"
        );
        let err = b
            .create_access_key("AKIABBBBBBBBBBBBBBBB", "other", "{}", "x")
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(b.access_keys().unwrap_err().is_conflict());
        assert!(b.rotate(MasterKey::generate()).unwrap_err().is_conflict());
        assert_eq!(a.key_id(), k2.id());
        // Restarted with the new key, B reads everything; with the old one it is refused.
        assert!(node(&db, &k1).is_err());
        let b = node(&db, &k2).unwrap();
        assert_eq!(b.get("s1").unwrap().unwrap(), b"one");
        assert_eq!(b.access_keys().unwrap()[0].secret, "key-secret");
        b.set("s2", b"two").unwrap();
        assert_eq!(a.get("s2").unwrap().unwrap(), b"two");
    }

    #[test]
    fn postgres_a_running_node_follows_a_rotation_within_the_handover() {
        let db = TestDb::new("secrets_follow");
        let (k1, k2, k3) = (
            MasterKey::generate(),
            MasterKey::generate(),
            MasterKey::generate(),
        );
        let a = node(&db, &k1).unwrap();
        let b = node(&db, &k1).unwrap();
        let c = node(&db, &k1).unwrap();
        a.set("s1", b"one").unwrap();
        b.create_access_key("AKIAAAAAAAAAAAAAAAAA", "ci", "{}", "key-secret")
            .unwrap();
        assert!(
            b.follow_rotation().unwrap().is_none(),
            "nothing rotated yet"
        );
        a.rotate(k2.clone()).unwrap();
        // B follows: it takes the new key and reads and writes with it.
        let followed = b.follow_rotation().unwrap().expect("follows the rotation");
        assert_eq!(followed.id(), k2.id());
        assert_eq!(b.key_id(), k2.id());
        assert_eq!(b.get("s1").unwrap().unwrap(), b"one");
        assert_eq!(b.access_keys().unwrap()[0].secret, "key-secret");
        b.set("s2", b"two").unwrap();
        assert_eq!(a.get("s2").unwrap().unwrap(), b"two");
        assert!(b.follow_rotation().unwrap().is_none(), "followed once");
        // A second rotation (k2 → k3) with a window already over: C, still on k1, cannot
        // follow (the handover is from k2, and expired); B cannot either (expired), and
        // the expired handover is removed.
        a.rotate_with_handover(k3.clone(), std::time::Duration::ZERO)
            .unwrap();
        assert!(c.follow_rotation().unwrap().is_none());
        assert!(c.get("s1").unwrap_err().is_conflict());
        assert!(b.follow_rotation().unwrap().is_none());
        assert!(b.get("s1").unwrap_err().is_conflict());
        let (current, kept) = match &a.backend {
            Backend::Postgres(l) => l.read().unwrap().rows.handover().unwrap(),
            Backend::Sqlite(_) => unreachable!(),
        };
        assert_eq!(current, k3.id());
        assert!(kept.is_none(), "an expired handover is removed");
        // Nothing in the database opens with the old keys alone any more.
        assert!(node(&db, &k1).is_err() && node(&db, &k2).is_err());
        assert_eq!(node(&db, &k3).unwrap().get("s2").unwrap().unwrap(), b"two");
    }

    /// A write in flight on another node (holding its share of the key row) makes the
    /// rotation wait; once it commits, the rotation re-seals what it wrote.
    #[test]
    fn postgres_rotation_waits_for_a_write_in_flight_and_re_seals_it() {
        let db = TestDb::new("secrets_inflight");
        let k1 = MasterKey::generate();
        let k2 = MasterKey::generate();
        let a = node(&db, &k1).unwrap();
        a.set("before", b"0").unwrap();
        let writer = Pg::connect(&PgConfig::new(&db.url)).unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (nonce, ct) = k1.seal("late", b"late-value");
        let k1_id = k1.id();
        let writer_thread = std::thread::spawn(move || {
            writer
                .transaction(async |tx| {
                    tx.query_one("SELECT key_id FROM secrets_master FOR SHARE", &[])
                        .await?;
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    tx.execute(
                        "INSERT INTO secrets_secrets VALUES ('late', $1, $2, $3, 1, 1)",
                        &[&k1_id, &nonce, &ct],
                    )
                    .await?;
                    Ok(())
                })
                .unwrap()
        });
        held_rx.recv().unwrap();
        let a = Arc::new(a);
        let rotating = {
            let (a, k2) = (a.clone(), k2.clone());
            std::thread::spawn(move || a.rotate(k2))
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!rotating.is_finished(), "the rotation waits for the write");
        go_tx.send(()).unwrap();
        writer_thread.join().unwrap();
        assert_eq!(rotating.join().unwrap().unwrap(), 2);
        let c = node(&db, &k2).unwrap();
        assert_eq!(c.get("late").unwrap().unwrap(), b"late-value");
        assert_eq!(c.get("before").unwrap().unwrap(), b"0");
    }

    /// Another node writing in a loop while one node rotates: every write either lands
    /// before the rotation (and is re-sealed) or is refused; none stays under the old key.
    #[test]
    fn postgres_writes_racing_a_rotation_are_re_sealed_or_refused() {
        let db = TestDb::new("secrets_racing");
        let k1 = MasterKey::generate();
        let k2 = MasterKey::generate();
        let a = node(&db, &k1).unwrap();
        let b = node(&db, &k1).unwrap();
        let written = Arc::new(AtomicUsize::new(0));
        let writer = {
            let written = written.clone();
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                let mut ok = Vec::new();
                while std::time::Instant::now() < deadline {
                    let name = format!("w{}", ok.len());
                    match b.set(&name, name.as_bytes()) {
                        Ok(_) => {
                            ok.push(name);
                            written.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => return (ok, Some(e)),
                    }
                }
                (ok, None)
            })
        };
        while written.load(Ordering::SeqCst) < 20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        a.rotate(k2.clone()).unwrap();
        let (ok, err) = writer.join().unwrap();
        let err = err.expect("the writer is refused after the rotation");
        assert!(err.is_conflict(), "{err}");
        let c = node(&db, &k2).unwrap();
        for name in &ok {
            assert_eq!(c.get(name).unwrap().unwrap(), name.as_bytes());
        }
        assert_eq!(c.list().unwrap().len(), ok.len());
        let old_rows: i64 = db
            .pg
            .with(async |c| {
                Ok(c.query_one(
                    "SELECT count(*) FROM secrets_secrets WHERE key_id <> $1",
                    &[&k2.id()],
                )
                .await?
                .get(0))
            })
            .unwrap();
        assert_eq!(old_rows, 0);
    }

    /// On PostgreSQL the secrets store answers role calls from the roles' own tables.
    #[test]
    fn postgres_store_keeps_roles_in_their_store() {
        use crate::RoleStore;
        let db = TestDb::new("secrets_roles");
        let store = node(&db, &MasterKey::generate()).unwrap();
        let role = crate::Role {
            name: "reader".into(),
            path: "/".into(),
            id: "AROAEXAMPLE".into(),
            trust_policy: "{}".into(),
            description: None,
            max_session_s: 3600,
            tags: Vec::new(),
            created_ms: 1,
        };
        store.create_role(&role).unwrap();
        let other = crate::postgres::roles::PgRoleStore::open(&db.pg).unwrap();
        assert_eq!(
            other.role("READER").unwrap().map(|r| r.name),
            Some("reader".into())
        );
        assert!(store.create_role(&role).unwrap_err().is_conflict());
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (key, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key.id(), again.id());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = MasterKey::read_file(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert_eq!(
            MasterKey::from_base64(&key.to_base64()).unwrap().id(),
            key.id()
        );
    }
}
