//! Arbitrary bytes as the parts of a signed request: the `Authorization` header, the path,
//! the query, the `x-amz-date` header and a header value are split out of the input and fed
//! to the SigV4 parser, the canonical-request builder and the verifier. None of it may panic;
//! a header that parses must re-verify deterministically, and the signer's output for the
//! same parts must verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_auth::sigv4::{self, Request};
use nimbus_auth::{policy, Policy};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Fields separated by NUL: authorization, path, query, x-amz-date, another header value.
    let mut parts = text.split('\0');
    let authorization = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let query = parts.next().unwrap_or("");
    let amz_date = parts.next().unwrap_or("20150830T123600Z");
    let other = parts.next().unwrap_or("");

    let _ = sigv4::parse_amz_date(amz_date);
    let _ = sigv4::canonical_uri(path);
    let _ = sigv4::canonical_query(query);
    let headers = vec![
        ("host".to_string(), "example.amazonaws.com".to_string()),
        ("x-amz-date".to_string(), amz_date.to_string()),
        ("x-other".to_string(), other.to_string()),
    ];
    let req = Request {
        method: "POST",
        path,
        query,
        headers: &headers,
        payload_sha256: sigv4::EMPTY_SHA256,
    };
    let now = sigv4::parse_amz_date("20150830T123600Z").expect("valid date");
    if let Ok(auth) = sigv4::parse_authorization(authorization) {
        let _ = sigv4::canonical_request(&req, &auth.signed_headers);
        let first = sigv4::verify(&req, &auth, SECRET, now);
        assert_eq!(first, sigv4::verify(&req, &auth, SECRET, now));
    }
    // What the signer makes for these parts verifies.
    let base = vec![
        ("host".to_string(), "example.amazonaws.com".to_string()),
        ("x-amz-other".to_string(), other.to_string()),
    ];
    let signing = Request { headers: &base, ..req };
    let added = sigv4::sign(&signing, "AKIDEXAMPLE", SECRET, "us-east-1", "lambda", now);
    let mut signed = base.clone();
    signed.extend(added.into_iter().map(|(k, v)| (k.to_string(), v)));
    let header = signed
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .expect("the signer adds authorization");
    let auth = sigv4::parse_authorization(&header).expect("the signer's header parses");
    let req = Request { headers: &signed, ..signing };
    assert_eq!(sigv4::verify(&req, &auth, SECRET, now), Ok(()));

    // Policies and the wildcard matcher take untrusted text too.
    if let Ok(p) = Policy::parse(&text) {
        let _ = p.evaluate("lambda:InvokeFunction", path);
    }
    let _ = policy::glob(query, path);
});
