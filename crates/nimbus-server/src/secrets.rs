//! The secrets store's master key and the executor's view of the store.
//!
//! The key is `NIMBUS_MASTER_KEY` (base64 of 32 bytes) when set, else the key file
//! (`--master-key-file` / `NIMBUS_MASTER_KEY_FILE`, default `DATA_DIR/master.key`), generated with the OS RNG
//! (mode 0600) on first start. A key file readable by group or others is refused.

use anyhow::Context;
use nimbus_runtime::SecretSource;
use nimbus_store::{MasterKey, SecretStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

/// Opens the secrets store (`DATA_DIR/secrets.db`, or the database's with `--database`)
/// with the master key. The second value is the key file the key came from (`None` for
/// `NIMBUS_MASTER_KEY`); the third the key the nodes of a cluster sign their internal
/// requests with, derived from the master key they share.
pub(crate) fn open(
    data_dir: &Path,
    key_file: Option<&Path>,
    backend: &crate::stores::Backend,
) -> anyhow::Result<(Arc<SecretStore>, Option<PathBuf>, nimbus_cluster::NodeKey)> {
    let (key, file) = match std::env::var("NIMBUS_MASTER_KEY") {
        Ok(text) if !text.trim().is_empty() => (
            MasterKey::from_base64(&text).context("NIMBUS_MASTER_KEY")?,
            None,
        ),
        _ => {
            let path = key_file
                .map(Path::to_path_buf)
                .or_else(|| std::env::var_os("NIMBUS_MASTER_KEY_FILE").map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| data_dir.join("master.key"));
            let (key, created) = MasterKey::load_or_create(&path)
                .with_context(|| format!("cannot load the master key {}", path.display()))?;
            if created {
                info!(
                    "generated a new master key for secrets in {} (mode 0600): back it up; without it the secrets cannot be read",
                    path.display()
                );
                if path.starts_with(data_dir) {
                    warn!("the master key lives in the data dir: keep backups of the data dir and the key apart, or set NIMBUS_MASTER_KEY_FILE / NIMBUS_MASTER_KEY");
                }
            }
            (key, Some(path))
        }
    };
    let id = key.id();
    let node_key = nimbus_cluster::NodeKey::derive(key.to_base64().as_bytes());
    let store = match backend {
        crate::stores::Backend::Sqlite => {
            SecretStore::open(data_dir, key).context("cannot open the secrets store")?
        }
        crate::stores::Backend::Postgres(pg) => SecretStore::open_postgres(pg, key)
            .context("cannot open the secrets store in PostgreSQL")?,
    };
    info!(key_id = %id, "secrets store ready");
    Ok((Arc::new(store), file, node_key))
}

/// Cluster mode: when another node rotates the master key, this node takes the new key
/// from the rotation's handover ([`SecretStore::follow_rotation`]), replaces its key file
/// (or says to update `NIMBUS_MASTER_KEY`), and reloads the access keys sealed under it.
pub(crate) fn follow_rotations(
    changes: &nimbus_cluster::Changes,
    store: Arc<SecretStore>,
    key_file: Option<PathBuf>,
    gateway: Arc<nimbus_gateway::Gateway>,
) {
    changes.on("secrets", move || match store.follow_rotation() {
        Ok(None) => {}
        Ok(Some(key)) => {
            let id = key.id();
            match &key_file {
                Some(path) => match nimbus_store::write_private_file(
                    path,
                    format!("{}\n", key.to_base64()).as_bytes(),
                ) {
                    Ok(()) => info!(key_id = %id, key_file = %path.display(), "followed the master key rotation made on another node: key file replaced"),
                    Err(e) => warn!(key_id = %id, key_file = %path.display(), error = %e, "followed the master key rotation made on another node, but cannot replace the key file: put the new key there before this node restarts"),
                },
                None => warn!(key_id = %id, "followed the master key rotation made on another node: set NIMBUS_MASTER_KEY to the new key before this node restarts"),
            }
            gateway.master_key_changed(&key);
            gateway.cluster_changed("keys");
        }
        Err(e) => warn!(error = %e, "cannot follow the master key rotation made on another node: restart this node with the new key"),
    });
}

/// The executor reads secret values through this.
pub(crate) struct Source(pub Arc<SecretStore>);

impl SecretSource for Source {
    fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(name).map_err(|e| e.to_string())
    }
}
