//! Per-route settings of user routes and function URLs: JWT authorizers (as API Gateway
//! HTTP APIs have them), required scopes, token-bucket rate limits and response caching.
//! Stored in the function's configuration; enforced by the gateway.

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
    /// Responses kept and served again without invoking the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
}

impl RouteSettings {
    pub fn is_empty(&self) -> bool {
        self.authorizer.is_none()
            && self.scopes.is_empty()
            && self.rate_limit.is_none()
            && self.cache.is_none()
    }
}

/// Response caching of a route or a function URL, as API Gateway's stage cache: GET and
/// HEAD responses kept for `ttl`, keyed by method and path plus the request parts `key`
/// names (`query:NAME`, `header:NAME`, `identity`). The gateway applies HTTP's rules
/// (the response's `Cache-Control`, …; docs/api.md, "Response caching").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Seconds a response is kept (1-3600; default 300, as API Gateway). Written `"60s"`,
    /// `"5m"`, `"1h"` or as a number of seconds.
    #[serde(default = "default_cache_ttl", with = "ttl_text")]
    pub ttl: u32,
    /// The request parts that tell entries apart besides method and path, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
}

/// Longest cache TTL, in seconds (API Gateway's).
pub const CACHE_TTL_MAX_S: u32 = 3600;
/// Most parts of one cache key.
pub const CACHE_KEY_PARTS_MAX: usize = 16;

fn default_cache_ttl() -> u32 {
    300
}

impl CacheSettings {
    /// Whether the key has an `identity` part (responses to authenticated requests are
    /// cached only then).
    pub fn keys_identity(&self) -> bool {
        self.key.iter().any(|k| k == "identity")
    }

    /// The header names the key has (`header:NAME`).
    pub fn key_headers(&self) -> impl Iterator<Item = &str> {
        self.key.iter().filter_map(|k| k.strip_prefix("header:"))
    }

    pub fn validate(&self, what: &str) -> Result<(), CoreError> {
        let bad = |m: String| CoreError::InvalidManifest(format!("{what}: cache: {m}"));
        if !(1..=CACHE_TTL_MAX_S).contains(&self.ttl) {
            return Err(bad(format!(
                "ttl must be 1s to {CACHE_TTL_MAX_S}s (1h), not {}s",
                self.ttl
            )));
        }
        if self.key.len() > CACHE_KEY_PARTS_MAX {
            return Err(bad(format!(
                "key has {} parts, at most {CACHE_KEY_PARTS_MAX}",
                self.key.len()
            )));
        }
        for (i, part) in self.key.iter().enumerate() {
            let ok = match part.split_once(':') {
                Some(("query", name)) => !name.is_empty() && name.len() <= 128,
                Some(("header", name)) => valid_header_name(name),
                _ => part == "identity",
            };
            if !ok {
                return Err(bad(format!(
                    "key part {part:?}: use \"query:NAME\", \"header:NAME\" or \"identity\""
                )));
            }
            let dup = self.key[..i]
                .iter()
                .any(|p| p == part || (p.starts_with("header:") && p.eq_ignore_ascii_case(part)));
            if dup {
                return Err(bad(format!("key part {part:?} is named twice")));
            }
        }
        Ok(())
    }
}

/// An HTTP header name (RFC 9110's token), 1-128 characters.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `ttl` as `"60s"`, `"5m"`, `"1h"` or a number of seconds; written back as `"Ns"`.
mod ttl_text {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{secs}s"))
    }

    /// Seconds of `"60s"`, `"5m"`, `"1h"` or `"60"`.
    pub(crate) fn parse(text: &str) -> Option<u32> {
        let t = text.trim();
        let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => t.split_at(i),
            None => (t, "s"),
        };
        let n: u32 = num.parse().ok()?;
        let mult = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return None,
        };
        n.checked_mul(mult)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = u32;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"60s\", \"5m\" or \"1h\", or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
                u32::try_from(v).map_err(|_| E::custom("ttl is too long"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
                u32::try_from(v).map_err(|_| E::custom("ttl must be a positive number of seconds"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid ttl {v:?}: use a duration such as \"60s\", \"5m\" or \"1h\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}
