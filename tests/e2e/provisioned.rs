//! Provisioned concurrency: instances started and initialised before any call, used by the
//! first call (no cold start), gone when the config is, back after a restart, following
//! the alias; and the API's errors.

use base64::Engine;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const PC: &str = "/2019-09-30/functions";

/// The log stream names (instance identities) of every running instance of `function`:
/// host processes whose environment names the function.
fn instances_of(function: &str) -> BTreeSet<String> {
    let fn_var = format!("AWS_LAMBDA_FUNCTION_NAME={function}");
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if !pid_alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&fn_var) {
            continue;
        }
        if let Some(id) = vars
            .iter()
            .find_map(|v| v.strip_prefix("AWS_LAMBDA_LOG_STREAM_NAME="))
        {
            out.insert(id.to_string());
        }
    }
    out
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
