//! Response caching of function URLs and routes (`cache = { ttl, key }`, docs/api.md,
//! "Response caching") through the real binary: hits answered without invoking the
//! function (its own counter and `nimbus_invocations_total` unchanged), TTL expiry, key
//! selection, the function's `Cache-Control`, invalidation by a deploy, an alias move and
//! the flush API, the byte bound evicting the least recently used entry, identities never
//! sharing entries, and `Cache-Control: max-age=0` honoured only for a key allowed
//! `nimbus:InvalidateCache`.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use nimbus_tests::*;
use reqwest::blocking::Response;
use serde_json::{json, Value};
use std::time::Duration;

/// Counts its invocations (one instance: `concurrency = 1`); `?cc=` sets the response's
/// `Cache-Control`, `?pad=N` adds N bytes, `?status=` the status.
const COUNTER: &str = "let n = 0;
exports.handler = async (e) => {
  n += 1;
  const q = e.queryStringParameters || {};
  const headers = { 'content-type': 'application/json' };
  if (q.cc) headers['cache-control'] = q.cc;
  if (q.vary) headers['vary'] = q.vary;
  const claims = (e.requestContext.authorizer || {}).jwt;
  return { statusCode: q.status ? parseInt(q.status) : 200, headers, body: JSON.stringify({
    n, version: process.env.V || null, id: q.id || null, accept: (e.headers || {}).accept || null,
    sub: claims ? claims.claims.sub : null, pad: 'x'.repeat(parseInt(q.pad || '0')) }) };
};";

/// With the stores in PostgreSQL the server also sees its own deploy as a registry change
/// (its change poller, within a second) and then drops its whole cache (docs/api.md,
/// "Response caching"): a test waits for that before it fills the cache.
fn settle() {
    if test_backend_is_postgres() {
        std::thread::sleep(Duration::from_millis(1500));
    }
}

fn counter_cfg(extra: Value) -> Value {
    let mut c = json!({"runtime": "nodejs20.x", "handler": "index.handler", "concurrency": 1});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap());
    c
}

struct Answer {
    status: u16,
    cache: Option<String>,
    age: Option<u64>,
    body: Value,
}

impl Answer {
    fn of(r: Response) -> Answer {
        let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
        let (cache, age) = (h("x-nimbus-cache"), h("age").map(|a| a.parse().unwrap()));
        let status = r.status().as_u16();
        let body = r.json().unwrap_or(Value::Null);
        Answer {
            status,
            cache,
            age,
            body,
        }
    }

