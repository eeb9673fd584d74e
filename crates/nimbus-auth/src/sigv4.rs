//! AWS Signature Version 4 (header form), as boto3 and the AWS CLI send it:
//!
//! ```text
//! Authorization: AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request,
//!                SignedHeaders=host;x-amz-date, Signature=<64 hex>
//! X-Amz-Date: 20150830T123600Z
//! ```
//!
//! The canonical request is AWS's: the method, the URI path (dot segments and empty segments
//! removed, then every byte but the unreserved ones and `/` percent-encoded — applied to the
//! path *as sent*, so an ARN's `:` sent as `%3A` is signed as `%253A`, the double encoding AWS
//! uses for every service but S3), the query (each name and value decoded, re-encoded with
//! the unreserved set, sorted), the signed headers (lowercase names, values trimmed with
//! inner whitespace collapsed, repeated headers joined with `,`), the signed header list and
//! the hex SHA-256 of the payload.

use crate::AuthError;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request's `x-amz-date` may be from the server's clock, in seconds.
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// The SHA-256 of the empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest `Authorization` header parsed.
const MAX_HEADER: usize = 8 * 1024;

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, in the order the client signed them.
    pub signed_headers: Vec<String>,
    /// 32 bytes.
    pub signature: Vec<u8>,
}

impl Authorization {
    /// `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

fn incomplete(what: &str) -> AuthError {
    AuthError::Incomplete(format!(
        "Authorization header requires {what}. Authorization header format: \
         AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=HEX"
    ))
}

/// Parses an `Authorization` header value. Never panics, whatever the input.
pub fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    if value.len() > MAX_HEADER {
        return Err(incomplete("a value of at most 8 KB"));
    }
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with([' ', '\t']))
        .ok_or_else(|| incomplete("the algorithm AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| incomplete("key=value parameters separated by commas"))?;
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(incomplete("only Credential, SignedHeaders and Signature")),
        };
        if slot.replace(v.trim()).is_some() {
            return Err(incomplete("each parameter once"));
        }
    }
    let credential = credential.ok_or_else(|| incomplete("'Credential' parameter"))?;
    let signed = signed.ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
    let signature = signature.ok_or_else(|| incomplete("'Signature' parameter"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(incomplete(
            "a Credential of the form AKID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if akid.is_empty()
        || region.is_empty()
        || service.is_empty()
        || *terminator != "aws4_request"
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(incomplete(
            "a Credential of the form AKID/YYYYMMDD/REGION/SERVICE/aws4_request",
        ));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
    }) {
        return Err(incomplete(
            "SignedHeaders of lowercase header names separated by ';'",
        ));
    }
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| incomplete("a Signature of 64 hex digits"))?;
    Ok(Authorization {
        access_key_id: akid.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature,
    })
}

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub path: &'a str,
    /// The query as sent, without `?` (empty when there is none).
    pub query: &'a str,
    /// Every header, names in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

impl Request<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes every byte but the unreserved ones (and `/` when `keep_slash`).
pub fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// RFC 3986 dot-segment removal, also dropping empty segments (as AWS and botocore do).
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::from("/");
    s.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        s.push('/');
    }
    s
}

/// The canonical URI of a path as sent on the wire.
pub fn canonical_uri(path: &str) -> String {
    uri_encode(remove_dot_segments(path).as_bytes(), true)
}

/// The canonical query string of a query as sent on the wire.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(v: &str) -> String {
    v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request for `req` with the headers named in `signed_headers`.
pub fn canonical_request(req: &Request<'_>, signed_headers: &[String]) -> String {
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .header_values(name)
            .into_iter()
            .map(canonical_header_value)
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(req.payload_sha256);
    out
}

/// `AWS4-HMAC-SHA256\nAMZDATE\nSCOPE\nhex(sha256(canonical request))`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac
}

/// The derived signing key: HMAC chain over date, region, service and `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), region.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), service.as_bytes()).finalize();
    hmac(&k.into_bytes(), b"aws4_request")
        .finalize()
        .into_bytes()
        .into()
}

/// Hex signature of a string to sign.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(key, string_to_sign.as_bytes()).finalize().into_bytes())
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let date = time::Date::from_calendar_date(
        num(0..4)? as i32,
        time::Month::try_from(num(4..6)? as u8).ok()?,
        num(6..8)? as u8,
    )
    .ok()?;
    let tod =
        time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    Some(date.with_time(tod).assume_utc())
}

