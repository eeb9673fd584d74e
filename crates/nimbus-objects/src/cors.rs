//! A bucket's CORS configuration (`PutBucketCors`): rules of allowed origins, methods and
//! headers, validated as S3 validates them, and the matching S3 does for a cross-origin
//! request: the **first** rule that allows the origin, the method and every requested
//! header wins.

use crate::{ObjectError, Result};
use serde::{Deserialize, Serialize};

/// The most rules a configuration may have (S3's limit).
pub const MAX_CORS_RULES: usize = 100;

const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One `CORSRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `AllowedOrigin`: exact origins, or patterns with one `*` (`https://*.example.com`, `*`).
    pub allowed_origins: Vec<String>,
    /// `AllowedMethod`: GET, PUT, POST, DELETE, HEAD.
    pub allowed_methods: Vec<String>,
    /// `AllowedHeader`: header names (case-insensitive), each with at most one `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// `ExposeHeader`: headers a browser script may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// A bucket's `CORSConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    pub rules: Vec<CorsRule>,
}

/// `s` matches `pattern`, which has at most one `*` (any run of characters).
/// `case_insensitive` for header names.
fn wildcard_match(pattern: &str, s: &str, case_insensitive: bool) -> bool {
    let (p, s) = if case_insensitive {
        (pattern.to_ascii_lowercase(), s.to_ascii_lowercase())
    } else {
        (pattern.to_string(), s.to_string())
    };
    match p.split_once('*') {
        None => p == s,
        Some((head, tail)) => {
            s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail)
        }
    }
}

impl CorsRule {
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|p| wildcard_match(p, origin, false))
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    pub fn allows_header(&self, header: &str) -> bool {
        self.allowed_headers
            .iter()
            .any(|p| wildcard_match(p, header.trim(), true))
    }

    /// Whether the rule's matching origin is the wildcard `*` (S3 then answers
    /// `Access-Control-Allow-Origin: *` without credentials).
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

impl CorsConfig {
    /// Checks the configuration as S3 does: 1–100 rules, each with an origin and a method,
    /// methods among GET, PUT, POST, DELETE and HEAD, at most one `*` per origin and allowed
    /// header, IDs of at most 255 characters.
    pub fn validate(&self) -> Result<()> {
        if self.rules.is_empty() {
            return Err(ObjectError::MalformedXml(
                "the CORS configuration must have at least one CORSRule".into(),
            ));
        }
        if self.rules.len() > MAX_CORS_RULES {
            return Err(ObjectError::InvalidRequest(format!(
                "the CORS configuration has {} rules: at most {MAX_CORS_RULES} are allowed",
                self.rules.len()
            )));
        }
        for r in &self.rules {
            if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
                return Err(ObjectError::MalformedXml(
                    "each CORSRule needs at least one AllowedOrigin and one AllowedMethod".into(),
                ));
            }
            if let Some(m) = r
                .allowed_methods
                .iter()
                .find(|m| !METHODS.contains(&m.as_str()))
            {
                return Err(ObjectError::InvalidRequest(format!(
                    "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
                )));
            }
            if let Some(o) = r
                .allowed_origins
                .iter()
                .find(|o| o.matches('*').count() > 1)
            {
                return Err(ObjectError::InvalidRequest(format!(
                    "AllowedOrigin \"{o}\" can not have more than one wildcard."
                )));
            }
            if let Some(h) = r
                .allowed_headers
                .iter()
                .find(|h| h.matches('*').count() > 1)
            {
                return Err(ObjectError::InvalidRequest(format!(
                    "AllowedHeader \"{h}\" can not have more than one wildcard."
                )));
            }
            if r.id.as_ref().is_some_and(|id| id.chars().count() > 255) {
                return Err(ObjectError::InvalidArgument(
                    "the ID of a CORSRule is at most 255 characters".into(),
                ));
            }
            if r.max_age_seconds.is_some_and(|s| s < 0) {
                return Err(ObjectError::MalformedXml(
                    "MaxAgeSeconds must not be negative".into(),
                ));
            }
        }
        Ok(())
    }

    /// The rule answering a preflight: the first that allows `origin`, `method` (the
    /// `Access-Control-Request-Method`) and every header in `headers` (the
    /// `Access-Control-Request-Headers`, comma separated).
    pub fn preflight(&self, origin: &str, method: &str, headers: &[String]) -> Option<&CorsRule> {
        self.rules.iter().find(|r| {
            r.allows_origin(origin)
                && r.allows_method(method)
                && headers.iter().all(|h| r.allows_header(h))
        })
    }

    /// The rule for an actual cross-origin request: the first that allows the origin and
    /// the request's method.
    pub fn matching(&self, origin: &str, method: &str) -> Option<&CorsRule> {
        self.rules
            .iter()
            .find(|r| r.allows_origin(origin) && r.allows_method(method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards_match_one_run() {
        assert!(wildcard_match("*", "https://a.example", false));
        assert!(wildcard_match(
            "https://*.example.com",
            "https://app.example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "http://app.example.com",
            false
        ));
        assert!(!wildcard_match(
            "https://*.example.com",
            "https://example.com",
            false
        ));
        assert!(wildcard_match("x-amz-*", "X-Amz-Date", true));
        assert!(!wildcard_match(
            "http://a.example",
            "http://A.example",
            false
        ));
    }

    #[test]
    fn the_first_rule_allowing_everything_wins() {
        let c = CorsConfig {
            rules: vec![
                rule(&["https://app.example.com"], &["GET"], &[]),
                rule(
                    &["https://*.example.com"],
                    &["PUT", "GET"],
                    &["content-type", "x-amz-*"],
                ),
                rule(&["*"], &["GET"], &["*"]),
            ],
        };
        c.validate().unwrap();
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let r = c.preflight("https://app.example.com", "GET", &[]).unwrap();
        assert_eq!(r.allowed_methods, ["GET"]);
        let r = c
            .preflight(
                "https://app.example.com",
                "PUT",
                &h(&["Content-Type", "x-amz-date"]),
            )
            .unwrap();
        assert_eq!(r.allowed_methods, ["PUT", "GET"]);
        assert!(c
            .preflight("https://app.example.com", "PUT", &h(&["x-other"]))
            .is_none());
        assert!(c.preflight("https://evil.test", "PUT", &[]).is_none());
        assert!(c
            .preflight("https://evil.test", "GET", &h(&["x-other"]))
            .unwrap()
            .any_origin());
        assert!(c.matching("https://evil.test", "DELETE").is_none());
    }

    #[test]
    fn validation_follows_s3() {
        let bad = |c: CorsConfig| c.validate().unwrap_err();
        assert!(matches!(
            bad(CorsConfig::default()),
            ObjectError::MalformedXml(_)
        ));
        assert!(matches!(
            bad(CorsConfig {
                rules: vec![rule(&["*"], &["PATCH"], &[])]
            }),
            ObjectError::InvalidRequest(_)
        ));
        assert!(matches!(
            bad(CorsConfig {
                rules: vec![rule(&["https://*.*.x"], &["GET"], &[])]
            }),
            ObjectError::InvalidRequest(_)
        ));
        assert!(matches!(
            bad(CorsConfig {
                rules: vec![rule(&["*"], &["GET"], &["*-*"])]
            }),
            ObjectError::InvalidRequest(_)
        ));
        assert!(matches!(
            bad(CorsConfig {
                rules: vec![rule(&["*"], &["GET"], &[]); 101]
            }),
            ObjectError::InvalidRequest(_)
        ));
        CorsConfig {
            rules: vec![rule(&["*"], &["GET"], &[]); 100],
        }
        .validate()
        .unwrap();
    }
}