    fn n(&self) -> u64 {
        self.body["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("no n in {}", self.body))
    }

    fn hit(&self) -> bool {
        self.cache.as_deref() == Some("hit")
    }
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = s.http.get(s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Answer::of(req.send().unwrap())
}

/// The sum of `metric`'s samples whose labels include every one of `labels`.
fn metric(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(s: &Server) -> String {
    let r = match s.credentials {
        Some(_) => s.signed("GET", "/metrics", b"", &s.admin()),
        None => s.http.get(s.url("/metrics")).send().unwrap(),
    };
    assert_eq!(r.status().as_u16(), 200);
    r.text().unwrap()
}

fn invocations(s: &Server, function: &str) -> f64 {
    metric(
        &scrape(s),
        "nimbus_invocations_total",
        &[("function", function)],
    )
}

#[test]
fn cache_url_hits_ttl_keys_no_store_and_invalidation() {
    let s = Server::start(&[]);
    let cache = json!({"ttl": "2s", "key": ["query:id", "header:accept"]});
    s.deploy(
        "items",
        counter_cfg(json!({"url": true, "url_cache": cache, "env": {"V": "1"}})),
        &[("index.js", COUNTER)],
    );
    settle();
    // A miss, then hits: the same body, the function not invoked.
    let first = get(&s, "/fn/items/a?id=1", &[]);
    assert_eq!((first.status, first.cache.as_deref()), (200, Some("miss")));
    assert_eq!(first.n(), 1);
    let calls = invocations(&s, "items");
    assert_eq!(calls, 1.0);
    for _ in 0..5 {
        let again = get(&s, "/fn/items/a?id=1", &[]);
        assert!(again.hit(), "{:?}", again.cache);
        assert_eq!(again.body, first.body);
        assert!(again.age.is_some_and(|a| a <= 2));
    }
    // Parameters outside the key are ignored; those in it, the path, the chosen header
    // and the method tell entries apart.
    assert!(get(&s, "/fn/items/a?utm=x&id=1", &[]).hit());
    let other_id = get(&s, "/fn/items/a?id=2", &[]);
    assert_eq!((other_id.cache.as_deref(), other_id.n()), (Some("miss"), 2));
    assert!(!get(&s, "/fn/items/b?id=1", &[]).hit());
    let html = get(&s, "/fn/items/a?id=1", &[("accept", "text/html")]);
    assert_eq!(
        (html.cache.as_deref(), html.body["accept"].as_str()),
        (Some("miss"), Some("text/html"))
    );
    assert!(get(&s, "/fn/items/a?id=1", &[("accept", "text/html")]).hit());
    let post = s
        .http
        .post(s.url("/fn/items/a?id=1"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(
        post.headers().get("x-nimbus-cache"),
        None,
        "POST is never cached"
    );
    assert_eq!(invocations(&s, "items"), 5.0);

    // The function's Cache-Control: no-store, private and no-cache are not stored.
    for cc in ["no-store", "private", "no-cache", "max-age%3D0"] {
        let path = format!("/fn/items/cc?id={cc}&cc={cc}");
        let a = get(&s, &path, &[]);
        let b = get(&s, &path, &[]);
        assert_eq!(
            (a.cache.as_deref(), b.cache.as_deref()),
            (Some("miss"), Some("miss")),
            "{cc}"
        );
        assert_eq!(b.n(), a.n() + 1, "{cc}");
    }
    // Nor a status a CDN does not store, nor a Vary on a header outside the key.
    let path = "/fn/items/s?id=500&status=500";
    assert!(!get(&s, path, &[]).hit() && !get(&s, path, &[]).hit());
    let path = "/fn/items/v?id=v&vary=x-user";
    assert!(!get(&s, path, &[]).hit() && !get(&s, path, &[]).hit());
    let path = "/fn/items/v?id=v&vary=accept";
    assert!(!get(&s, path, &[]).hit() && get(&s, path, &[]).hit());

    // The TTL: 2 s.
    std::thread::sleep(Duration::from_millis(2100));
    let expired = get(&s, "/fn/items/a?id=1", &[]);
    assert_eq!(expired.cache.as_deref(), Some("miss"));
    assert!(expired.n() > first.n());
    assert!(get(&s, "/fn/items/a?id=1", &[]).hit());

    // A deploy (a new version) drops the function's entries.
    s.deploy(
        "items",
        counter_cfg(json!({"url": true, "url_cache": cache, "env": {"V": "2"}})),
        &[("index.js", COUNTER)],
    );
    settle();
    let deployed = get(&s, "/fn/items/a?id=1", &[]);
    assert_eq!(deployed.cache.as_deref(), Some("miss"));
    assert_eq!(deployed.body["version"], "2");
    assert!(get(&s, "/fn/items/a?id=1", &[]).hit());

    // The flush API drops them too (on a server without auth, anyone may).
    let r = s
        .http
        .delete(s.url("/v1/functions/items/cache"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let flushed: Value = r.json().unwrap();
    assert_eq!(flushed["function"], "items");
    assert!(flushed["flushed"].as_u64().unwrap() >= 1, "{flushed}");
    assert!(!get(&s, "/fn/items/a?id=1", &[]).hit());
    let r = s
        .http
        .delete(s.url("/v1/functions/nope/cache"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Hits and misses per function in the metrics.
    let text = scrape(&s);
    let hits = metric(
        &text,
        "nimbus_cache_requests_total",
        &[("function", "items"), ("result", "hit")],
    );
    let misses = metric(
        &text,
        "nimbus_cache_requests_total",
        &[("function", "items"), ("result", "miss")],
    );
    assert_eq!(hits, 10.0, "{text}");
    assert_eq!(
        misses,
        metric(
            &text,
            "nimbus_invocations_total",
            &[("function", "items"), ("trigger", "url")]
        ) - 1.0,
        "every GET that invoked the function was a miss (the POST was neither)\n{text}"
    );
    assert!(metric(&text, "nimbus_cache_entries", &[]) >= 1.0, "{text}");
    assert!(metric(&text, "nimbus_cache_bytes", &[]) > 0.0, "{text}");
}

#[test]
fn cache_routes_follow_alias_moves_and_reject_bad_settings() {
    let s = Server::start(&[]);
    let cfg = |v: &str| {
        counter_cfg(json!({
            "routes": ["GET /catalog/{id}"],
            "route_settings": {"GET /catalog/{id}": {"cache": {"ttl": "60s"}}},
            "alias": "live",
            "env": {"V": v},
        }))
    };
    s.deploy("catalog", cfg("1"), &[("index.js", COUNTER)]);
    settle();
    let a = get(&s, "/catalog/7", &[]);
    assert_eq!(
        (a.cache.as_deref(), a.body["version"].as_str()),
        (Some("miss"), Some("1"))
    );
    assert!(get(&s, "/catalog/7", &[]).hit());
    assert!(!get(&s, "/catalog/8", &[]).hit(), "the path is in the key");
    // Deploying version 2 moves the alias the route invokes: the entry goes with it.
    s.deploy("catalog", cfg("2"), &[("index.js", COUNTER)]);
    settle();
    let moved = get(&s, "/catalog/7", &[]);
    assert_eq!(
        (moved.cache.as_deref(), moved.body["version"].as_str()),
        (Some("miss"), Some("2"))
    );
    assert!(get(&s, "/catalog/7", &[]).hit());
    // Lambda's UpdateAlias back to version 1: invalidated again.
    let r = s
        .http
        .put(s.url("/2015-03-31/functions/catalog/aliases/live"))
        .json(&json!({"FunctionVersion": "1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let back = get(&s, "/catalog/7", &[]);
    assert_eq!(
        (back.cache.as_deref(), back.body["version"].as_str()),
        (Some("miss"), Some("1"))
    );

    // Invalid settings are refused with the API's JSON error.
    for (cache, want) in [
        (json!({"ttl": "2h"}), "ttl must be 1s to 3600s"),
        (
            json!({"key": ["cookie:session"]}),
            "key part \"cookie:session\"",
        ),
        (json!({"ttl": "soon"}), "invalid ttl"),
    ] {
        let mut c = cfg("3");
        c["route_settings"]["GET /catalog/{id}"]["cache"] = cache.clone();
        let (status, body) = s.deploy_zip("catalog", c, &zip_files(&[("index.js", COUNTER)]));
        assert_eq!(status, 400, "{cache}: {body}");
        assert_eq!(body["type"], "InvalidParameterValueException", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(want),
            "{cache}: {body}"
        );
    }
}

#[test]
fn cache_byte_bound_evicts_the_least_recently_used() {
    // 40,000 bytes in all, at most 5,000 per entry: about fifteen 2 KB answers.
    let s = Server::start(&["--cache-max-bytes", "40000"]);
    s.deploy(
        "big",
        counter_cfg(json!({"url": true, "url_cache": {"ttl": "300s", "key": ["query:id"]}})),
        &[("index.js", COUNTER)],
    );
    settle();
    // Ids and counters of one width: every entry has the same size, so one eviction
    // makes room (uncached POSTs take the function's counter to two digits first).
    for _ in 0..9 {
        let r = s.http.post(s.url("/fn/big/")).body("{}").send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let path = |id: u32| format!("/fn/big/?id={}&pad=2000", 100 + id);
    assert!(!get(&s, &path(1), &[]).hit());
    assert!(!get(&s, &path(2), &[]).hit());
    // 1 is used again: 2 is now the least recently used.
    assert!(get(&s, &path(1), &[]).hit());
    let evictions = |s: &Server| {
        metric(
            &scrape(s),
            "nimbus_cache_evictions_total",
            &[("function", "big")],
        )
    };
    let mut id = 3;
    while evictions(&s) == 0.0 {
        assert!(
            id < 40,
            "no eviction after {id} entries of 2 KB in 40,000 bytes"
        );
        assert!(!get(&s, &path(id), &[]).hit());
        id += 1;
    }
    assert!(id > 10, "evicted after only {id} entries");
    assert_eq!(evictions(&s), 1.0);
    let text = scrape(&s);
    assert!(
        metric(&text, "nimbus_cache_bytes", &[]) <= 40000.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "nimbus_cache_max_bytes", &[]),
        40000.0,
        "{text}"
    );
    // The least recently used went; the one used again and the newest stayed.
    assert!(get(&s, &path(1), &[]).hit());
    assert!(get(&s, &path(id - 1), &[]).hit());
    assert!(!get(&s, &path(2), &[]).hit());
    // An answer larger than an eighth of the bound is never stored.
    let huge = "/fn/big/?id=huge&pad=6000";
    assert!(!get(&s, huge, &[]).hit() && !get(&s, huge, &[]).hit());
}

const ISSUER: &str = "https://issuer.test/";

fn token(sub: &str) -> String {
    let key = std::fs::read_to_string(repo_root().join("tests/fixtures/jwt/rsa-a.pem")).unwrap();
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/jwt/jwks-rsa-a.json")).unwrap(),
    )
    .unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = jwks["keys"][0]["kid"].as_str().map(str::to_string);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": ISSUER, "aud": "api", "sub": sub, "iat": now, "exp": now + 600});
    encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn cache_keeps_identities_apart_and_lets_only_allowed_keys_invalidate() {
    let s = Server::start_with_auth(&[]);
    let jwks: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/jwt/jwks-rsa-a.json")).unwrap(),
    )
    .unwrap();
    let cfg = counter_cfg(json!({
        "url": true,
        "url_cache": {"ttl": "300s"},
        "routes": ["GET /me", "GET /shared"],
        "authorizers": {"main": {"issuer": ISSUER, "audience": ["api"], "jwks": jwks}},
        "route_settings": {
            "GET /me": {"authorizer": "main", "cache": {"ttl": "300s", "key": ["identity"]}},
            "GET /shared": {"authorizer": "main", "cache": {"ttl": "300s"}},
        },
    }));
    let (status, body) = s.deploy_signed("who", cfg, &[("index.js", COUNTER)], &s.admin());
    settle();
    assert!(status < 300, "{status} {body}");
    let (alice, bob) = (token("alice"), token("bob"));
    let bearer = |t: &str| format!("Bearer {t}");

    // A key with `identity`: each caller its own entry.
    let a1 = get(&s, "/me", &[("authorization", &bearer(&alice))]);
    assert_eq!(
        (a1.cache.as_deref(), a1.body["sub"].as_str()),
        (Some("miss"), Some("alice"))
    );
    let b1 = get(&s, "/me", &[("authorization", &bearer(&bob))]);
    assert_eq!(
        (b1.cache.as_deref(), b1.body["sub"].as_str()),
        (Some("miss"), Some("bob"))
    );
    let a2 = get(&s, "/me", &[("authorization", &bearer(&alice))]);
    assert!(a2.hit());
    assert_eq!(a2.body, a1.body);
    let b2 = get(&s, "/me", &[("authorization", &bearer(&bob))]);
    assert!(b2.hit());
    assert_eq!(b2.body["sub"], "bob");
    // A fresh token of the same subject is the same identity.
    let a3 = get(&s, "/me", &[("authorization", &bearer(&token("alice")))]);
    assert!(a3.hit() && a3.body == a1.body);
    // The authorizer still runs first: no token, no answer from the cache.
    assert_eq!(get(&s, "/me", &[]).status, 401);
    // Without `identity`, an authenticated route is never answered from the cache.
    let x = get(&s, "/shared", &[("authorization", &bearer(&alice))]);
    let y = get(&s, "/shared", &[("authorization", &bearer(&alice))]);
    assert_eq!(
        (x.cache.as_deref(), y.cache.as_deref()),
        (Some("miss"), Some("miss"))
    );
    assert_eq!(y.n(), x.n() + 1);
    // Nor a URL request carrying credentials.
    let x = get(&s, "/fn/who/", &[("authorization", "Bearer whatever")]);
    let y = get(&s, "/fn/who/", &[("authorization", "Bearer whatever")]);
    assert!(!x.hit() && !y.hit() && y.n() == x.n() + 1);

    // max-age=0: ignored for an anonymous caller and a key without the permission,
    // honoured for a key allowed nimbus:InvalidateCache on the function.
    let cached = get(&s, "/fn/who/", &[]);
    assert_eq!(cached.cache.as_deref(), Some("miss"));
    let hit = get(&s, "/fn/who/", &[("cache-control", "max-age=0")]);
    assert!(hit.hit() && hit.body == cached.body);
    let reader = s.create_key(
        "reader",
        json!({"Statement": [{"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": "*"}]}),
    );
    let invalidator = s.create_key(
        "invalidator",
        json!({"Statement": [{"Effect": "Allow", "Action": "nimbus:InvalidateCache",
            "Resource": "arn:aws:lambda:us-east-1:000000000000:function:who"}]}),
    );
    let signed = |creds: &Credentials| {
        Answer::of(s.signed_at(
            "GET",
            "/fn/who/",
            b"",
            &[("cache-control", "max-age=0")],
            creds,
            "lambda",
            None,
        ))
    };
    let refused = signed(&reader);
    assert!(
        !refused.hit(),
        "signed, so not served from the shared entry"
    );
    assert!(
        get(&s, "/fn/who/", &[]).body == cached.body,
        "the entry was not replaced"
    );
    let fresh = signed(&invalidator);
    assert_eq!(fresh.cache.as_deref(), Some("miss"));
    assert!(fresh.n() > cached.n());
    let after = get(&s, "/fn/who/", &[]);
    assert!(after.hit(), "{:?}", after.cache);
    assert_eq!(after.body, fresh.body, "the bypass replaced the entry");
    let text = scrape(&s);
    assert_eq!(
        metric(
            &text,
            "nimbus_cache_requests_total",
            &[("function", "who"), ("result", "bypass")]
        ),
        1.0,
        "{text}"
    );

    // The flush API needs the same permission.
    let r = s.signed("DELETE", "/v1/functions/who/cache", b"", &reader);
    assert_eq!(r.status().as_u16(), 403);
    let r = s.signed("DELETE", "/v1/functions/who/cache", b"", &invalidator);
    assert_eq!(r.status().as_u16(), 200);
    assert!(!get(&s, "/fn/who/", &[]).hit());
}
