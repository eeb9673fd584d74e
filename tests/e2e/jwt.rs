//! JWT authorizers on user routes: tokens signed with RSA (fixture keys) and EC (generated
//! here) keys, a JWKS from a file (read by `nimbus deploy`) and from a URL (served by
//! another function's URL); API Gateway's 401/403 answers and the claims in the event.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use nimbus_tests::*;
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test/";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/jwt").join(name)).unwrap()
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct Keys {
    rsa_a: EncodingKey,
    rsa_b: EncodingKey,
    ec: EncodingKey,
    jwks: Value,
}

fn keys() -> Keys {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = ec.public_key_raw();
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    let mut jwks: Value = serde_json::from_str(&fixture("jwks-rsa-a.json")).unwrap();
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
    }));
    Keys {
        rsa_a: EncodingKey::from_rsa_pem(fixture("rsa-a.pem").as_bytes()).unwrap(),
        rsa_b: EncodingKey::from_rsa_pem(fixture("rsa-b.pem").as_bytes()).unwrap(),
        ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        jwks,
    }
}

fn token(key: &EncodingKey, alg: Algorithm, kid: &str, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, &claims, key).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": "orders-api", "sub": "user-1",
        "iat": now(), "exp": now() + 600, "scope": "orders:read profile",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

const HANDLER: &str = "exports.handler = async (e) => ({ statusCode: 200, \
    headers: { 'content-type': 'application/json' }, \
    body: JSON.stringify({ auth: e.requestContext.authorizer || null, route: e.routeKey }) });";
const JWKS_HANDLER: &str = "const jwks = require('./jwks.json'); \
    exports.handler = async () => ({ statusCode: 200, \
    headers: { 'content-type': 'application/json' }, body: JSON.stringify(jwks) });";

fn get(s: &Server, path: &str, bearer: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = s.http.get(s.url(path));
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, www, r.json().unwrap_or(Value::Null))
}

