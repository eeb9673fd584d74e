//! Provisioned concurrency: instances started and initialised before any call, used by the
//! first call (no cold start), gone when the config is, back after a restart, following
//! the alias; and the API's errors.

use base64::Engine;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const PC: &str = "/2019-09-30/functions";

/// The log stream names (instance identities) of every running instance of `function`.
fn instances_of(function: &str) -> BTreeSet<String> {
    instance_processes(function)
        .into_iter()
        .map(|(_, stream)| stream)
        .collect()
}

/// SIGKILLs every process of the instance whose log stream name is `id`.
fn kill_instance(id: &str) {
    let needle = format!("AWS_LAMBDA_LOG_STREAM_NAME={id}\0");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let hit = std::fs::read(e.path().join("environ"))
            .map(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false);
        if hit {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn request(s: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = s.http.request(method.parse().unwrap(), s.url(path));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn put(s: &Server, function: &str, qualifier: &str, n: Value) -> (u16, Value) {
    request(
        s,
        "PUT",
        &format!("{PC}/{function}/provisioned-concurrency?Qualifier={qualifier}"),
        Some(&json!({ "ProvisionedConcurrentExecutions": n })),
    )
}

fn get(s: &Server, function: &str, qualifier: &str) -> (u16, Value) {
    s.get_json(&format!(
        "{PC}/{function}/provisioned-concurrency?Qualifier={qualifier}"
    ))
}

fn wait_ready(s: &Server, function: &str, qualifier: &str) -> Value {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(60), || {
        let (status, body) = get(s, function, qualifier);
        assert_eq!(status, 200, "{body}");
        assert_ne!(body["Status"], "FAILED", "{body}");
        last = body;
        last["Status"] == "READY"
    });
    assert!(ok, "never READY: {last}\n{}", s.log());
    last
}

fn wait_instances(function: &str, pred: impl Fn(&BTreeSet<String>) -> bool) -> BTreeSet<String> {
    let mut last = BTreeSet::new();
    let ok = eventually(Duration::from_secs(30), || {
        last = instances_of(function);
        pred(&last)
    });
    assert!(ok, "instances of {function}: {last:?}");
    last
}

const CODE: &str =
    "exports.handler = async () => ({ id: process.env.AWS_LAMBDA_LOG_STREAM_NAME, v: 1 });";

#[test]
fn provisioned_instances_are_ready_before_the_first_call_and_survive_a_restart() {
    let mut s = Server::start(&[]);
    let reply = s.deploy("warm", node_cfg("index.handler"), &[("index.js", CODE)]);
    assert_eq!(reply["version"], "1");
    let (status, alias) = request(
        &s,
        "POST",
        "/2015-03-31/functions/warm/aliases",
        Some(&json!({"Name": "live", "FunctionVersion": "1"})),
    );
    assert_eq!(status, 201, "{alias}");
    assert!(instances_of("warm").is_empty());

    let (status, body) = put(&s, "warm", "live", json!(2));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["RequestedProvisionedConcurrentExecutions"], 2);
    assert!(
        ["IN_PROGRESS", "READY"].contains(&body["Status"].as_str().unwrap()),
        "{body}"
    );
    assert!(body["LastModified"].is_string());
    let ready = wait_ready(&s, "warm", "live");
    assert_eq!(ready["AllocatedProvisionedConcurrentExecutions"], 2);
    assert_eq!(ready["AvailableProvisionedConcurrentExecutions"], 2);

    // Two initialised instances exist before any call.
    let before = wait_instances("warm", |i| i.len() == 2);

    // The first call runs on one of them, without a cold start.
    let r = s.invoke_with("warm:live", b"{}".to_vec(), &[("X-Amz-Log-Type", "Tail")]);
    let out = r.ok();
    let id = out["id"].as_str().unwrap().to_string();
    assert!(before.contains(&id), "{id} not in {before:?}");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-amz-log-result").expect("log result"))
        .unwrap();
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("REPORT RequestId"), "{tail}");
    assert!(!tail.contains("Init Duration"), "{tail}");
    // So does a call of the version itself; no instance was added.
    let out = s.invoke("warm:1", "{}").ok();
    assert!(before.contains(out["id"].as_str().unwrap()));
    assert_eq!(instances_of("warm"), before);

    // Listed with its ARN.
    let (status, list) = s.get_json(&format!("{PC}/warm/provisioned-concurrency?List=ALL"));
    assert_eq!(status, 200, "{list}");
    let configs = list["ProvisionedConcurrencyConfigs"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{list}");
    assert!(configs[0]["FunctionArn"]
        .as_str()
        .unwrap()
        .ends_with(":function:warm:live"));

    // One that dies is replaced.
    let victim = before.iter().next().unwrap().clone();
    kill_instance(&victim);
    let replaced = wait_instances("warm", |i| i.len() == 2 && !i.contains(&victim));
    wait_ready(&s, "warm", "live");
    let out = s.invoke("warm:live", "{}").ok();
    assert!(replaced.contains(out["id"].as_str().unwrap()));

    // A restart (kill -9) provisions again: new instances, before any call.
    s.restart();
    wait_ready(&s, "warm", "live");
    let after = wait_instances("warm", |i| i.len() == 2 && i.is_disjoint(&before));
    let out = s.invoke("warm:live", "{}").ok();
    assert!(after.contains(out["id"].as_str().unwrap()));

    // The alias moves to a new version: the instances follow.
    s.deploy(
        "warm",
        node_cfg("index.handler"),
        &[("index.js", &CODE.replace("v: 1", "v: 2"))],
    );
    let (status, body) = request(
        &s,
        "PUT",
        "/2015-03-31/functions/warm/aliases/live",
        Some(&json!({"FunctionVersion": "2"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_ready(&s, "warm", "live");
    let moved = wait_instances("warm", |i| i.len() == 2 && i.is_disjoint(&after));
    let out = s.invoke("warm:live", "{}").ok();
    assert_eq!(out["v"], 2);
    assert!(moved.contains(out["id"].as_str().unwrap()));

    // Deleting the config stops them (the instance that served the call is idle, on demand,
    // and may stay until the idle timeout: only the provisioned ones must go).
    let (status, _) = request(
        &s,
        "DELETE",
        &format!("{PC}/warm/provisioned-concurrency?Qualifier=live"),
        None,
    );
    assert_eq!(status, 204);
    let (status, body) = get(&s, "warm", "live");
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["type"],
        "ProvisionedConcurrencyConfigNotFoundException"
    );
    wait_instances("warm", |i| i.is_empty());
    s.restart();
    let (_, list) = s.get_json(&format!("{PC}/warm/provisioned-concurrency?List=ALL"));
    assert_eq!(list, json!({"ProvisionedConcurrencyConfigs": []}));
}

#[test]
fn provisioned_concurrency_errors() {
    let s = Server::start(&[]);
    s.deploy(
        "pcerr",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 1;")],
    );
    let check = |(status, body): (u16, Value), want_status: u16, want_type: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["type"], want_type, "{body}");
    };
    check(
        put(&s, "pcerr", "$LATEST", json!(1)),
        400,
        "InvalidParameterValueException",
    );
    check(
        request(
            &s,
            "PUT",
            &format!("{PC}/pcerr/provisioned-concurrency"),
            Some(&json!({"ProvisionedConcurrentExecutions": 1})),
        ),
        400,
        "InvalidParameterValueException",
    );
    check(
        put(&s, "nosuchfn", "1", json!(1)),
        404,
        "ResourceNotFoundException",
    );
    check(
        put(&s, "pcerr", "7", json!(1)),
        404,
        "ResourceNotFoundException",
    );
    check(
        put(&s, "pcerr", "nosuchalias", json!(1)),
        404,
        "ResourceNotFoundException",
    );
    for bad in [json!(0), json!(-1), json!("two"), json!(1.5), json!(100000)] {
        check(
            put(&s, "pcerr", "1", bad),
            400,
            "InvalidParameterValueException",
        );
    }
    check(
        get(&s, "pcerr", "1"),
        404,
        "ProvisionedConcurrencyConfigNotFoundException",
    );
    check(get(&s, "nosuchfn", "1"), 404, "ResourceNotFoundException");
    // A function that cannot initialise: FAILED with a reason.
    s.deploy(
        "pcbroken",
        node_cfg("index.handler"),
        &[("index.js", "throw new Error('broken at init');")],
    );
    let (status, body) = put(&s, "pcbroken", "1", json!(1));
    assert_eq!(status, 202, "{body}");
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            last = get(&s, "pcbroken", "1").1;
            last["Status"] == "FAILED"
        }),
        "{last}"
    );
    assert!(last["StatusReason"].as_str().unwrap().len() > 5, "{last}");
}

