//! Garbage collection of code packages ([`nimbus_store::CodeStore::collect`]): once at start
//! and after every change that can leave a package unreferenced (a function or a version
//! deleted, `$LATEST`'s code replaced, a deploy that failed after storing its package).
//!
//! Collections run one at a time on a background task, on a blocking thread, never on the
//! request path; requests asked for while one runs are merged into the next. A package a
//! deleted function's instance still runs from is kept (the pool's code directories in use)
//! and collected by a retry once the instance has stopped.

use crate::{ApiError, Gateway};
use nimbus_store::{CollectReport, LiveCode};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// First wait before collecting again while a package is kept only for a running instance;
/// doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Gateway {
    /// Asks for a collection soon; returns at once. Needs a Tokio runtime.
    pub(crate) fn collect_code_soon(self: &Arc<Self>) {
        let tx = self.code_gc.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(run(Arc::downgrade(self), rx));
            tx
        });
        // Full: a collection is already asked for, and it reads the references when it runs.
        let _ = tx.try_send(());
    }

    /// Collects now (on a blocking thread): removes the packages that no function's
    /// `$LATEST` or version, no running instance and no deploy in flight needs.
    pub async fn collect_code(&self) -> Result<CollectReport, ApiError> {
        let (store, code, pools) = (self.store.clone(), self.code.clone(), self.pools.clone());
        let report = tokio::task::spawn_blocking(move || {
            code.collect(|| {
                Ok(LiveCode {
                    referenced: store.code_references()?,
                    running: pools
                        .code_dirs_in_use()
                        .iter()
                        .filter_map(|d| code.package_of(d))
                        .collect(),
                })
            })
        })
        .await??;
        Ok(report)
    }

    /// The collection at server start (packages left by deletes before a crash, or by a
    /// deploy killed between storing its package and committing it), with a summary at info.
    pub async fn collect_code_at_start(self: &Arc<Self>) {
        match self.collect_code().await {
            Ok(r) => {
                info!(
                    removed_blobs = r.removed_blobs,
                    removed_trees = r.removed_trees,
                    removed_bytes = r.removed_bytes,
                    kept = r.kept,
                    "code store: unreferenced packages collected"
                );
                if r.kept_unreferenced() {
                    self.collect_code_soon();
                }
            }
            Err(e) => {
                warn!(error = %e, "code store: garbage collection at start failed; unreferenced packages stay on disk until the next delete")
            }
        }
    }
}

/// The background collector: runs a collection per request (merged while one runs), and
/// again with a growing delay while a package is kept only for a running instance.
async fn run(gw: Weak<Gateway>, mut rx: mpsc::Receiver<()>) {
    let mut retry: Option<Duration> = None;
    loop {
        let closed = match retry {
            None => rx.recv().await.is_none(),
            Some(d) => matches!(tokio::time::timeout(d, rx.recv()).await, Ok(None)),
        };
        let Some(gw) = gw.upgrade().filter(|_| !closed) else {
            return;
        };
        retry = match gw.collect_code().await {
            Ok(r) => {
                debug!(
                    removed_blobs = r.removed_blobs,
                    removed_trees = r.removed_trees,
                    removed_bytes = r.removed_bytes,
                    kept = r.kept,
                    held_by_instances = r.held_by_instances,
                    pinned = r.pinned,
                    "code store collected"
                );
                r.kept_unreferenced()
                    .then(|| retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX)))
            }
            Err(e) => {
                warn!(error = %e, "code store: garbage collection failed; retrying later");
                Some(RETRY_MAX)
            }
        };
    }
}
