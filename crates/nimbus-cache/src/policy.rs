//! What may be stored and for how long (RFC 9111 for a shared cache, as a CDN applies it),
//! and when a request asks for a fresh answer.

use http::header::{CACHE_CONTROL, PRAGMA, SET_COOKIE, VARY};
use http::HeaderMap;
use std::time::Duration;

/// Statuses stored: 200, 203, 204, 301, 308, 404 and 410 (RFC 9110's heuristically
/// cacheable statuses, less 206 — no ranges here — and 300/405/414/501, which a function
/// has no business answering for long).
pub const CACHEABLE_STATUSES: [u16; 7] = [200, 203, 204, 301, 308, 404, 410];

/// Whether and for how long a response is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Store(Duration),
    /// Not stored, and why (for the server's debug log).
    Skip(&'static str),
}

/// The `Cache-Control` directives of every such header of `headers`, lowercase names
/// with their values (quotes removed).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(CACHE_CONTROL)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"')),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
}

/// Whether a response with `status` and `headers` is stored, for the route's `ttl`
/// lowered by its `s-maxage` (else `max-age`). Not stored: another status; `no-store`,
/// `private` (with or without field names), `no-cache`, a max age of 0 or one that is not
/// a number; a `Set-Cookie` (a cookie is meant for one client); `Vary: *`, or a `Vary`
/// naming a header the key leaves out (`keyed` says which are in it), since the entry
/// would then answer requests the function tells apart.
pub fn decide(
    status: u16,
    headers: &HeaderMap,
    ttl: Duration,
    keyed: impl Fn(&str) -> bool,
) -> Decision {
    if !CACHEABLE_STATUSES.contains(&status) {
        return Decision::Skip("status");
    }
    let (mut max_age, mut s_maxage) = (None, None);
    for (name, value) in directives(headers) {
        match name.as_str() {
            "no-store" => return Decision::Skip("no-store"),
            "private" => return Decision::Skip("private"),
            "no-cache" => return Decision::Skip("no-cache"),
            "max-age" | "s-maxage" => {
                let Some(secs) = value.and_then(|v| v.parse::<u64>().ok()) else {
                    return Decision::Skip("invalid max-age");
                };
                if name == "max-age" {
                    max_age = Some(secs);
                } else {
                    s_maxage = Some(secs);
                }
            }
            _ => {}
        }
    }
    if headers.contains_key(SET_COOKIE) {
        return Decision::Skip("set-cookie");
    }
    for v in headers.get_all(VARY) {
        let Ok(v) = v.to_str() else {
            return Decision::Skip("vary");
        };
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" || !keyed(name) {
                return Decision::Skip("vary");
            }
        }
    }
    let ttl = match s_maxage.or(max_age) {
        Some(secs) => ttl.min(Duration::from_secs(secs)),
        None => ttl,
    };
    if ttl.is_zero() {
        return Decision::Skip("max-age=0");
    }
    Decision::Store(ttl)
}

/// Whether a request asks for a fresh answer: `Cache-Control: max-age=0` or `no-cache`,
/// or `Pragma: no-cache` (HTTP/1.0).
pub fn wants_fresh(headers: &HeaderMap) -> bool {
    if !headers.contains_key(CACHE_CONTROL) && !headers.contains_key(PRAGMA) {
        return false;
    }
    let cc = directives(headers).any(|(name, value)| {
        name == "no-cache"
            || (name == "max-age" && value.and_then(|v| v.parse::<u64>().ok()) == Some(0))
    });
    cc || headers
        .get_all(PRAGMA)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    const MIN: Duration = Duration::from_secs(60);

    fn d(status: u16, h: &[(&str, &str)]) -> Decision {
        decide(status, &headers(h), MIN, |n| {
            n.eq_ignore_ascii_case("accept")
        })
    }

    #[test]
    fn statuses() {
        for s in CACHEABLE_STATUSES {
            assert_eq!(d(s, &[]), Decision::Store(MIN), "{s}");
        }
        for s in [201, 206, 302, 400, 401, 403, 429, 500, 502] {
            assert_eq!(d(s, &[]), Decision::Skip("status"), "{s}");
        }
    }

    #[test]
    fn cache_control_of_the_response() {
        assert_eq!(
            d(200, &[("cache-control", "no-store")]),
            Decision::Skip("no-store")
        );
        assert_eq!(
            d(200, &[("cache-control", "public, No-Store")]),
            Decision::Skip("no-store")
        );
        assert_eq!(
            d(200, &[("cache-control", "private")]),
            Decision::Skip("private")
        );
        assert_eq!(
            d(200, &[("cache-control", "private=\"x-user\", max-age=30")]),
            Decision::Skip("private")
        );
        assert_eq!(
            d(200, &[("cache-control", "no-cache")]),
            Decision::Skip("no-cache")
        );
        assert_eq!(
            d(200, &[("cache-control", "max-age=5")]),
            Decision::Store(Duration::from_secs(5))
        );
        // A longer max-age does not raise the route's TTL.
        assert_eq!(
            d(200, &[("cache-control", "max-age=3600")]),
            Decision::Store(MIN)
        );
        // s-maxage is the shared caches' own.
        assert_eq!(
            d(200, &[("cache-control", "max-age=5, s-maxage=20")]),
            Decision::Store(Duration::from_secs(20))
        );
        assert_eq!(
            d(
                200,
                &[
                    ("cache-control", "public"),
                    ("cache-control", "max-age=\"7\"")
                ]
            ),
            Decision::Store(Duration::from_secs(7))
        );
        assert_eq!(
            d(200, &[("cache-control", "max-age=0")]),
            Decision::Skip("max-age=0")
        );
        assert_eq!(
            d(200, &[("cache-control", "max-age=soon")]),
            Decision::Skip("invalid max-age")
        );
    }

    #[test]
    fn cookies_and_vary() {
        assert_eq!(
            d(200, &[("set-cookie", "s=1")]),
            Decision::Skip("set-cookie")
        );
        assert_eq!(d(200, &[("vary", "Accept")]), Decision::Store(MIN));
        assert_eq!(
            d(200, &[("vary", "accept, authorization")]),
            Decision::Skip("vary")
        );
        assert_eq!(d(200, &[("vary", "*")]), Decision::Skip("vary"));
    }

    #[test]
    fn fresh_requests() {
        assert!(!wants_fresh(&headers(&[])));
        assert!(wants_fresh(&headers(&[("cache-control", "max-age=0")])));
        assert!(wants_fresh(&headers(&[("cache-control", "No-Cache")])));
        assert!(wants_fresh(&headers(&[("pragma", "no-cache")])));
        assert!(!wants_fresh(&headers(&[("cache-control", "max-age=10")])));
        assert!(!wants_fresh(&headers(&[("cache-control", "no-store")])));
    }
}
