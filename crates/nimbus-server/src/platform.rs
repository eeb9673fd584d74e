//! What instances get from the server (`nimbus_runtime::PlatformAccess`): temporary
//! credentials of their function's execution role, minted and revoked by the gateway's
//! [`Auth`], and their private AWS endpoints, served with the main listener's router
//! (marked [`PrivateEndpoint`], so authentication is enforced and only the instance's own
//! credentials are accepted) and, with `--s3-listen`, an S3 router that knows only the
//! instance's key.

use crate::conn::{self, ConnLimits};
use nimbus_gateway::{Auth, PrivateEndpoint};
use nimbus_objects::Objects;
use nimbus_runtime::{AwsEndpoint, InstanceCredentials, PlatformAccess};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// The server's side of instances' platform access. The routers are set once the
/// gateway and the S3 listener exist (before anything is served).
pub(crate) struct Link {
    auth: Arc<Auth>,
    /// `(function, role)` pairs already warned about (a role that does not exist).
    warned: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    limits: ConnLimits,
    main: OnceLock<axum::Router>,
    objects: OnceLock<Objects>,
}

impl Link {
    pub(crate) fn new(auth: Arc<Auth>, limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            auth,
            warned: Default::default(),
            limits,
            main: OnceLock::new(),
            objects: OnceLock::new(),
        })
    }

    pub(crate) fn set_main(&self, router: axum::Router) {
        let _ = self.main.set(router);
    }

    pub(crate) fn set_objects(&self, objects: Objects) {
        let _ = self.objects.set(objects);
    }
}

/// The S3 router's view of the keys on a private endpoint: the instance's key only.
struct InstanceKey {
    auth: Arc<Auth>,
    id: String,
}

impl nimbus_s3::KeyLookup for InstanceKey {
    fn lookup(&self, access_key_id: &str) -> Option<(String, nimbus_auth::Policy)> {
        (access_key_id == self.id)
            .then(|| self.auth.signing_key(access_key_id))
            .flatten()
    }

    fn check_token(&self, access_key_id: &str, token: Option<&str>) -> nimbus_s3::TokenCheck {
        crate::s3::token_check(&self.auth, access_key_id, token)
    }
}

impl PlatformAccess for Link {
    fn credentials(
        &self,
        function: &str,
        role_arn: &str,
    ) -> Result<Option<InstanceCredentials>, String> {
        let creds = self
            .auth
            .assume_role(role_arn, function)
            .map_err(|e| e.to_string())?;
        if creds.is_none() {
            let first = self
                .warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((function.to_string(), role_arn.to_string()));
            if first && nimbus_gateway::role_name_of(role_arn).is_some() {
                tracing::warn!(
                    function,
                    role = role_arn,
                    "the function's Role names a role that does not exist: its instances get no AWS credentials (create it with the IAM API or a [roles.NAME] manifest table)"
                );
            } else if first {
                tracing::info!(
                    function,
                    role = role_arn,
                    "the function's Role is not a role of this server (account 000000000000): its instances get no AWS credentials"
                );
            }
        }
        Ok(creds.map(|c| InstanceCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
            valid_for: c.duration,
        }))
    }

    fn revoke(&self, access_key_id: &str) {
        self.auth.revoke(access_key_id);
    }

    fn has_s3(&self) -> bool {
        self.objects.get().is_some()
    }

    fn serve(
        &self,
        endpoint: AwsEndpoint,
        listener: tokio::net::TcpListener,
        access_key_id: &str,
        stop: oneshot::Receiver<()>,
    ) {
        let router = match endpoint {
            AwsEndpoint::Main => self.main.get().map(|r| {
                r.clone().layer(axum::Extension(PrivateEndpoint {
                    access_key_id: access_key_id.to_string(),
                }))
            }),
            AwsEndpoint::S3 => self.objects.get().map(|o| {
                nimbus_s3::router(
                    o.clone(),
                    Some(Arc::new(InstanceKey {
                        auth: self.auth.clone(),
                        id: access_key_id.to_string(),
                    })),
                )
            }),
        };
        let Some(router) = router else {
            tracing::warn!(
                ?endpoint,
                "an instance's private AWS endpoint has no router yet: not served"
            );
            return;
        };
        let limits = self.limits.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.await;
            };
            if let Err(e) = conn::serve(listener, None, router, limits, stopped).await {
                tracing::warn!(error = %e, "an instance's private AWS endpoint failed");
            }
        });
    }
}
