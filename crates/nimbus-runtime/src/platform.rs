//! An instance's way to the platform's own AWS APIs: temporary credentials for its
//! function's execution role, and a private AWS endpoint in its network namespace.
//!
//! When an instance of a function whose `Role` names an existing role starts (a cold
//! start, a stem cell's specialisation, a provisioned instance), the executor asks the
//! server's [`PlatformAccess`] for credentials, binds `127.0.0.1:9002` (the main API:
//! Lambda, SQS, EventBridge, IAM) and, when the S3 listener is on, `127.0.0.1:9003` (S3)
//! inside the instance's namespace, and hands the sockets to the server to serve with its
//! routers (only the instance's own credentials are accepted there). The instance gets
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`
//! and `AWS_ENDPOINT_URL_S3`. A [`PlatformLease`] owned by the instance revokes the
//! credentials and closes the endpoints when the instance is gone, however it ends.
//! Without network namespaces the endpoints are random host loopback ports.
//!
//! The runtime does not know the gateway: the server implements [`PlatformAccess`].

use crate::netns::NetNs;
use crate::RuntimeError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The main AWS API's address inside an instance's namespace.
pub const AWS_API_ADDR: &str = "127.0.0.1:9002";
/// The S3 API's address inside an instance's namespace.
pub const S3_API_ADDR: &str = "127.0.0.1:9003";

/// Temporary credentials minted for one instance. `Debug` never shows the secrets.
pub struct InstanceCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// How long they are valid from now.
    pub valid_for: Duration,
}

impl std::fmt::Debug for InstanceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InstanceCredentials({}, {:?})",
            self.access_key_id, self.valid_for
        )
    }
}

/// Which of the server's APIs a private endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsEndpoint {
    /// The main listener's router: Lambda, SQS, EventBridge, IAM.
    Main,
    /// The S3 router.
    S3,
}

/// What the server gives instances (implemented by `nimbus-server`).
pub trait PlatformAccess: Send + Sync + 'static {
    /// Credentials for an instance of `function` whose execution role is `role_arn`;
    /// `Ok(None)` when the ARN names no existing role.
    fn credentials(
        &self,
        function: &str,
        role_arn: &str,
    ) -> Result<Option<InstanceCredentials>, String>;
    /// Revokes credentials made by [`PlatformAccess::credentials`] (the instance stopped).
    fn revoke(&self, access_key_id: &str);
    /// Whether the S3 API is served (`--s3-listen`).
    fn has_s3(&self) -> bool;
    /// Serves `listener` with `endpoint`'s router until `stop` resolves (or is dropped),
    /// accepting only requests signed with `access_key_id` and its session token. Spawns
    /// and returns at once.
    fn serve(
        &self,
        endpoint: AwsEndpoint,
        listener: tokio::net::TcpListener,
        access_key_id: &str,
        stop: oneshot::Receiver<()>,
    );
}

/// An instance's credentials and endpoints: dropping it revokes the credentials and
/// stops serving the endpoints.
pub(crate) struct PlatformLease {
    platform: Arc<dyn PlatformAccess>,
    access_key_id: String,
    expires_at: Instant,
    /// Dropping them ends the endpoints' accept loops.
    _stops: Vec<oneshot::Sender<()>>,
    /// The variables the instance gets.
    pub(crate) env: Vec<(String, String)>,
    /// What its output must never show (the secret and the token).
    pub(crate) mask: Vec<String>,
}

impl PlatformLease {
    /// Whether the credentials stay valid for at least `d` more.
    pub(crate) fn valid_for(&self, d: Duration) -> bool {
        Instant::now() + d < self.expires_at
    }
}

impl Drop for PlatformLease {
    fn drop(&mut self) {
        self.platform.revoke(&self.access_key_id);
    }
}

/// Credentials and endpoints for an instance of `function` with role `role_arn`, in
/// namespace `ns` (`None`: host loopback ports). `Ok(None)` when the role does not exist.
pub(crate) async fn lease(
    platform: &Arc<dyn PlatformAccess>,
    function: &str,
    role_arn: &str,
    ns: Option<&NetNs>,
) -> Result<Option<PlatformLease>, RuntimeError> {
    let creds = platform.credentials(function, role_arn).map_err(|e| {
        RuntimeError::Secret(format!("cannot mint credentials for role {role_arn}: {e}"))
    })?;
    let Some(creds) = creds else {
        tracing::debug!(
            function,
            role = role_arn,
            "the role does not exist: no credentials"
        );
        return Ok(None);
    };
    // From here on the lease owns the credentials: an error below revokes them.
    let mut lease = PlatformLease {
        platform: platform.clone(),
        access_key_id: creds.access_key_id.clone(),
        expires_at: Instant::now() + creds.valid_for,
        _stops: Vec::new(),
        env: Vec::new(),
        mask: vec![creds.secret_access_key.clone(), creds.session_token.clone()],
    };
    let mut endpoints = vec![(AwsEndpoint::Main, AWS_API_ADDR, "AWS_ENDPOINT_URL")];
    if platform.has_s3() {
        endpoints.push((AwsEndpoint::S3, S3_API_ADDR, "AWS_ENDPOINT_URL_S3"));
    }
    for (endpoint, addr, var) in endpoints {
        let listener = match ns {
            Some(ns) => tokio::net::TcpListener::from_std(ns.bind(addr).await?)?,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let local = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        platform.serve(endpoint, listener, &creds.access_key_id, rx);
        lease._stops.push(tx);
        lease.env.push((var.into(), format!("http://{local}")));
    }
    lease.env.extend([
        ("AWS_ACCESS_KEY_ID".to_string(), creds.access_key_id),
        ("AWS_SECRET_ACCESS_KEY".to_string(), creds.secret_access_key),
        ("AWS_SESSION_TOKEN".to_string(), creds.session_token),
    ]);
    Ok(Some(lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        revoked: Mutex<Vec<String>>,
        served: Mutex<Vec<AwsEndpoint>>,
    }

    impl PlatformAccess for Fake {
        fn credentials(
            &self,
            _function: &str,
            role_arn: &str,
        ) -> Result<Option<InstanceCredentials>, String> {
            Ok(role_arn.ends_with("/r").then(|| InstanceCredentials {
                access_key_id: "ASIAEXAMPLE".into(),
                secret_access_key: "s3cr3t".into(),
                session_token: "t0ken".into(),
                valid_for: Duration::from_secs(3600),
            }))
        }
        fn revoke(&self, id: &str) {
            self.revoked.lock().unwrap().push(id.into());
        }
        fn has_s3(&self) -> bool {
            true
        }
        fn serve(
            &self,
            endpoint: AwsEndpoint,
            _l: tokio::net::TcpListener,
            _id: &str,
            _stop: oneshot::Receiver<()>,
        ) {
            self.served.lock().unwrap().push(endpoint);
        }
    }

    #[tokio::test]
    async fn a_lease_revokes_when_dropped() {
        let fake = Arc::new(Fake::default());
        let p: Arc<dyn PlatformAccess> = fake.clone();
        assert!(lease(&p, "f", "arn:aws:iam::000000000000:role/none", None)
            .await
            .unwrap()
            .is_none());
        let l = lease(&p, "f", "arn:aws:iam::000000000000:role/r", None)
            .await
            .unwrap()
            .unwrap();
        let var = |k: &str| l.env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(var("AWS_ACCESS_KEY_ID").as_deref(), Some("ASIAEXAMPLE"));
        assert_eq!(var("AWS_SESSION_TOKEN").as_deref(), Some("t0ken"));
        assert!(var("AWS_ENDPOINT_URL")
            .unwrap()
            .starts_with("http://127.0.0.1:"));
        assert!(var("AWS_ENDPOINT_URL_S3").is_some());
        assert_eq!(
            *fake.served.lock().unwrap(),
            vec![AwsEndpoint::Main, AwsEndpoint::S3]
        );
        assert!(l.valid_for(Duration::from_secs(60)));
        assert!(!l.valid_for(Duration::from_secs(3600)));
        assert!(fake.revoked.lock().unwrap().is_empty());
        drop(l);
        assert_eq!(
            *fake.revoked.lock().unwrap(),
            vec!["ASIAEXAMPLE".to_string()]
        );
    }
}
