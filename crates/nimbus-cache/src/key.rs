//! Cache keys: the function, the route (or `$url`), the method, the `Host` header (a
//! function that builds links from it must not hand one host's answer to another) and the
//! raw path, then the parts a route chose, in its order: `query:NAME` (every value of the query parameter
//! NAME, raw, in order; a parameter whose percent-decoded name is NAME counts, so
//! `?%69d=1` is keyed as `id`), `header:NAME` (every value of the header) and `identity`
//! (who is calling, [`Identity`]). Every field is written with its length, so no two
//! different requests share a key by concatenation. Request parts the key leaves out do
//! not tell entries apart: a function whose answer depends on them should name them.

use crate::CacheError;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// One part of a key setting (`query:id`, `header:accept`, `identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart<'a> {
    Query(&'a str),
    Header(&'a str),
    Identity,
}

impl<'a> KeyPart<'a> {
    /// Parses `query:NAME`, `header:NAME` (a valid header name, any case) or `identity`.
    pub fn parse(s: &'a str) -> Result<Self, CacheError> {
        let bad = || CacheError::KeyPart(s.to_string());
        if s == "identity" {
            return Ok(KeyPart::Identity);
        }
        if let Some(name) = s.strip_prefix("query:") {
            if name.is_empty() || name.len() > 128 {
                return Err(bad());
            }
            return Ok(KeyPart::Query(name));
        }
        if let Some(name) = s.strip_prefix("header:") {
            if name.len() > 128 || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(bad());
            }
            return Ok(KeyPart::Header(name));
        }
        Err(bad())
    }
}

/// Who is calling, for keys with an `identity` part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// No credentials.
    Anonymous,
    /// A principal the gateway verified (a JWT's issuer and subject, an access key id),
    /// written as is.
    Principal(&'a str),
    /// A credential nobody verified (an `Authorization` header): keyed by its SHA-256,
    /// so the secret itself is not kept.
    Credential(&'a [u8]),
}

/// The request a key is built from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    pub function: &'a str,
    /// The route key (`GET /items/{id}`), or `$url` for the function URL.
    pub scope: &'a str,
    pub method: &'a str,
    /// The raw (still percent-encoded) path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub identity: Identity<'a>,
}

fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether the raw query parameter name `raw` decodes (percent escapes, `+` as a space,
/// as `application/x-www-form-urlencoded`) to `name`. No allocation.
fn name_matches(raw: &str, name: &str) -> bool {
    let (raw, name) = (raw.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let b = match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 3;
                    h * 16 + l
                }
                _ => {
                    i += 1;
                    b'%'
                }
            },
            b'+' => {
                i += 1;
                b' '
            }
            b => {
                i += 1;
                b
            }
        };
        if name.get(j) != Some(&b) {
            return false;
        }
        j += 1;
    }
    j == name.len()
}

