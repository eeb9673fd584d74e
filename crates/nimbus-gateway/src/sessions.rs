//! Temporary credentials of execution roles: when an instance of a function whose `Role`
//! names an existing role starts, the server mints an access key (`ASIA…`), a secret and
//! a session token ([`Auth::assume_role`]). They live in memory only, beside the access
//! keys, as a [`Key`] whose policy is the union of the role's inline policies and whose
//! principal is `arn:aws:sts::ACCOUNT:assumed-role/ROLE/FUNCTION`. A request signed with
//! them must carry the token (`X-Amz-Security-Token`, [`Auth::check_token`]); they are
//! revoked when the instance stops ([`Auth::revoke`], called by the instance's lease),
//! refused after their expiry, updated at once when the role's policies change
//! ([`Auth::refresh_role`]) and revoked when the role is deleted ([`Auth::revoke_role`]).

use crate::auth::{Auth, Key};
use nimbus_auth::keys::{generate_session, secrets_equal};
use nimbus_auth::Policy;
use nimbus_core::arn::ACCOUNT;
use nimbus_store::{RoleStore, StoreError};
use std::sync::Arc;
use time::OffsetDateTime;

/// What makes a key temporary.
#[derive(Clone)]
pub(crate) struct Session {
    token: String,
    /// The role's name as stored.
    pub role: String,
    pub expires: OffsetDateTime,
}

/// Credentials minted for one instance (shown to it only, never logged).
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires: OffsetDateTime,
    /// How long they are valid, from now.
    pub duration: std::time::Duration,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SessionCredentials({} until {})",
            self.access_key_id, self.expires
        )
    }
}

/// Why session credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Invalid,
    Expired,
}

/// The role name an execution role ARN names: `arn:aws:iam::ACCOUNT:role[/PATH]/NAME`
/// with Nimbus's account, `None` otherwise.
pub fn role_name_of(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix(&format!("arn:aws:iam::{ACCOUNT}:role"))?;
    let rest = rest.strip_prefix('/')?;
    let (path, name) = match rest.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rest),
    };
    (!name.is_empty()).then_some((path, name))
}

/// The principal of an instance's credentials.
pub fn assumed_role_arn(role: &str, function: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{function}")
}

impl Auth {
    /// The union of `role`'s inline policies (none: a policy allowing nothing).
    pub(crate) fn role_policy(&self, role: &str) -> Result<Policy, StoreError> {
        let mut statements = Vec::new();
        for (name, doc) in self.store.role_policies(role)? {
            let p = Policy::parse(&doc).map_err(|e| {
                StoreError::Corrupt(format!("role {role}: stored policy {name}: {e}"))
            })?;
            statements.extend(p.statements);
        }
        Ok(Policy {
            version: Some("2012-10-17".into()),
            statements,
        })
    }

    /// Whether the role `role_arn` names exists here and its policies allow `action` on
    /// `resource` (what a workflow's Task may do as its state machine's role).
    pub(crate) fn role_allows(
        &self,
        role_arn: &str,
        action: &str,
        resource: &str,
    ) -> Result<bool, StoreError> {
        let Some((path, name)) = role_name_of(role_arn) else {
            return Ok(false);
        };
        let Some(role) = self.store.role(name)? else {
            return Ok(false);
        };
        let want = if path.is_empty() {
            "/".to_string()
        } else {
            format!("/{path}/")
        };
        if role.path != want {
            return Ok(false);
        }
        Ok(matches!(
            self.role_policy(name)?.evaluate(action, resource),
            nimbus_auth::Decision::Allow
        ))
    }

