//! Per-route settings of user routes and function URLs: JWT authorizers (as API Gateway
//! HTTP APIs have them), required scopes and token-bucket rate limits. Stored in the
//! function's configuration; enforced by the gateway.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Most authorizers one function may declare.
pub const AUTHORIZERS_MAX: usize = 10;
/// Largest inline JWKS (serialised), so a configuration stays small.
pub const JWKS_MAX_BYTES: usize = 64 * 1024;

/// A JWT authorizer: who issues the tokens, for which audience, and where the issuer's
/// public keys (a JWKS) are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthorizer {
    /// Expected `iss` claim, exactly.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` (or, as API Gateway, its `client_id`) must
    /// contain one of them.
    pub audience: Vec<String>,
    /// The JWKS itself (`{"keys": [...]}`); the CLI puts a manifest's `jwks_file` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Where to fetch the JWKS (http or https); fetched with a timeout and cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// A JWKS file relative to the manifest. Only the CLI reads it (and replaces it by
    /// `jwks`); the server refuses a configuration that still names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
}

impl JwtAuthorizer {
    pub fn validate(&self, name: &str) -> Result<(), CoreError> {
        let bad = |m: &str| CoreError::InvalidManifest(format!("authorizer {name}: {m}"));
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("names use 1-64 letters, digits, '-' or '_'"));
        }
        if self.issuer.is_empty() {
            return Err(bad("issuer is empty"));
        }
        if self.audience.is_empty() || self.audience.iter().any(String::is_empty) {
            return Err(bad("audience must list at least one non-empty audience"));
        }
        let sources = [
            self.jwks.is_some(),
            self.jwks_url.is_some(),
            self.jwks_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(bad("set exactly one of jwks_file (or jwks) and jwks_url"));
        }
        if let Some(j) = &self.jwks {
            if !j.get("keys").is_some_and(serde_json::Value::is_array) {
                return Err(bad("the JWKS must be an object with a \"keys\" array"));
            }
            if j.to_string().len() > JWKS_MAX_BYTES {
                return Err(bad("the JWKS is larger than 64 KiB"));
            }
        }
        if let Some(u) = &self.jwks_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(bad("jwks_url must be an http:// or https:// URL"));
            }
        }
        if self.jwks_file.as_deref().is_some_and(str::is_empty) {
            return Err(bad("jwks_file is empty"));
        }
        Ok(())
    }
}

/// A token bucket: `rps` tokens per second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub rps: u32,
    /// Bucket size (default: `rps`).
    #[serde(default)]
    pub burst: u32,
}

impl RateLimit {
    /// The bucket size actually used (`burst`, or `rps` when unset).
    pub fn bucket(&self) -> u32 {
        if self.burst == 0 {
            self.rps
        } else {
            self.burst
        }
    }

    pub fn validate(&self, what: &str) -> Result<(), CoreError> {
        if !(1..=1_000_000).contains(&self.rps) || self.burst > 1_000_000 {
            return Err(CoreError::InvalidManifest(format!(
                "{what}: rate_limit needs rps 1-1000000 (and burst at most 1000000)"
            )));
        }
        Ok(())
    }
}

/// What applies to one user route besides its function: an authorizer with the scopes
/// it requires, and a rate limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Name of an authorizer in the function's `authorizers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
    /// Scopes the token must carry (any one of them, as API Gateway's authorization scopes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl RouteSettings {
    pub fn is_empty(&self) -> bool {
        self.authorizer.is_none() && self.scopes.is_empty() && self.rate_limit.is_none()
    }
}