#[test]
fn provisioned_concurrency_from_the_cli() {
    let s = Server::start(&[]);
    s.deploy(
        "pccli",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 1;")],
    );
    let out = cli_ok(&s.cli(&["provisioned", "set", "pccli", "1", "1"])).unwrap();
    assert!(out.starts_with("pccli:1"), "{out}");
    assert!(eventually(Duration::from_secs(30), || {
        cli_ok(&s.cli(&["provisioned", "get", "pccli", "1"]))
            .unwrap()
            .contains("READY")
    }));
    assert_eq!(instances_of("pccli").len(), 1);
    let ls = cli_ok(&s.cli(&["provisioned", "ls", "pccli"])).unwrap();
    assert!(
        ls.starts_with("pccli:1 ") && ls.contains("1/1 initialised"),
        "{ls}"
    );
    cli_ok(&s.cli(&["provisioned", "rm", "pccli", "1"])).unwrap();
    wait_instances("pccli", |i| i.is_empty());
    let bad = s.cli(&["provisioned", "set", "pccli", "$LATEST", "1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidParameterValueException"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// GETs a function URL or route; the JSON the function returned.
fn http_get(s: &Server, path: &str) -> Value {
    let r = s.http.get(s.url(path)).send().unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(status, 200, "GET {path}: {body}\n{}", s.log());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

const MANIFEST: &str = r#"
[functions.pcman]
runtime = "nodejs20.x"
handler = "index.handler"
code = "src"
url = true
routes = ["GET /pcman"]
schedule = "rate(1 day)"
queue = { name = "pcjobs" }
provisioned_concurrency = 2

[queues.pcjobs]
"#;

/// The function ARNs (`name` or `name:qualifier`) the `pcjobs` mappings invoke, and the
/// targets of the function's schedule rule.
fn event_targets(s: &Server) -> (Vec<String>, String) {
    let (status, list) = s.get_json("/2015-03-31/event-source-mappings");
    assert_eq!(status, 200, "{list}");
    let mappings = list["EventSourceMappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["EventSourceArn"].as_str().unwrap().ends_with(":pcjobs"))
        .map(|m| {
            let arn = m["FunctionArn"].as_str().unwrap();
            arn.split_once(":function:").unwrap().1.to_string()
        })
        .collect();
    let (status, rule) = s.get_json("/v1/buses/default/rules/schedule-pcman");
    assert_eq!(status, 200, "{rule}");
    (mappings, rule["targets"].to_string())
}

#[test]
fn provisioned_concurrency_from_the_manifest() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let deploy = |manifest: &str, v: u32| {
        write_files(
            dir.path(),
            &[
                ("nimbus.toml", manifest),
                ("src/index.js", &CODE.replace("v: 1", &format!("v: {v}"))),
            ],
        );
        cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap()
    };

    // The deploy publishes version 1, points `live` at it and provisions it.
    let out = deploy(MANIFEST, 1);
    assert!(
        out.contains("version 1, ") && out.contains("alias live, 2 provisioned"),
        "{out}"
    );
    let (status, alias) = s.get_json("/2015-03-31/functions/pcman/aliases/live");
    assert_eq!((status, &alias["FunctionVersion"]), (200, &json!("1")));
    wait_ready(&s, "pcman", "live");
    let before = wait_instances("pcman", |i| i.len() == 2);
    // Its queue and schedule invoke the alias too.
    let (mappings, rule_targets) = event_targets(&s);
    assert_eq!(mappings, ["pcman:live"]);
    assert!(rule_targets.contains("pcman:live"), "{rule_targets}");

    // The URL and the route invoke the alias: its provisioned instances serve them.
    for path in ["/fn/pcman/", "/pcman"] {
        let out = http_get(&s, path);
        assert_eq!(out["v"], 1);
        assert!(before.contains(out["id"].as_str().unwrap()), "{out}");
    }
    assert_eq!(instances_of("pcman"), before);

    // A new deploy moves the alias; the provisioned instances follow it.
    let out = deploy(MANIFEST, 2);
    assert!(out.contains("version 2, "), "{out}");
    wait_ready(&s, "pcman", "live");
    let moved = wait_instances("pcman", |i| i.len() == 2 && i.is_disjoint(&before));
    let out = http_get(&s, "/fn/pcman/");
    assert_eq!(out["v"], 2);
    assert!(moved.contains(out["id"].as_str().unwrap()), "{out}");
    // Deploying the same again publishes nothing new and changes nothing.
    let out = deploy(MANIFEST, 2);
    assert!(out.contains("version 2, "), "{out}");
    assert_eq!(
        wait_ready(&s, "pcman", "live")["RequestedProvisionedConcurrentExecutions"],
        2
    );
    assert_eq!(instances_of("pcman"), moved);
    // A new count is a setting of the alias, not a new version: one more instance starts
    // beside the two.
    let out = deploy(&MANIFEST.replace("= 2", "= 3"), 2);
    assert!(out.contains("version 2, "), "{out}");
    assert!(out.contains("alias live, 3 provisioned"), "{out}");
    assert_eq!(
        wait_ready(&s, "pcman", "live")["AllocatedProvisionedConcurrentExecutions"],
        3
    );
    wait_instances("pcman", |i| i.len() == 3 && i.is_superset(&moved));
    let (_, versions) = s.get_json("/2015-03-31/functions/pcman/versions");
    assert_eq!(
        versions["Versions"].as_array().unwrap().len(),
        3,
        "{versions}"
    );

    // Dropping the key removes the config the manifest made; the URL invokes $LATEST.
    let plain = MANIFEST.replace("provisioned_concurrency = 2\n", "");
    let out = deploy(&plain, 3);
    assert!(!out.contains("alias"), "{out}");
    let (status, body) = get(&s, "pcman", "live");
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_get(&s, "/fn/pcman/")["v"], 3);
    assert_eq!(http_get(&s, "/pcman")["v"], 3);
    // The queue's mapping moved to $LATEST rather than gaining a second consumer.
    let (mappings, rule_targets) = event_targets(&s);
    assert_eq!(mappings, ["pcman"]);
    assert!(!rule_targets.contains("pcman:live"), "{rule_targets}");

    // An impossible count is refused before anything is deployed.
    let bad = MANIFEST.replace("= 2", "= 50");
    write_files(dir.path(), &[("nimbus.toml", &bad)]);
    let r = s.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("provisioned_concurrency"), "{err}");
}

/// Lambda's function URL on an alias (`Qualifier` on the URL config API).
#[test]
fn a_function_url_can_invoke_an_alias() {
    let s = Server::start(&[]);
    s.deploy("urlq", node_cfg("index.handler"), &[("index.js", CODE)]);
    let (status, body) = request(
        &s,
        "POST",
        "/2015-03-31/functions/urlq/aliases",
        Some(&json!({"Name": "live", "FunctionVersion": "1"})),
    );
    assert_eq!(status, 201, "{body}");
    let url_api = "/2021-10-31/functions/urlq/url";
    for (q, want_status) in [("?Qualifier=1", 400), ("?Qualifier=nosuch", 404)] {
        let (status, body) = request(&s, "POST", &format!("{url_api}{q}"), Some(&json!({})));
        assert_eq!(status, want_status, "{q}: {body}");
    }
    let (status, body) = request(
        &s,
        "POST",
        &format!("{url_api}?Qualifier=live"),
        Some(&json!({"AuthType": "NONE"})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        body["FunctionArn"]
            .as_str()
            .unwrap()
            .ends_with(":function:urlq:live"),
        "{body}"
    );
    // Found under its qualifier only; one URL per function.
    assert_eq!(s.get_json(url_api).0, 404);
    assert_eq!(s.get_json(&format!("{url_api}?Qualifier=live")).0, 200);
    assert_eq!(request(&s, "POST", url_api, Some(&json!({}))).0, 409);

    // $LATEST changes (UpdateFunctionCode, publishing version 2); the URL keeps invoking
    // what the alias points at.
    let zip = zip_files(&[("index.js", &CODE.replace("v: 1", "v: 2"))]);
    let (status, body) = request(
        &s,
        "PUT",
        "/2015-03-31/functions/urlq/code",
        Some(&json!({
            "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip),
            "Publish": true,
        })),
    );
    assert_eq!((status, &body["Version"]), (200, &json!("2")), "{body}");
    assert_eq!(http_get(&s, "/fn/urlq/")["v"], 1);
    let (status, body) = request(
        &s,
        "PUT",
        "/2015-03-31/functions/urlq/aliases/live",
        Some(&json!({"FunctionVersion": "2"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(&s, "/fn/urlq/")["v"], 2);

    let (status, _) = request(&s, "DELETE", &format!("{url_api}?Qualifier=live"), None);
    assert_eq!(status, 204);
    let r = s.http.get(s.url("/fn/urlq/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
