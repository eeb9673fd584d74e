//! Access keys, SigV4 and least-privilege policies, end to end against a server started with
//! `--auth on`: Lambda-shaped 403s, an `orders-*` key, AddPermission, function URLs with
//! `AuthType AWS_IAM`, the CLI signing, and `--auth off` refused on a public listener.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

const HANDLER: &str =
    "exports.handler = async (e) => ({ fn: process.env.AWS_LAMBDA_FUNCTION_NAME, e });";

fn deploy(s: &Server, name: &str, creds: &Credentials) {
    let (status, body) = s.deploy_signed(
        name,
        node_cfg("index.handler"),
        &[("index.js", HANDLER)],
        creds,
    );
    assert!(status < 300, "deploy {name}: {status} {body}\n{}", s.log());
}

/// Status, `x-amzn-ErrorType` and JSON body of a reply.
fn refused(r: reqwest::blocking::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, kind, r.json().unwrap_or(Value::Null))
}

fn assert_refused(r: reqwest::blocking::Response, kind: &str, message_starts: &str) -> Value {
    let (status, k, body) = refused(r);
    assert_eq!(status, 403, "{body}");
    assert_eq!(k, kind, "{body}");
    assert_eq!(body["type"], kind, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(message_starts), "{message}");
    assert_eq!(body["Message"], message);
    body
}