/// Checks `req` against the parsed `auth` header and the key's `secret`, at `now`:
/// `x-amz-date` present, signed `host`, the scope's date that of `x-amz-date`, the date within
/// 15 minutes of `now`, and the signature (compared in constant time).
pub fn verify(
    req: &Request<'_>,
    auth: &Authorization,
    secret: &str,
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    let amz_date = req.header_values("x-amz-date");
    let amz_date = amz_date.first().map(|s| s.trim()).ok_or_else(|| {
        AuthError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        )
    })?;
    let when = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Incomplete(format!(
            "X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z', got {amz_date:?}"
        ))
    })?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(AuthError::Expired(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..8]
        )));
    }
    let skew = (now - when).whole_seconds();
    if skew > MAX_SKEW_SECS {
        return Err(AuthError::Expired(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - time::Duration::seconds(MAX_SKEW_SECS)),
            format_amz_date(now)
        )));
    }
    if skew < -MAX_SKEW_SECS {
        return Err(AuthError::Expired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now + time::Duration::seconds(MAX_SKEW_SECS)),
            format_amz_date(now)
        )));
    }
    let creq = canonical_request(req, &auth.signed_headers);
    let sts = string_to_sign(amz_date, &auth.scope(), &creq);
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    hmac(&key, sts.as_bytes())
        .verify_slice(&auth.signature)
        .map_err(|_| AuthError::SignatureMismatch)
}

/// Signs a request: returns the headers to add (`x-amz-date`, `x-amz-content-sha256`,
/// `authorization`). `req.headers` must hold the `host` header the request will carry; the
/// signature covers `host`, `content-type` and every `x-amz-*` header present.
pub fn sign(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: OffsetDateTime,
) -> Vec<(&'static str, String)> {
    let amz_date = format_amz_date(now);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| {
            (k == "host" || k == "content-type" || k.starts_with("x-amz-"))
                && k != "x-amz-date"
                && k != "x-amz-content-sha256"
        })
        .collect();
    headers.push(("x-amz-date".into(), amz_date.clone()));
    headers.push(("x-amz-content-sha256".into(), req.payload_sha256.into()));
    let mut names: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    names.sort();
    names.dedup();
    let signing = Request {
        headers: &headers,
        ..*req
    };
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = string_to_sign(&amz_date, &scope, &canonical_request(&signing, &names));
    let sig = signature(&signing_key(secret, date, region, service), &sts);
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", req.payload_sha256.to_string()),
        (
            "authorization",
            format!(
                "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}",
                names.join(";")
            ),
        ),
    ]
}

