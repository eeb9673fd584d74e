//! JWT authorizers for user routes, as API Gateway HTTP APIs have them: the route's
//! authorizer verifies `Authorization: Bearer <JWT>` (signature with a key from the
//! issuer's JWKS chosen by `kid`, `iss`, `aud` or `client_id`, `exp`/`nbf` with a small
//! leeway) and the route's scopes (`scope`, space separated, or `scp`). Rejections are
//! API Gateway's: 401 `{"message":"Unauthorized"}` with `www-authenticate`, 403
//! `{"message":"Forbidden"}`. Verification uses the `jsonwebtoken` crate (ring).
//!
//! JWKS from a URL are fetched with a timeout, size-limited and cached; an unknown `kid`
//! triggers a refresh at most every [`REFRESH_MIN`] per URL, and the cache holds at most
//! [`CACHE_MAX`] URLs.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use nimbus_core::{JwtAuthorizer, RouteSettings};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, warn};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_S: u64 = 30;
/// How long a fetched JWKS is used before it is fetched again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Least time between two fetches of one URL (an unknown `kid` cannot force more).
const REFRESH_MIN: Duration = Duration::from_secs(10);
/// Most JWKS URLs cached at once.
const CACHE_MAX: usize = 64;
/// Timeout of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted from a URL.
const JWKS_FETCH_MAX: usize = 256 * 1024;
/// Longest token considered.
const TOKEN_MAX: usize = 16 * 1024;

const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a request was refused (logged at debug level; the client sees only API Gateway's
/// generic message).
#[derive(Debug, Error)]
pub(crate) enum JwtError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the JWKS cannot be used: {0}")]
    Jwks(String),
    #[error("the token has none of the route's scopes")]
    Scope,
}

impl JwtError {
    /// API Gateway's response: 401 (with `www-authenticate`) or 403.
    pub(crate) fn response(&self) -> Response {
        match self {
            JwtError::Scope => (
                StatusCode::FORBIDDEN,
                [("content-type", "application/json")],
                json!({"message": "Forbidden"}).to_string(),
            )
                .into_response(),
            other => {
                let detail = match other {
                    JwtError::Missing => "Bearer".to_string(),
                    _ => "Bearer error=\"invalid_token\"".to_string(),
                };
                let mut resp = (
                    StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json")],
                    json!({"message": "Unauthorized"}).to_string(),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&detail) {
                    resp.headers_mut().insert("www-authenticate", v);
                }
                resp
            }
        }
    }
}

struct Cached {
    keys: Arc<Vec<Jwk>>,
    fetched: Option<Instant>,
    last_attempt: Instant,
}

/// JWKS fetched from URLs, shared by every route.
pub(crate) struct JwksCache {
    client: reqwest::Client,
    entries: Mutex<HashMap<String, Cached>>,
}

impl Default for JwksCache {
    fn default() -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .unwrap_or_default(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl JwksCache {
    /// The keys at `url`: cached ones while fresh (and, with `need_kid`, while they hold
    /// that kid or a refresh was tried lately), else fetched.
    async fn keys(&self, url: &str, need_kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, JwtError> {
        let now = Instant::now();
        let stale_keys = {
            let mut entries = self.entries.lock().unwrap();
            if let Some(c) = entries.get_mut(url) {
                let fresh = c.fetched.is_some_and(|f| now.duration_since(f) < CACHE_TTL);
                let has_kid = need_kid.is_none_or(|k| find(&c.keys, Some(k)).is_some());
                let recently_tried = now.duration_since(c.last_attempt) < REFRESH_MIN;
                if (fresh && has_kid) || recently_tried {
                    return Ok(c.keys.clone());
                }
                c.last_attempt = now;
                Some(c.keys.clone())
            } else {
                if entries.len() >= CACHE_MAX {
                    // Forget the entry fetched longest ago.
                    if let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, c)| c.last_attempt)
                        .map(|(k, _)| k.clone())
                    {
                        entries.remove(&oldest);
                    }
                }
                entries.insert(
                    url.to_string(),
                    Cached {
                        keys: Arc::new(Vec::new()),
                        fetched: None,
                        last_attempt: now,
                    },
                );
                None
            }
        };
        match self.fetch(url).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if let Some(c) = self.entries.lock().unwrap().get_mut(url) {
                    c.keys = keys.clone();
                    c.fetched = Some(Instant::now());
                }
                Ok(keys)
            }
            Err(e) => {
                warn!("JWKS {url}: {e}");
                // Keep serving the last good keys while the issuer is unreachable.
                match stale_keys.filter(|k| !k.is_empty()) {
                    Some(k) => Ok(k),
                    None => Err(e),
                }
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<Jwk>, JwtError> {
        let fail = |e: String| JwtError::Jwks(format!("cannot fetch {url}: {e}"));
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > JWKS_FETCH_MAX {
                return Err(fail("larger than 256 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        parse_jwks(&doc)
    }
}

/// The usable keys of a JWKS document (keys this crate cannot use are skipped).
pub(crate) fn parse_jwks(doc: &Value) -> Result<Vec<Jwk>, JwtError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwtError::Jwks("no \"keys\" array".into()))?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            !matches!(
                k.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            )
        })
        .collect())
}