#[test]
fn unsigned_bad_expired_and_unknown_requests_get_lambda_shaped_403s() {
    let s = Server::start_with_auth(&[]);
    let admin = s.admin();
    assert!(admin.id.starts_with("AKIA") && admin.id.len() == 20);
    assert_eq!(admin.secret.len(), 40);
    // The credentials file is private, and the key was announced once.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data_path().join("credentials"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(s.log().contains("created the bootstrap admin key"));

    // Health stays open; the APIs do not.
    assert!(s.healthy());
    for path in [
        "/2015-03-31/functions/",
        "/v1/functions",
        "/v1/secrets",
        "/v1/keys",
    ] {
        assert_refused(
            s.http.get(s.url(path)).send().unwrap(),
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    }
    assert_refused(
        s.http
            .get(s.url("/2015-03-31/functions/"))
            .header("authorization", "AWS4-HMAC-SHA256 Credential=x")
            .send()
            .unwrap(),
        "IncompleteSignatureException",
        "Authorization header requires",
    );
    let wrong_secret = Credentials {
        id: admin.id.clone(),
        secret: "x".repeat(40),
    };
    assert_refused(
        s.signed("GET", "/2015-03-31/functions/", b"", &wrong_secret),
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided.",
    );
    let old = time::OffsetDateTime::now_utc() - time::Duration::minutes(20);
    assert_refused(
        s.signed_at(
            "GET",
            "/2015-03-31/functions/",
            b"",
            &[],
            &admin,
            "lambda",
            Some(old),
        ),
        "InvalidSignatureException",
        "Signature expired: ",
    );
    let unknown = Credentials {
        id: "AKIAAAAAAAAAAAAAAAAA".into(),
        secret: admin.secret.clone(),
    };
    assert_refused(
        s.signed("GET", "/2015-03-31/functions/", b"", &unknown),
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    );
    // A signed body that was changed on the way is refused too.
    let path = "/2015-03-31/functions/nope/invocations";
    let host = format!("127.0.0.1:{}", s.port);
    let headers = vec![("host".to_string(), host)];
    let hash = nimbus_auth::sigv4::payload_hash(b"{}");
    let added = nimbus_auth::sigv4::sign(
        &nimbus_auth::sigv4::Request {
            method: "POST",
            path,
            query: "",
            headers: &headers,
            payload_sha256: &hash,
        },
        &admin.id,
        &admin.secret,
        "us-east-1",
        "lambda",
        time::OffsetDateTime::now_utc(),
    );
    let mut req = s.http.post(s.url(path)).body("{\"x\":1}");
    for (k, v) in added {
        req = req.header(k, v);
    }
    assert_refused(
        req.send().unwrap(),
        "InvalidSignatureException",
        "The provided 'x-amz-content-sha256' header does not match",
    );

    // The right key works; a master key rotation re-encrypts it and a restart (with the
    // rewritten key file) keeps it, without a second bootstrap key.
    let r = s.signed("GET", "/2015-03-31/functions/", b"", &admin);
    assert_eq!(r.status().as_u16(), 200);
    use base64::Engine as _;
    let new_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let r = s.signed_at(
        "POST",
        "/v1/secrets/rotate",
        json!({ "new_key": new_key }).to_string().as_bytes(),
        &[("content-type", "application/json")],
        &admin,
        "lambda",
        None,
    );
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let mut s = s;
    s.restart();
    assert_eq!(
        s.signed("GET", "/v1/functions", b"", &admin)
            .status()
            .as_u16(),
        200
    );
    // Shown once on the first start's stderr (the log file here holds stdout and stderr of
    // both starts), never logged again.
    assert_eq!(
        s.log().matches("created the bootstrap admin key").count(),
        1
    );
    assert_eq!(s.log().matches(&admin.secret).count(), 1);
}

#[test]
fn an_orders_key_invokes_orders_only_until_add_permission() {
    let s = Server::start_with_auth(&[]);
    let admin = s.admin();
    deploy(&s, "orders-api", &admin);
    deploy(&s, "billing", &admin);
    let orders = s.create_key(
        "orders",
        json!({"Statement": [{"Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                               "Resource": ["arn:aws:lambda:*:*:function:orders-*"]}]}),
    );

    let r = s.signed(
        "POST",
        "/2015-03-31/functions/orders-api/invocations",
        b"{}",
        &orders,
    );
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["fn"], "orders-api");

    assert_refused(
        s.signed(
            "POST",
            "/2015-03-31/functions/billing/invocations",
            b"{}",
            &orders,
        ),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/orders is not authorized to perform: \
         lambda:InvokeFunction on resource: arn:aws:lambda:us-east-1:000000000000:function:billing",
    );
    let create = json!({"FunctionName": "orders-new", "Runtime": "nodejs20.x",
                        "Handler": "index.handler", "Role": "arn:aws:iam::000000000000:role/x",
                        "Code": {"ZipFile": ""}});
    assert_refused(
        s.signed("POST", "/2015-03-31/functions", create.to_string().as_bytes(), &orders),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/orders is not authorized to perform: lambda:CreateFunction",
    );
    let (status, body) = s.deploy_signed(
        "orders-new",
        node_cfg("index.handler"),
        &[("index.js", HANDLER)],
        &orders,
    );
    assert_eq!(status, 403, "{body}");
    assert_refused(
        s.signed("GET", "/2015-03-31/functions/", b"", &orders),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/orders is not authorized to perform: lambda:ListFunctions on resource: *",
    );
    assert_refused(
        s.signed("GET", "/v1/keys", b"", &orders),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/orders is not authorized to perform: nimbus:Admin",
    );

    // AddPermission for the key's principal lets it invoke billing.
    let statement = json!({"StatementId": "orders-may-invoke", "Action": "lambda:InvokeFunction",
                           "Principal": "arn:aws:iam::000000000000:user/orders"});
    let r = s.signed(
        "POST",
        "/2015-03-31/functions/billing/policy",
        statement.to_string().as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    let r = s.signed(
        "POST",
        "/2015-03-31/functions/billing/invocations",
        b"{}",
        &orders,
    );
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["fn"], "billing");
    // ...but only invoke.
    assert_refused(
        s.signed("GET", "/2015-03-31/functions/billing", b"", &orders),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/orders is not authorized to perform: lambda:GetFunction",
    );

    // Listing keys never shows a secret; a removed key is unknown at once.
    let listed = s.signed("GET", "/v1/keys", b"", &admin).text().unwrap();
    assert!(listed.contains(&orders.id) && !listed.contains(&orders.secret));
    assert!(!listed.contains(&admin.secret));
    let r = s.signed("DELETE", &format!("/v1/keys/{}", orders.id), b"", &admin);
    assert_eq!(r.status().as_u16(), 204);
    assert_refused(
        s.signed(
            "POST",
            "/2015-03-31/functions/orders-api/invocations",
            b"{}",
            &orders,
        ),
        "UnrecognizedClientException",
        "The security token",
    );
    // The last admin key cannot be removed.
    let r = s.signed("DELETE", &format!("/v1/keys/{}", admin.id), b"", &admin);
    assert_eq!(r.status().as_u16(), 409);
}

#[test]
fn function_urls_with_aws_iam_need_a_signature() {
    let s = Server::start_with_auth(&[]);
    let admin = s.admin();
    deploy(&s, "private", &admin);
    deploy(&s, "public", &admin);
    for (name, auth_type) in [("private", "AWS_IAM"), ("public", "NONE")] {
        let r = s.signed(
            "POST",
            &format!("/2021-10-31/functions/{name}/url"),
            json!({ "AuthType": auth_type }).to_string().as_bytes(),
            &admin,
        );
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    }
    // NONE stays public.
    let r = s.http.post(s.url("/fn/public/")).body("hi").send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // AWS_IAM: unsigned, wrong service, a key without the permission → 403.
    assert_refused(
        s.http
            .post(s.url("/fn/private/"))
            .body("hi")
            .send()
            .unwrap(),
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_refused(
        s.signed_at(
            "POST",
            "/fn/private/x?a=1",
            b"hi",
            &[],
            &admin,
            "execute-api",
            None,
        ),
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'lambda'",
    );
    let invoker = s.create_key("invoker",
        json!({"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}),
    );
    assert_refused(
        s.signed("POST", "/fn/private/", b"hi", &invoker),
        "AccessDeniedException",
        "User: arn:aws:iam::000000000000:user/invoker is not authorized to perform: lambda:InvokeFunctionUrl",
    );
    // Signed by the admin (service lambda), it reaches the function, path and query intact.
    let r = s.signed("POST", "/fn/private/x/y?a=1", b"hi", &admin);
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["fn"], "private");
    assert_eq!(v["e"]["rawPath"], "/x/y");
    assert_eq!(v["e"]["body"], "hi");
    // A url-scoped resource policy admits the invoker.
    let statement = json!({"StatementId": "url", "Action": "lambda:InvokeFunctionUrl",
                           "Principal": "*", "FunctionUrlAuthType": "AWS_IAM"});
    let r = s.signed(
        "POST",
        "/2015-03-31/functions/private/policy",
        statement.to_string().as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 201);
    let r = s.signed("POST", "/fn/private/", b"hi", &invoker);
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn the_cli_signs_with_env_keys_or_the_data_dir_credentials() {
    let s = Server::start_with_auth(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("index.js", HANDLER)]);
    let code = dir.path().to_str().unwrap();
    // With the admin key in the environment (Server::cli sets it).
    cli_ok(&s.cli(&[
        "deploy",
        code,
        "--name",
        "hello",
        "--runtime",
        "nodejs20.x",
        "--handler",
        "index.handler",
    ]))
    .unwrap();
    let out = cli_ok(&s.cli(&["invoke", "hello", "--data", "{\"a\":1}"])).unwrap();
    assert!(out.contains("\"fn\":\"hello\""), "{out}");
    let created = cli_ok(&s.cli(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--policy",
        r#"{"Statement":[{"Effect":"Allow","Action":"lambda:Get*","Resource":"*"}]}"#,
    ]))
    .unwrap();
    let field = |k: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} missing: {created}"))
            .to_string()
    };
    let (id, secret) = (
        field("NIMBUS_ACCESS_KEY_ID="),
        field("NIMBUS_SECRET_ACCESS_KEY="),
    );
    let listed = cli_ok(&s.cli(&["keys", "ls"])).unwrap();
    assert!(listed.contains(&id) && listed.contains("ci") && !listed.contains(&secret));

    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(nimbus_bin());
        c.args(args)
            .current_dir(dir.path())
            .env("NIMBUS_ENDPOINT", s.base())
            .stdin(Stdio::null());
        for v in [
            "NIMBUS_ACCESS_KEY_ID",
            "NIMBUS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "NIMBUS_CREDENTIALS_FILE",
            "NIMBUS_DATA_DIR",
        ] {
            c.env_remove(v);
        }
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The narrow key (via the AWS variables) may read but not invoke; the CLI says what to do.
    let env = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    cli_ok(&run(&env, &["ls"])).unwrap_err();
    let out = run(&env, &["invoke", "hello"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AccessDeniedException") && err.contains("hint:"),
        "{err}"
    );
    // No key at all: refused, with a hint about credentials.
    let out = run(&[], &["invoke", "hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("MissingAuthenticationTokenException") && err.contains("NIMBUS_ACCESS_KEY_ID"),
        "{err}"
    );
    // The data dir's credentials file (the default ./.nimbus, here through NIMBUS_DATA_DIR).
    let data = s.data_path();
    let out = run(
        &[("NIMBUS_DATA_DIR", data.to_str().unwrap())],
        &["invoke", "hello"],
    );
    assert!(cli_ok(&out).unwrap().contains("\"fn\":\"hello\""));
    std::fs::create_dir_all(dir.path().join(".nimbus")).unwrap();
    std::fs::copy(
        data.join("credentials"),
        dir.path().join(".nimbus/credentials"),
    )
    .unwrap();
    let out = run(&[], &["ls"]);
    assert!(cli_ok(&out).unwrap().contains("hello"));
}

#[test]
fn auth_off_is_refused_on_a_public_listener_and_warned_about() {
    let data = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["--auth", "off"], None),
        (vec![], Some(("NIMBUS_AUTH", "off"))),
    ] {
        let mut c = Command::new(nimbus_bin());
        c.args(["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
            .arg("--data-dir")
            .arg(data.path())
            .args(&args)
            .stdin(Stdio::null());
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--auth off is for local development only"),
            "{err}"
        );
    }
    let s = Server::start(&[]);
    assert!(s.log().contains("authentication is OFF"), "{}", s.log());
    assert!(!s.data_path().join("credentials").exists());
    // With auth off the API is open.
    assert_eq!(s.get_json("/v1/functions").0, 200);
}

#[test]
fn each_access_key_has_its_own_rate_limit_bucket() {
    let s = Server::start_with_auth(&["--rate-limit", "1:3"]);
    let admin = s.admin();
    let other = s.create_key(
        "other",
        json!({"Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]}),
    );
    // The admin key spends its bucket (3 tokens, one back per second)…
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = s.signed("GET", "/2015-03-31/functions", b"", &admin);
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let body: Value = r.json().unwrap();
            assert_eq!(body["Reason"], "CallerRateLimitExceeded", "{body}");
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 2,
        "{statuses:?}"
    );
    // …while another key, from the same address, still has all of its own.
    for _ in 0..2 {
        let r = s.signed("GET", "/2015-03-31/functions", b"", &other);
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    }
}
