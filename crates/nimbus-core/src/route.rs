//! HTTP route specs in API Gateway HTTP API syntax: `"GET /hello/{name}"`, `"ANY /api/{proxy+}"`.

use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Path prefixes owned by Nimbus itself; user routes may not use them.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/v1",
    "/fn",
    "/2015-03-31",
    "/2016-08-19",
    "/2017-03-31",
    "/2017-10-31",
    "/2018-06-01",
    "/2019-09-30",
    "/2021-10-31",
    "/2021-11-15",
];

/// Prefixes Nimbus took after routes were first stored (layers, event-invoke configs, the
/// metrics endpoint, the web console `/ui`): a new configuration may not use them
/// ([`RouteSpec::check_new`], from `FunctionConfig::validate` at deploy), but a stored route under one still loads (Nimbus's
/// own route answers there), so an existing registry keeps working.
pub const RESERVED_FOR_NEW_ROUTES: &[&str] = &["/2018-10-31", "/2019-09-25", "/metrics", "/ui"];

fn under(path: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

const METHODS: &[&str] = &[
    "ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// A parsed route key. Serialises as its text (`"GET /hello/{name}"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouteSpec {
    key: String,
    method: String,
    segments: Vec<Segment>,
}

impl RouteSpec {
    pub fn parse(key: &str) -> Result<Self, CoreError> {
        let bad = |why: &str| CoreError::InvalidRoute(key.to_string(), why.to_string());
        let (method, path) = key
            .split_once(' ')
            .ok_or_else(|| bad("use \"METHOD /path\", for example \"GET /hello/{name}\""))?;
        let method = method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(bad(&format!(
                "method must be one of {}",
                METHODS.join(", ")
            )));
        }
        if !path.starts_with('/') {
            return Err(bad("the path must start with '/'"));
        }
        if under(path, RESERVED_PREFIXES) {
            return Err(bad("this path prefix is reserved by Nimbus"));
        }
        let mut segments = Vec::new();
        let parts: Vec<&str> = path[1..].split('/').filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if let Some(name) = inner.strip_suffix('+') {
                    if i + 1 != parts.len() {
                        return Err(bad("a greedy {name+} parameter must be the last segment"));
                    }
                    check_param(name).map_err(bad)?;
                    segments.push(Segment::Greedy(name.to_string()));
                } else {
                    check_param(inner).map_err(bad)?;
                    segments.push(Segment::Param(inner.to_string()));
                }
            } else if part.contains(['{', '}']) {
                return Err(bad("parameters must span a whole segment"));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Self {
            key: format!("{method} {path}"),
            method,
            segments,
        })
    }

    /// The normalised route key, e.g. `GET /hello/{name}` (what `routeKey` carries).
    /// Refuses a route under [`RESERVED_FOR_NEW_ROUTES`] (for configurations being deployed).
    pub fn check_new(&self) -> Result<(), CoreError> {
        let path = self.key.split_once(' ').map_or("", |(_, p)| p);
        if under(path, RESERVED_FOR_NEW_ROUTES) {
            return Err(CoreError::InvalidRoute(
                self.key.clone(),
                "this path prefix is reserved by Nimbus".into(),
            ));
        }
        Ok(())
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Matches a request; returns the path parameters on success.
    pub fn matches(&self, method: &str, path: &str) -> Option<BTreeMap<String, String>> {
        if self.method != "ANY" && !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let parts: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut params = BTreeMap::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), (*parts.get(i)?).to_string());
                }
                Segment::Greedy(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    params.insert(name.clone(), parts[i..].join("/"));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// Sorting weight: routes with more literal segments and explicit methods win.
    pub fn specificity(&self) -> (usize, usize, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let non_greedy = self
            .segments
            .iter()
            .filter(|s| !matches!(s, Segment::Greedy(_)))
            .count();
        (literals, non_greedy, self.method != "ANY")
    }
}

fn check_param(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Err("parameter names use letters, digits, '-' and '_'")
    } else {
        Ok(())
    }
}

impl TryFrom<String> for RouteSpec {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        Self::parse(&s)
    }
}
impl From<RouteSpec> for String {
    fn from(r: RouteSpec) -> String {
        r.key
    }
}
impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let r = RouteSpec::parse("GET /hello/{name}").unwrap();
        assert_eq!(r.matches("GET", "/hello/bob").unwrap()["name"], "bob");
        assert!(r.matches("POST", "/hello/bob").is_none());
        assert!(r.matches("GET", "/hello").is_none());
        assert!(r.matches("GET", "/hello/bob/x").is_none());
        let g = RouteSpec::parse("ANY /api/{proxy+}").unwrap();
        assert_eq!(g.matches("DELETE", "/api/a/b/c").unwrap()["proxy"], "a/b/c");
        assert!(g.matches("GET", "/api").is_none());
        let root = RouteSpec::parse("get /").unwrap();
        assert_eq!(root.key(), "GET /");
        assert!(root.matches("GET", "/").is_some());
    }

    #[test]
    fn rejects() {
        for k in [
            "/x",
            "FETCH /x",
            "GET x",
            "GET /v1/x",
            "GET /{a+}/b",
            "GET /a{b}",
            "GET /fn",
        ] {
            assert!(RouteSpec::parse(k).is_err(), "{k}");
        }
        for k in [
            "GET /metrics",
            "ANY /2018-10-31/layers",
            "POST /2019-09-25/x",
        ] {
            let r = RouteSpec::parse(k).expect("stored routes under these still load");
            assert!(r.check_new().is_err(), "{k}");
        }
        for k in ["GET /metricsx", "GET /api/metrics"] {
            RouteSpec::parse(k).unwrap().check_new().unwrap();
        }
    }
}
