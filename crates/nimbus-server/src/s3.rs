//! The S3 listener (`--s3-listen`): the object store (`nimbus-objects`, in
//! `DATA_DIR/objects.db` and `DATA_DIR/objects/`) served by `nimbus-s3` through the same
//! accept loop and connection limits as the public listener, plus the hourly expiry of
//! abandoned multipart uploads and sweep of the buckets' lifecycle rules, and the delivery
//! of bucket notifications
//! ([`crate::notifications`]).

use crate::conn::{self, ConnLimits};
use anyhow::Context;
use nimbus_events::bus::EventBus;
use nimbus_gateway::Auth;
use nimbus_objects::{Objects, ObjectsConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// How often abandoned multipart uploads and lifecycle rules are looked at (S3 evaluates
/// lifecycle rules about once a day; expiry dates are midnights UTC).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The S3 listener, bound, not yet serving.
pub(crate) struct S3Listener {
    listener: TcpListener,
    addr: SocketAddr,
    objects: Objects,
    router: axum::Router,
}

/// Access keys as `nimbus-s3` looks them up.
struct Keys(Arc<Auth>);

impl nimbus_s3::KeyLookup for Keys {
    fn lookup(&self, access_key_id: &str) -> Option<(String, nimbus_auth::Policy)> {
        self.0.signing_key(access_key_id)
    }

    fn check_token(&self, access_key_id: &str, token: Option<&str>) -> nimbus_s3::TokenCheck {
        token_check(&self.0, access_key_id, token)
    }
}

/// Session credentials' token check, in `nimbus-s3`'s terms.
pub(crate) fn token_check(
    auth: &Auth,
    access_key_id: &str,
    token: Option<&str>,
) -> nimbus_s3::TokenCheck {
    use nimbus_gateway::TokenError;
    match auth.check_token(access_key_id, token) {
        Ok(()) => nimbus_s3::TokenCheck::Valid,
        Err(TokenError::Missing) => nimbus_s3::TokenCheck::Missing,
        Err(TokenError::Invalid) => nimbus_s3::TokenCheck::Invalid,
        Err(TokenError::Expired) => nimbus_s3::TokenCheck::Expired,
    }
}

/// Opens the object store and binds `addr`. `auth` is `None` with `--auth off` (then only
/// a loopback address is accepted, as for `--listen`); `targets` checks the functions and
/// queues a notification configuration names.
pub(crate) fn bind(
    addr: SocketAddr,
    data_dir: &Path,
    quota: nimbus_objects::Quota,
    auth: Option<Arc<Auth>>,
    targets: crate::notifications::Targets,
    backend: &crate::stores::Backend,
) -> anyhow::Result<S3Listener> {
    if auth.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "--auth off is for local development only: refusing to serve S3 on {addr} \
             (not a loopback address) without authentication"
        );
    }
    let config = ObjectsConfig {
        quota,
        ..ObjectsConfig::default()
    };
    let objects = backend
        .objects(data_dir, config)?
        .with_destinations(Arc::new(targets));
    let listener =
        conn::bind(addr).with_context(|| format!("cannot listen on {addr} (--s3-listen)"))?;
    let addr = listener.local_addr()?;
    let keys = auth.map(|a| Arc::new(Keys(a)) as Arc<dyn nimbus_s3::KeyLookup>);
    let router = nimbus_s3::router(objects.clone(), keys);
    info!(%addr, "S3 listener: path-style and BUCKET.localhost virtual hosts");
    Ok(S3Listener {
        listener,
        addr,
        objects,
        router,
    })
}

impl S3Listener {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The object store (instances' private S3 endpoints and the native `/v1/buckets` API
    /// serve it too).
    pub(crate) fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish. The second
    /// task (abort it at shutdown) expires abandoned uploads and delivers the buckets'
    /// notifications through `bus`.
    pub(crate) fn spawn(
        self,
        limits: ConnLimits,
        bus: Arc<EventBus>,
        metrics: Arc<nimbus_metrics::Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (
        tokio::task::JoinHandle<std::io::Result<()>>,
        tokio::task::JoinHandle<()>,
    ) {
        let objects = self.objects;
        let background = tokio::spawn(async move {
            tokio::join!(
                expire_uploads(objects.clone()),
                crate::notifications::deliver(objects, bus, metrics)
            );
        });
        let serve = tokio::spawn(conn::serve(
            self.listener,
            None,
            self.router,
            limits,
            shutdown,
        ));
        (serve, background)
    }
}

/// Hourly (the first time at start): aborts abandoned multipart uploads, applies the
/// buckets' lifecycle rules and, in cluster mode, deletes object bytes no row names from the
/// shared blob store once idle past its grace period.
async fn expire_uploads(objects: Objects) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tick.tick().await;
        match objects.expire_uploads(crate::unix_ms()).await {
            Ok(0) => {}
            Ok(n) => info!(aborted = n, "aborted abandoned multipart uploads"),
            Err(e) => warn!(error = %e, "cannot expire abandoned multipart uploads"),
        }
        match objects.apply_lifecycle(crate::unix_ms()).await {
            Ok(c) if c.expired == 0 && c.aborted == 0 => {}
            Ok(c) => info!(
                expired = c.expired,
                aborted = c.aborted,
                "applied bucket lifecycle rules"
            ),
            Err(e) => warn!(error = %e, "cannot apply bucket lifecycle rules"),
        }
        match objects.sweep_shared_blobs().await {
            Ok(s) if s.deleted == 0 && s.abandoned_uploads == 0 => {}
            Ok(s) => info!(
                deleted = s.deleted,
                bytes = s.deleted_bytes,
                abandoned_uploads = s.abandoned_uploads,
                "removed unreferenced object bytes from the shared blob store"
            ),
            Err(e) => warn!(error = %e, "cannot sweep the shared blob store"),
        }
    }
}