    /// Mints credentials for an instance of `function` whose `Role` is `role_arn`. `None`
    /// when the ARN names no existing role of this server (its path must match too).
    pub fn assume_role(
        &self,
        role_arn: &str,
        function: &str,
    ) -> Result<Option<SessionCredentials>, StoreError> {
        let Some((path, name)) = role_name_of(role_arn) else {
            return Ok(None);
        };
        let _g = self.roles_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(role) = self.store.role(name)? else {
            return Ok(None);
        };
        let want = if path.is_empty() {
            "/".to_string()
        } else {
            format!("/{path}/")
        };
        if role.path != want || role.name != name {
            return Ok(None);
        }
        let policy = self.role_policy(&role.name)?;
        let (id, secret, token) = generate_session();
        let duration = std::time::Duration::from_secs(u64::from(role.max_session_s));
        let now = OffsetDateTime::now_utc();
        let expires = now + duration;
        let key = Key {
            id: id.clone(),
            name: format!("{}/{function}", role.name),
            user_arn: assumed_role_arn(&role.name, function),
            policy,
            created_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
            secret: secret.clone(),
            session: Some(Session {
                token: token.clone(),
                role: role.name.clone(),
                expires,
            }),
        };
        self.keys.insert(id.clone(), Arc::new(key));
        tracing::debug!(access_key = %id, role = %role.name, function, "minted role credentials");
        Ok(Some(SessionCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            expires,
            duration,
        }))
    }

    /// Revokes temporary credentials (an instance stopped). Ordinary keys are left alone.
    pub fn revoke(&self, access_key_id: &str) {
        if self
            .keys
            .get(access_key_id)
            .is_some_and(|k| k.session.is_some())
        {
            self.keys.remove(access_key_id);
            tracing::debug!(access_key = %access_key_id, "revoked role credentials");
        }
    }

    /// Whether `token` is the session token of key `id` (keys that are not session
    /// credentials need none), and the credentials have not expired.
    pub fn check_token(&self, id: &str, token: Option<&str>) -> Result<(), TokenError> {
        let Some(key) = self.keys.get(id) else {
            return Ok(());
        };
        let Some(s) = &key.session else {
            return Ok(());
        };
        let token = token.ok_or(TokenError::Missing)?;
        if !secrets_equal(token, &s.token) {
            return Err(TokenError::Invalid);
        }
        if OffsetDateTime::now_utc() >= s.expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Gives every live credential of `role` the role's current policies (after
    /// PutRolePolicy / DeleteRolePolicy). Call with [`Auth::roles_lock`] held.
    pub(crate) fn refresh_role(&self, role: &str) -> Result<(), StoreError> {
        let policy = self.role_policy(role)?;
        for key in self.sessions_of(role) {
            let mut k = Key::clone(&key);
            k.policy = policy.clone();
            self.keys.insert(k.id.clone(), Arc::new(k));
        }
        Ok(())
    }

    /// Revokes every live credential of `role` (DeleteRole).
    pub(crate) fn revoke_role(&self, role: &str) {
        for key in self.sessions_of(role) {
            self.keys.remove(&key.id);
        }
    }

    fn sessions_of(&self, role: &str) -> Vec<Arc<Key>> {
        self.keys
            .snapshot()
            .values()
            .filter(|k| {
                k.session
                    .as_ref()
                    .is_some_and(|s| s.role.eq_ignore_ascii_case(role))
            })
            .cloned()
            .collect()
    }

    /// How many temporary credentials are live (for tests and health).
    pub fn live_sessions(&self) -> usize {
        self.keys
            .snapshot()
            .values()
            .filter(|k| k.session.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            role_name_of("arn:aws:iam::000000000000:role/thumbs"),
            Some(("", "thumbs"))
        );
        assert_eq!(
            role_name_of("arn:aws:iam::000000000000:role/app/x/thumbs"),
            Some(("app/x", "thumbs"))
        );
        assert_eq!(role_name_of("arn:aws:iam::123456789012:role/thumbs"), None);
        assert_eq!(role_name_of("arn:aws:iam::000000000000:role/"), None);
        assert_eq!(role_name_of("thumbs"), None);
    }

    #[test]
    fn session_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            nimbus_store::SecretStore::open(dir.path(), nimbus_store::MasterKey::generate())
                .unwrap(),
        );
        store
            .create_role(&nimbus_store::Role {
                name: "thumbs".into(),
                path: "/".into(),
                id: "AROAEXAMPLE0000000001".into(),
                trust_policy: "{}".into(),
                description: None,
                max_session_s: 3600,
                tags: vec![],
                created_ms: 0,
            })
            .unwrap();
        let auth = Auth::open(store.clone(), true).unwrap();
        assert!(auth
            .assume_role("arn:aws:iam::000000000000:role/nope", "f")
            .unwrap()
            .is_none());
        assert!(auth
            .assume_role("arn:aws:iam::000000000000:role/app/thumbs", "f")
            .unwrap()
            .is_none());
        let c = auth
            .assume_role("arn:aws:iam::000000000000:role/thumbs", "f")
            .unwrap()
            .unwrap();
        let key = auth.key(&c.access_key_id).unwrap();
        assert_eq!(
            key.user_arn,
            "arn:aws:sts::000000000000:assumed-role/thumbs/f"
        );
        // No policies: nothing allowed.
        assert_eq!(
            key.policy.evaluate("s3:GetObject", "arn:aws:s3:::b/k"),
            nimbus_auth::Decision::ImplicitDeny
        );
        assert!(auth.list().is_empty(), "sessions are not listed as keys");
        assert_eq!(
            auth.check_token(&c.access_key_id, None),
            Err(TokenError::Missing)
        );
        assert_eq!(
            auth.check_token(&c.access_key_id, Some("x")),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            auth.check_token(&c.access_key_id, Some(&c.session_token)),
            Ok(())
        );
        store
            .put_role_policy(
                "thumbs",
                "p",
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
            )
            .unwrap();
        auth.refresh_role("thumbs").unwrap();
        let key = auth.key(&c.access_key_id).unwrap();
        assert_eq!(
            key.policy.evaluate("s3:GetObject", "arn:aws:s3:::b/k"),
            nimbus_auth::Decision::Allow
        );
        auth.revoke(&c.access_key_id);
        assert!(auth.key(&c.access_key_id).is_none());
        let c2 = auth
            .assume_role("arn:aws:iam::000000000000:role/thumbs", "f")
            .unwrap()
            .unwrap();
        assert_eq!(auth.live_sessions(), 1);
        auth.revoke_role("THUMBS");
        assert!(auth.key(&c2.access_key_id).is_none());
    }
}