/// Builds the key of `input` with `parts` (each checked by [`KeyPart::parse`]).
pub fn build_key<'p>(
    input: &KeyInput<'_>,
    parts: impl IntoIterator<Item = &'p str>,
) -> Result<Vec<u8>, CacheError> {
    let mut out =
        Vec::with_capacity(64 + input.function.len() + input.scope.len() + input.path.len());
    field(&mut out, b'f', input.function.as_bytes());
    field(&mut out, b's', input.scope.as_bytes());
    field(&mut out, b'm', input.method.as_bytes());
    let host = input.headers.get(http::header::HOST);
    field(&mut out, b'H', host.map_or(&b""[..], |h| h.as_bytes()));
    field(&mut out, b'p', input.path.as_bytes());
    for part in parts {
        match KeyPart::parse(part)? {
            KeyPart::Query(name) => {
                field(&mut out, b'q', name.as_bytes());
                for pair in input.query.unwrap_or("").split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !pair.is_empty() && name_matches(k, name) {
                        field(&mut out, b'v', v.as_bytes());
                    }
                }
            }
            KeyPart::Header(name) => {
                // Header names are case-insensitive: written lowercase.
                field(&mut out, b'h', name.as_bytes());
                let at = out.len() - name.len();
                out[at..].make_ascii_lowercase();
                for v in input.headers.get_all(name) {
                    field(&mut out, b'v', v.as_bytes());
                }
            }
            KeyPart::Identity => match input.identity {
                Identity::Anonymous => field(&mut out, b'a', b""),
                Identity::Principal(p) => field(&mut out, b'i', p.as_bytes()),
                Identity::Credential(c) => field(&mut out, b'c', &Sha256::digest(c)),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        method: &str,
        path: &str,
        query: Option<&str>,
        h: &[(&str, &str)],
        parts: &[&str],
    ) -> Vec<u8> {
        key_as(Identity::Anonymous, method, path, query, h, parts)
    }

    fn key_as(
        identity: Identity<'_>,
        method: &str,
        path: &str,
        query: Option<&str>,
        h: &[(&str, &str)],
        parts: &[&str],
    ) -> Vec<u8> {
        let mut headers = HeaderMap::new();
        for (k, v) in h {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        build_key(
            &KeyInput {
                function: "f",
                scope: "$url",
                method,
                path,
                query,
                headers: &headers,
                identity,
            },
            parts.iter().copied(),
        )
        .unwrap()
    }

    #[test]
    fn parts_parse() {
        assert_eq!(KeyPart::parse("query:id"), Ok(KeyPart::Query("id")));
        assert_eq!(
            KeyPart::parse("header:Accept"),
            Ok(KeyPart::Header("Accept"))
        );
        assert_eq!(KeyPart::parse("identity"), Ok(KeyPart::Identity));
        for bad in [
            "",
            "query:",
            "header:",
            "header:a b",
            "cookie:x",
            "Identity",
            "id",
        ] {
            assert!(KeyPart::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chosen_query_parameters_only() {
        let parts = ["query:id"];
        let a = key("GET", "/items", Some("id=1&utm=x"), &[], &parts);
        assert_eq!(a, key("GET", "/items", Some("utm=y&id=1"), &[], &parts));
        assert_ne!(a, key("GET", "/items", Some("id=2"), &[], &parts));
        assert_ne!(a, key("GET", "/items", Some("id=1&id=2"), &[], &parts));
        assert_ne!(a, key("GET", "/items", None, &[], &parts));
        // An empty value is not an absent parameter.
        assert_ne!(
            key("GET", "/items", Some("id="), &[], &parts),
            key("GET", "/items", None, &[], &parts)
        );
        // Names are compared decoded, as the function reads them.
        assert_eq!(a, key("GET", "/items", Some("%69d=1"), &[], &parts));
        assert_eq!(
            key("GET", "/", Some("a+b=1"), &[], &["query:a b"]),
            key("GET", "/", Some("a%20b=1"), &[], &["query:a b"])
        );
        // Method and path always count.
        assert_ne!(a, key("HEAD", "/items", Some("id=1"), &[], &parts));
        assert_ne!(a, key("GET", "/items/", Some("id=1"), &[], &parts));
        // Nor do requests to another host share entries.
        assert_ne!(
            a,
            key(
                "GET",
                "/items",
                Some("id=1"),
                &[("host", "evil.test")],
                &parts
            )
        );
        // Without query parts the query does not count.
        assert_eq!(
            key("GET", "/items", Some("id=1"), &[], &[]),
            key("GET", "/items", Some("id=2"), &[], &[])
        );
    }

    #[test]
    fn chosen_headers_only() {
        let parts = ["header:accept"];
        let json = key(
            "GET",
            "/",
            None,
            &[("accept", "application/json"), ("x-other", "1")],
            &parts,
        );
        assert_eq!(
            json,
            key("GET", "/", None, &[("Accept", "application/json")], &parts)
        );
        assert_ne!(
            json,
            key("GET", "/", None, &[("accept", "text/html")], &parts)
        );
        assert_ne!(json, key("GET", "/", None, &[], &parts));
        assert_eq!(
            key("GET", "/", None, &[("accept", "a")], &["header:Accept"]),
            key("GET", "/", None, &[("accept", "a")], &["header:accept"]),
        );
    }

    #[test]
    fn fields_cannot_run_together() {
        // "ab" + "c" and "a" + "bc" are different keys.
        assert_ne!(
            key("GET", "/", Some("x=ab&y=c"), &[], &["query:x", "query:y"]),
            key("GET", "/", Some("x=a&y=bc"), &[], &["query:x", "query:y"])
        );
    }

    #[test]
    fn identities() {
        let parts = ["identity"];
        let alice = key_as(
            Identity::Principal("iss\0alice"),
            "GET",
            "/",
            None,
            &[],
            &parts,
        );
        let bob = key_as(
            Identity::Principal("iss\0bob"),
            "GET",
            "/",
            None,
            &[],
            &parts,
        );
        let anon = key_as(Identity::Anonymous, "GET", "/", None, &[], &parts);
        let t1 = key_as(
            Identity::Credential(b"Bearer t1"),
            "GET",
            "/",
            None,
            &[],
            &parts,
        );
        let t2 = key_as(
            Identity::Credential(b"Bearer t2"),
            "GET",
            "/",
            None,
            &[],
            &parts,
        );
        let all = [&alice, &bob, &anon, &t1, &t2];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The credential itself is not in the key.
        assert!(!t1.windows(9).any(|w| w == b"Bearer t1"));
        // Without an identity part, callers share entries.
        assert_eq!(
            key_as(Identity::Principal("alice"), "GET", "/", None, &[], &[]),
            key_as(Identity::Principal("bob"), "GET", "/", None, &[], &[])
        );
    }

    #[test]
    fn decoding_names() {
        assert!(name_matches("id", "id"));
        assert!(name_matches("%69%64", "id"));
        assert!(name_matches("%", "%"));
        assert!(name_matches("a%2", "a%2"));
        assert!(name_matches("%zz", "%zz"));
        assert!(!name_matches("idx", "id"));
        assert!(!name_matches("i", "id"));
    }
}