#[test]
fn jwt_authorizer_guards_routes_and_passes_claims() {
    let s = Server::start(&[]);
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"
[authorizers.main]
issuer = "{ISSUER}"
audience = ["orders-api"]
jwks_file = "keys/jwks.json"

[authorizers.remote]
issuer = "{ISSUER}"
audience = ["orders-api"]
jwks_url = "{base}/fn/jwks/"

[functions.orders]
runtime = "nodejs20.x"
handler = "index.handler"
code = "orders"
routes = [
  "GET /open",
  {{ route = "GET /orders", authorizer = "main", scopes = ["orders:read", "orders:admin"] }},
  {{ route = "GET /remote", authorizer = "remote" }},
]

[functions.jwks]
runtime = "nodejs20.x"
handler = "index.handler"
code = "jwks"
url = true
"#,
        base = s.base()
    );
    let jwks_text = k.jwks.to_string();
    write_files(
        dir.path(),
        &[
            ("nimbus.toml", &manifest),
            ("keys/jwks.json", &jwks_text),
            ("orders/index.js", HANDLER),
            ("jwks/index.js", JWKS_HANDLER),
            ("jwks/jwks.json", &jwks_text),
        ],
    );
    cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();

    // The stored configuration carries the keys, not the client's file name.
    let (_, f) = s.get_json("/v1/functions/orders");
    let a = &f["config"]["authorizers"]["main"];
    assert!(a["jwks_file"].is_null(), "{f}");
    assert_eq!(a["jwks"]["keys"].as_array().unwrap().len(), 2, "{f}");

    let (st, _, _) = get(&s, "/open", None);
    assert_eq!(st, 200, "a route without an authorizer stays open");

    // Refusals, as API Gateway answers them.
    let unauthorized = |t: Option<&str>, why: &str| {
        let (st, www, body) = get(&s, "/orders", t);
        assert_eq!(st, 401, "{why}: {body}");
        assert_eq!(body, json!({"message": "Unauthorized"}), "{why}");
        assert!(www.unwrap().starts_with("Bearer"), "{why}");
    };
    unauthorized(None, "missing token");
    unauthorized(Some("not.a.jwt"), "garbage token");
    let rs = |c: Value| token(&k.rsa_a, Algorithm::RS256, "rsa-a", c);
    unauthorized(
        Some(&rs(claims(json!({"exp": now() - 3600})))),
        "expired token",
    );
    unauthorized(
        Some(&rs(claims(json!({"nbf": now() + 3600})))),
        "not yet valid token",
    );
    unauthorized(
        Some(&rs(claims(json!({"aud": "billing-api"})))),
        "wrong audience",
    );
    unauthorized(
        Some(&rs(claims(json!({"iss": "https://evil.test/"})))),
        "wrong issuer",
    );
    unauthorized(
        Some(&token(
            &k.rsa_b,
            Algorithm::RS256,
            "rsa-a",
            claims(json!({})),
        )),
        "signed by another key",
    );
    unauthorized(
        Some(&token(
            &k.rsa_a,
            Algorithm::RS256,
            "unknown",
            claims(json!({})),
        )),
        "unknown kid",
    );
    let (st, www, body) = get(
        &s,
        "/orders",
        Some(&rs(claims(json!({"scope": "orders:write"})))),
    );
    assert_eq!((st, &body), (403, &json!({"message": "Forbidden"})));
    assert!(www.is_none());

    // A valid RS256 token reaches the function with its claims and scopes.
    let (st, _, body) = get(&s, "/orders", Some(&rs(claims(json!({})))));
    assert_eq!(st, 200, "{body}\n{}", s.log());
    let jwt = &body["auth"]["jwt"];
    assert_eq!(jwt["claims"]["sub"], "user-1", "{body}");
    assert_eq!(jwt["claims"]["iss"], ISSUER);
    assert!(
        jwt["claims"]["exp"].is_string(),
        "claims are strings: {body}"
    );
    assert_eq!(jwt["scopes"], json!(["orders:read", "profile"]));
    assert_eq!(body["route"], "GET /orders");

    // ES256, `client_id` instead of `aud`, scopes in `scp`.
    let es = token(
        &k.ec,
        Algorithm::ES256,
        "ec-1",
        claims(
            json!({"aud": null, "client_id": "orders-api", "scope": null, "scp": ["orders:admin"]}),
        ),
    );
    let (st, _, body) = get(&s, "/orders", Some(&es));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["auth"]["jwt"]["claims"]["client_id"], "orders-api");

    // JWKS from a URL (another function's URL), fetched and cached by the server.
    let (st, _, body) = get(&s, "/remote", Some(&rs(claims(json!({})))));
    assert_eq!(st, 200, "{body}\n{}", s.log());
    assert_eq!(body["auth"]["jwt"]["claims"]["sub"], "user-1");
    let (st, _, _) = get(
        &s,
        "/remote",
        Some(&token(
            &k.rsa_b,
            Algorithm::RS256,
            "rsa-a",
            claims(json!({})),
        )),
    );
    assert_eq!(st, 401);
}

#[test]
fn authorizer_configs_are_validated() {
    let s = Server::start(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["routes"] = json!(["GET /x"]);
    cfg["authorizers"] = json!({"main": {"issuer": "i", "audience": ["a"], "jwks_file": "k.json"}});
    cfg["route_settings"] = json!({"GET /x": {"authorizer": "main"}});
    let (st, body) = s.deploy_zip("bad", cfg.clone(), &zip_files(&[("index.js", HANDLER)]));
    assert_eq!(st, 400, "the server cannot read client files: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("jwks_file"),
        "{body}"
    );
    cfg["authorizers"]["main"] = json!({"issuer": "i", "audience": ["a"], "jwks": {"keys": []}});
    let (st, body) = s.deploy_zip("bad", cfg.clone(), &zip_files(&[("index.js", HANDLER)]));
    assert_eq!(st, 400, "{body}");
    cfg["route_settings"] = json!({"GET /x": {"authorizer": "other"}});
    let (st, body) = s.deploy_zip("bad", cfg, &zip_files(&[("index.js", HANDLER)]));
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["type"], "InvalidParameterValueException");
}
