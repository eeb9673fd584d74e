//! Access keys at start: load them (sealed in `secrets.db`), and on the first start with
//! auth on and no key, create the bootstrap admin key and write it to `DATA_DIR/credentials`
//! (mode 0600, the AWS shared-credentials format) for the local CLI.

use crate::BootstrapKey;
use anyhow::Context;
use nimbus_gateway::Auth;
use nimbus_store::SecretStore;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// Name of the bootstrap key.
const BOOTSTRAP_NAME: &str = "admin";

pub(crate) fn open(
    data_dir: &Path,
    store: Arc<SecretStore>,
    enabled: bool,
) -> anyhow::Result<(Arc<Auth>, Option<BootstrapKey>)> {
    let auth = Auth::open(store, enabled).context("cannot load the access keys")?;
    info!(keys = auth.len(), enabled, "access keys loaded");
    if !enabled || !auth.is_empty() {
        return Ok((auth, None));
    }
    let key = match auth.create_key(BOOTSTRAP_NAME, &nimbus_auth::Policy::admin()) {
        Ok(key) => key,
        // Another node of the cluster, starting at the same moment on the same empty
        // database, made it first: take its keys, as a node starting later would.
        Err(e) if e.is_conflict() => {
            auth.reload().context("cannot load the access keys")?;
            info!(
                keys = auth.len(),
                "another node made the bootstrap admin key; its data dir holds the credentials"
            );
            return Ok((auth, None));
        }
        Err(e) => return Err(e).context("cannot create the bootstrap admin key"),
    };
    let file = data_dir.join("credentials");
    write_credentials(&file, &key.id, &key.secret)
        .with_context(|| format!("cannot write {}", file.display()))?;
    info!(access_key = %key.id, file = %file.display(), "bootstrap admin key written");
    Ok((
        auth,
        Some(BootstrapKey {
            access_key_id: key.id,
            secret_access_key: key.secret,
            file,
        }),
    ))
}

/// Writes an AWS shared-credentials file (`[default]`, `aws_access_key_id`,
/// `aws_secret_access_key`) with mode 0600, replacing any file there atomically.
pub(crate) fn write_credentials(path: &Path, id: &str, secret: &str) -> std::io::Result<()> {
    nimbus_store::write_private_file(
        path,
        format!(
            "# The bootstrap admin key of this nimbus data dir. Keep it private (mode 0600).\n\
             [default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
        )
        .as_bytes(),
    )
}