/// Checks a configuration the server is asked to store: inline JWKS parse and hold at
/// least one usable key, and no `jwks_file` is left for the server to read.
pub(crate) fn check_config(config: &nimbus_core::FunctionConfig) -> Result<(), crate::ApiError> {
    for (name, a) in &config.authorizers {
        let bad = |m: String| crate::ApiError::InvalidParameter(format!("authorizer {name}: {m}"));
        if a.jwks_file.is_some() {
            return Err(bad(
                "jwks_file names a file on the client: send its keys as jwks (nimbus deploy and up do)"
                    .into(),
            ));
        }
        if let Some(doc) = &a.jwks {
            let keys = parse_jwks(doc).map_err(|e| bad(e.to_string()))?;
            if keys.is_empty() {
                return Err(bad("the JWKS holds no usable RSA, EC or OKP key".into()));
            }
        }
    }
    Ok(())
}

fn find<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        // No kid: only unambiguous with a single key.
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, JwtError> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(JwtError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(JwtError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > TOKEN_MAX {
        return Err(JwtError::Invalid("empty or oversized token".into()));
    }
    Ok(token)
}

/// Verifies the request against the route's authorizer; on success returns the
/// `requestContext.authorizer` value (`{"jwt": {"claims": …, "scopes": …}}`).
pub(crate) async fn authorize(
    cache: &JwksCache,
    authorizer: &JwtAuthorizer,
    settings: &RouteSettings,
    headers: &HeaderMap,
) -> Result<Value, JwtError> {
    let token = bearer(headers)?;
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
    if !ALLOWED.contains(&header.alg) {
        return Err(JwtError::Invalid(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let kid = header.kid.as_deref();
    let keys = match (&authorizer.jwks, &authorizer.jwks_url) {
        (Some(doc), _) => Arc::new(parse_jwks(doc)?),
        (None, Some(url)) => cache.keys(url, kid).await?,
        (None, None) => return Err(JwtError::Jwks("no JWKS configured".into())),
    };
    let jwk = find(&keys, kid)
        .ok_or_else(|| JwtError::Invalid(format!("no key with kid {kid:?} in the JWKS")))?;
    if let Some(ka) = jwk.common.key_algorithm {
        if format!("{ka:?}") != format!("{:?}", header.alg) {
            return Err(JwtError::Invalid(
                "the token's alg differs from its key's".into(),
            ));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::Jwks(e.to_string()))?;
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_S;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false; // `aud` or `client_id`, checked below
    v.set_issuer(&[&authorizer.issuer]);
    v.set_required_spec_claims(&["exp", "iss"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map_err(|e| JwtError::Invalid(e.to_string()))?;
    let claims = data.claims;
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => claims
            .get("client_id")
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
    };
    if !audiences
        .iter()
        .any(|a| authorizer.audience.iter().any(|x| x == a))
    {
        return Err(JwtError::Invalid("audience not accepted".into()));
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
        if iat > jsonwebtoken::get_current_timestamp() + LEEWAY_S {
            return Err(JwtError::Invalid("issued in the future".into()));
        }
    }
    let scopes = token_scopes(&claims);
    if !settings.scopes.is_empty() && !settings.scopes.iter().any(|s| scopes.contains(s)) {
        debug!("JWT lacks the route's scopes");
        return Err(JwtError::Scope);
    }
    // API Gateway hands the claims to the function as strings.
    let flat: Map<String, Value> = claims
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => format!(
                    "[{}]",
                    a.iter()
                        .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => other.to_string(),
            };
            (k.clone(), Value::String(s))
        })
        .collect();
    let scopes = if scopes.is_empty() {
        Value::Null
    } else {
        scopes.into()
    };
    Ok(json!({ "jwt": { "claims": flat, "scopes": scopes } }))
}

fn token_scopes(claims: &Map<String, Value>) -> Vec<String> {
    let from = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    claims
        .get("scope")
        .or_else(|| claims.get("scp"))
        .map(from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer(&h), Err(JwtError::Missing)));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&h), Err(JwtError::Missing)));
        h.insert("authorization", HeaderValue::from_static("bearer  a.b.c "));
        assert_eq!(bearer(&h).unwrap(), "a.b.c");
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let c: Map<String, Value> = serde_json::from_value(json!({"scope": "a b  c"})).unwrap();
        assert_eq!(token_scopes(&c), ["a", "b", "c"]);
        let c: Map<String, Value> = serde_json::from_value(json!({"scp": ["x", "y"]})).unwrap();
        assert_eq!(token_scopes(&c), ["x", "y"]);
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "weird"},
            {"kty": "EC", "crv": "P-256", "kid": "ec",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]});
        let keys = parse_jwks(&doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(find(&keys, Some("ec")).is_some());
        assert!(find(&keys, Some("sym")).is_none());
    }
}