/// Hex SHA-256 of `body`.
pub fn payload_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn at(s: &str) -> OffsetDateTime {
        parse_amz_date(s).unwrap()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vanilla_headers() -> Vec<(String, String)> {
        h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ])
    }

    fn suite_auth(signed: &str, sig: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={sig}"
        )
    }

    /// AWS's SigV4 test suite (`aws-sig-v4-test-suite`): get-vanilla,
    /// get-vanilla-query-order-key-case, post-vanilla, get-slash-dot-slash and get-slashes.
    #[test]
    fn aws_test_suite_vectors() {
        let headers = vanilla_headers();
        let now = at("20150830T123600Z");
        for (method, path, query, sig) in [
            (
                "GET",
                "/",
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "/",
                "Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "POST",
                "/",
                "",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            // get-slash-dot-slash and get-slashes normalise to the vanilla request.
            (
                "GET",
                "/./",
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "GET",
                "//",
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ] {
            let req = Request {
                method,
                path,
                query,
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            };
            let auth = parse_authorization(&suite_auth("host;x-amz-date", sig)).unwrap();
            assert_eq!(auth.access_key_id, AKID);
            verify(&req, &auth, SECRET, now).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            // The signer produces the same signature.
            let added = sign(&req, AKID, SECRET, "us-east-1", "service", now);
            let signed_auth = &added[2].1;
            assert!(
                signed_auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"),
                "{signed_auth}"
            );
        }
        // get-vanilla's canonical request and string to sign, as published.
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let creq = canonical_request(&req, &["host".into(), "x-amz-date".into()]);
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(
                "20150830T123600Z",
                "20150830/us-east-1/service/aws4_request",
                &creq
            ),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    /// A Lambda Invoke with an ARN in the path and a `$` in the query, signed by botocore
    /// 1.43 (`SigV4Auth(creds, "lambda", "us-east-1")`): the path's `%3A` is signed as `%253A`.
    #[test]
    fn botocore_lambda_vector_with_arn_path() {
        let headers = h(&[
            ("content-type", "application/json"),
            ("x-amz-invocation-type", "RequestResponse"),
            ("x-amz-date", "20261127T075243Z"),
            ("host", "127.0.0.1:8080"),
        ]);
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aorders-api/invocations";
        let body_hash = payload_hash(br#"{"a": 1}"#);
        let req = Request {
            method: "POST",
            path,
            query: "Qualifier=%24LATEST",
            headers: &headers,
            payload_sha256: &body_hash,
        };
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/lambda/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-invocation-type, \
             Signature=0541d111f3fafdbf4da158f411a952e34a50ff36d82979a48c18e8a02ea79437",
        )
        .unwrap();
        assert_eq!(auth.service, "lambda");
        verify(&req, &auth, SECRET, at("20261127T080000Z")).unwrap();
        assert!(canonical_uri(path).contains("arn%253Aaws%253Alambda"));
        // Any change breaks it: the body, the path, the query, a signed header, the key.
        let other = payload_hash(br#"{"a": 2}"#);
        let bad = [
            Request {
                payload_sha256: &other,
                ..req
            },
            Request {
                path: "/2015-03-31/functions/orders-api/invocations",
                ..req
            },
            Request {
                query: "Qualifier=1",
                ..req
            },
        ];
        for r in bad {
            assert_eq!(
                verify(&r, &auth, SECRET, at("20261127T080000Z")),
                Err(AuthError::SignatureMismatch)
            );
        }
        assert_eq!(
            verify(&req, &auth, "wrong", at("20261127T080000Z")),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn dates_outside_fifteen_minutes_are_refused() {
        let headers = vanilla_headers();
        let req = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        let auth = parse_authorization(&suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ))
        .unwrap();
        verify(&req, &auth, SECRET, at("20150830T125000Z")).unwrap();
        let e = verify(&req, &auth, SECRET, at("20150830T125200Z")).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "Signature expired: 20150830T123600Z is now earlier than 20150830T123700Z"
            ),
            "{e}"
        );
        let e = verify(&req, &auth, SECRET, at("20150830T120000Z")).unwrap_err();
        assert!(
            e.to_string().starts_with("Signature not yet current"),
            "{e}"
        );
    }

    #[test]
    fn signer_and_verifier_agree() {
        let now = at("20260101T000000Z");
        let mut headers = h(&[
            ("host", "127.0.0.1:9000"),
            ("content-type", "application/json"),
            ("user-agent", "x"),
        ]);
        let body = payload_hash(b"{}");
        let base = headers.clone();
        let req = Request {
            method: "PUT",
            path: "/v1/functions/a%20b",
            query: "limit=10&after=0",
            headers: &base,
            payload_sha256: &body,
        };
        let added = sign(&req, "AKIAEXAMPLE", "s3cr3t", "us-east-1", "lambda", now);
        for (k, v) in added {
            headers.push((k.to_string(), v));
        }
        let auth_value = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
            .clone();
        let auth = parse_authorization(&auth_value).unwrap();
        let req = Request {
            headers: &headers,
            ..req
        };
        verify(&req, &auth, "s3cr3t", now).unwrap();
    }

    /// The fuzz target's checks on stable: byte-level mutants of a valid header and of
    /// request parts (fixed-seed PRNG) never panic, and the signer's output always verifies.
    #[test]
    fn mutated_inputs_never_panic_and_signatures_round_trip() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        let alphabet = b"AWS4-HMAC-SHA256 Credential=/,;=%:?&.~ \t\n\xff\x00azAZ09";
        let now = at("20150830T123600Z");
        for _ in 0..3000 {
            let mut bytes = valid.clone().into_bytes();
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % (bytes.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if i < bytes.len() => bytes[i] = c,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, c),
                }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let path = format!(
                "/{}",
                text.chars()
                    .take((next() % 40) as usize)
                    .collect::<String>()
            );
            let query = text
                .chars()
                .rev()
                .take((next() % 30) as usize)
                .collect::<String>();
            let headers = h(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
                ("x-amz-meta", &text),
            ]);
            let req = Request {
                method: "GET",
                path: &path,
                query: &query,
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            };
            if let Ok(auth) = parse_authorization(&text) {
                let _ = verify(&req, &auth, SECRET, now);
            }
            // The signer's headers replace the request's own `x-amz-date`, as a client does.
            let mut signed: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| k != "x-amz-date")
                .cloned()
                .collect();
            for (k, v) in sign(&req, AKID, SECRET, "us-east-1", "lambda", now) {
                signed.push((k.to_string(), v));
            }
            let header = signed.last().unwrap().1.clone();
            let auth = parse_authorization(&header).unwrap();
            let req = Request {
                headers: &signed,
                ..req
            };
            assert_eq!(
                verify(&req, &auth, SECRET, now),
                Ok(()),
                "{path:?} {query:?}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_incomplete_not_panics() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 ",
            "Bearer abc",
            "AWS4-HMAC-SHA256X Credential=a/20150830/r/s/aws4_request",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request",
            "AWS4-HMAC-SHA256 Credential=a/2015083/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=Host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, Credential=b, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=/20150830/r/s/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert!(
                matches!(parse_authorization(bad), Err(AuthError::Incomplete(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_amz_date("20151330T000000Z"), None);
        assert_eq!(parse_amz_date("2015083OT000000Z"), None);
        assert_eq!(parse_amz_date("20150830T2400002"), None);
        assert_eq!(canonical_query("a=%zz&b=%4"), "a=%25zz&b=%254");
        assert_eq!(canonical_query("Param1"), "Param1=");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/../../b/./c//"), "/b/c/");
    }
}
