//! Garbage collection of code packages (`DATA_DIR/code`): deleted functions' code does not
//! stay on disk, referenced code and code a running instance uses do, and orphans of a
//! crash are collected at start.

use base64::Engine;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Entries in `code/blobs` + `code/unpacked` + `code/tmp`, and the disk usage of `code/`
/// (like `du`: allocated blocks of every file and directory).
fn code_usage(data: &Path) -> (usize, u64) {
    fn du(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let mut total = m.blocks() * 512;
        // A collection may remove entries while this walks (`tmp/gc-*`): gone counts 0.
        if m.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    total += du(&e.path());
                }
            }
        }
        total
    }
    let code = data.join("code");
    let entries = ["blobs", "unpacked", "tmp"]
        .iter()
        .map(|d| std::fs::read_dir(code.join(d)).map_or(0, |r| r.count()))
        .sum();
    (entries, du(&code))
}

fn code_entries(data: &Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("code").join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn b64(zip: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(zip)
}

/// A Python package that returns `n` (different bytes for every `n`).
fn package(n: usize) -> Vec<u8> {
    zip_files(&[(
        "app.py",
        &format!("def handler(e, c):\n    return {{'n': {n}}}\n"),
    )])
}

fn send(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s.http.request(method.parse().unwrap(), s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn expect(s: &Server, what: &str, (status, body): (u16, Value), want: u16) -> Value {
    assert_eq!(status, want, "{what}: {body}\n{}", s.log());
    body
}

fn lambda_create(s: &Server, name: &str, zip: &[u8], publish: bool) {
    let body = json!({
        "FunctionName": name, "Runtime": "python3.11", "Handler": "app.handler",
        "Role": "arn:aws:iam::000000000000:role/x", "Code": { "ZipFile": b64(zip) },
        "Publish": publish,
    });
    expect(
        s,
        "CreateFunction",
        send(s, "POST", "/2015-03-31/functions", Some(body)),
        201,
    );
}

fn invoke_n(s: &Server, name: &str, want: usize) {
    assert_eq!(s.invoke(name, "{}").ok(), json!({ "n": want }), "{name}");
}

/// One create/invoke/delete cycle with code no earlier cycle had, by one of four paths
/// (`i % 4`): the native API and `nimbus rm`; CreateFunction/DeleteFunction; an
/// UpdateFunctionCode that replaces `$LATEST`'s code; versions deleted with a Qualifier.
fn cycle(s: &Server, i: usize) {
    let name = format!("gc{i}");
    let n = 10 * i;
    match i % 4 {
        0 => {
            s.deploy_zip(&name, python_cfg("app.handler"), &package(n));
            invoke_n(s, &name, n);
            cli_ok(&s.cli(&["rm", &name])).unwrap();
        }
        1 => {
            lambda_create(s, &name, &package(n), false);
            invoke_n(s, &name, n);
            let path = format!("/2015-03-31/functions/{name}");
            expect(s, "DeleteFunction", send(s, "DELETE", &path, None), 204);
        }
        2 => {
            lambda_create(s, &name, &package(n), false);
            invoke_n(s, &name, n);
            let path = format!("/2015-03-31/functions/{name}/code");
            let body = json!({ "ZipFile": b64(&package(n + 1)) });
            let reply = expect(
                s,
                "UpdateFunctionCode",
                send(s, "PUT", &path, Some(body)),
                200,
            );
            // The new code is `$LATEST`'s (checked without another cold start).
            let new_sha =
                base64::engine::general_purpose::STANDARD.encode(sha256_bytes(&package(n + 1)));
            assert_eq!(reply["CodeSha256"], new_sha.as_str(), "{reply}");
            let path = format!("/2015-03-31/functions/{name}");
            expect(s, "DeleteFunction", send(s, "DELETE", &path, None), 204);
        }
        _ => {
            let (status, _) = s.deploy_zip(&name, python_cfg("app.handler"), &package(n));
            assert_eq!(status, 201);
            let (status, reply) = s.deploy_zip(&name, python_cfg("app.handler"), &package(n + 1));
            assert_eq!((status, reply["version"].as_str()), (200, Some("2")));
            invoke_n(s, &format!("{name}:1"), n);
            for v in ["1", "2"] {
                let path = format!("/2015-03-31/functions/{name}?Qualifier={v}");
                expect(
                    s,
                    "DeleteFunction(Qualifier)",
                    send(s, "DELETE", &path, None),
                    204,
                );
            }
            let path = format!("/v1/functions/{name}");
            expect(s, "native delete", send(s, "DELETE", &path, None), 204);
        }
    }
}

/// Waits until `code/` holds at most `entries` entries and `bytes` bytes; the last usage.
fn settle(data: &Path, entries: usize, bytes: u64) -> (usize, u64) {
    let mut last = (0, 0);
    eventually(Duration::from_secs(20), || {
        last = code_usage(data);
        last.0 <= entries && last.1 <= bytes
    });
    last
}

#[test]
fn two_hundred_create_invoke_delete_cycles_leave_code_at_its_size() {
    let s = Server::start(&[]);
    let data = s.data_path();
    // A function that stays: its code must survive every collection.
    s.deploy_zip("keeper", python_cfg("app.handler"), &package(7));
    invoke_n(&s, "keeper", 7);

    // Warm-up: one-off files (runtimes, databases, caches) are in the baseline.
    for i in 0..4 {
        cycle(&s, 1000 + i);
    }
    let keeper_only = (2, u64::MAX); // its blob and its unpacked directory
    let start = settle(&data, keeper_only.0, keeper_only.1);
    assert_eq!(
        start.0,
        2,
        "only the keeper's package is left: {:?}",
        code_entries(&data, "blobs")
    );
    let pid = s.child.as_ref().unwrap().id();
    let rss_before = vm_rss_kb(pid);

    let t0 = Instant::now();
    let mut peak_entries = 0;
    let mut rss_samples = vec![rss_before];
    for i in 0..200 {
        cycle(&s, i);
        peak_entries = peak_entries.max(code_usage(&data).0);
        if i % 50 == 49 {
            rss_samples.push(vm_rss_kb(pid));
        }
    }
    let took = t0.elapsed();
    let within = |v: u64| v + v / 10;
    let end = settle(&data, within(start.0 as u64) as usize, within(start.1));
    let rss_after = vm_rss_kb(pid);
    eprintln!(
        "gc e2e: 200 cycles in {:.1} s ({:.0} ms/cycle); code/ {} entries {} KiB before, {} entries {} KiB after (at most {} entries during the run); server VmRSS {} KiB before, {} KiB after (every 50 cycles: {:?} KiB)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / 200.0,
        start.0,
        start.1 / 1024,
        end.0,
        end.1 / 1024,
        peak_entries,
        rss_before,
        rss_after,
        rss_samples,
    );
    assert!(
        end.0 <= within(start.0 as u64) as usize && end.1 <= within(start.1),
        "code/ grew from {start:?} to {end:?} (entries, bytes): blobs {:?}\n{}",
        code_entries(&data, "blobs"),
        s.log()
    );
    // Generous: the issue saw 57 → 87 MB; this catches unbounded per-function state.
    assert!(
        rss_after < rss_before + 40 * 1024,
        "server RSS grew from {rss_before} KiB to {rss_after} KiB over 200 cycles"
    );
    invoke_n(&s, "keeper", 7);
    assert!(
        s.log()
            .contains("code store: unreferenced packages collected"),
        "no start-up collection summary:\n{}",
        s.log()
    );
}

/// A deleted function's code stays while its instance still runs a call, which can read
/// its package to the end; it goes once the instance has stopped.
#[test]
fn code_of_a_deleted_function_stays_until_its_running_instance_stops() {
    let s = Server::start(&[]);
    let data = s.data_path();
    let big = "x".repeat(200_000);
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(20);
    let reply = s.deploy(
        "busy",
        cfg,
        &[
            (
                "app.py",
                "import os, time\ndef handler(e, c):\n    time.sleep(e['sleep'])\n    \
                 p = os.path.join(os.environ['LAMBDA_TASK_ROOT'], 'data.txt')\n    \
                 return {'len': len(open(p).read())}\n",
            ),
            ("data.txt", &big),
        ],
    );
    let sha = reply["function"]["code_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.invoke("busy", r#"{"sleep": 0}"#).ok(),
        json!({"len": 200_000})
    );

    let call = {
        let url = s.url("/2015-03-31/functions/busy/invocations");
        std::thread::spawn(move || {
            let r = reqwest::blocking::Client::new()
                .post(url)
                .body(r#"{"sleep": 3}"#)
                .send()
                .unwrap();
            (r.status().as_u16(), r.text().unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    expect(
        &s,
        "delete",
        send(&s, "DELETE", "/v1/functions/busy", None),
        204,
    );
    // Collections run meanwhile (the delete asks for one, retries follow); the tree stays.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        data.join("code/unpacked")
            .join(&sha)
            .join("data.txt")
            .is_file(),
        "the package was removed under a running instance"
    );
    let (status, body) = call.join().unwrap();
    assert_eq!(status, 200, "{body}\n{}", s.log());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"len": 200_000}),
        "{}",
        s.log()
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            !data.join("code/unpacked").join(&sha).exists()
                && !data.join("code/blobs").join(format!("{sha}.zip")).exists()
        }),
        "the package stayed after its instance stopped: {:?}",
        code_entries(&data, "unpacked")
    );
}

/// A deploy that stores its package and then fails (here: a route another function serves)
/// leaves nothing behind.
#[test]
fn a_failed_deploy_leaves_no_package() {
    let s = Server::start(&[]);
    let data = s.data_path();
    let mut cfg = python_cfg("app.handler");
    cfg["routes"] = json!(["GET /taken"]);
    s.deploy_zip("owner", cfg.clone(), &package(1));
    let before = code_entries(&data, "blobs");
    let (status, body) = s.deploy_zip("thief", cfg, &package(2));
    assert_eq!(status, 409, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || code_entries(&data, "blobs")
            == before),
        "{:?} != {before:?}",
        code_entries(&data, "blobs")
    );
    assert_eq!(code_entries(&data, "unpacked").len(), 1);
}

/// Files a crash left behind (a package stored but never committed: the server was killed
/// between writing the blob and the registry row; a collection interrupted half-way) are
/// removed at start; the packages the registry refers to stay and still run.
#[test]
fn restart_collects_what_a_crash_left_and_keeps_referenced_code() {
    let mut s = Server::start(&[]);
    let data = s.data_path();
    let v1 = s
        .deploy_zip("kept", python_cfg("app.handler"), &package(1))
        .1;
    let v2 = s
        .deploy_zip("kept", python_cfg("app.handler"), &package(2))
        .1;
    assert_eq!(v2["version"], "2");
    invoke_n(&s, "kept", 2);
    let referenced: Vec<String> = [&v1, &v2]
        .iter()
        .map(|r| r["function"]["code_sha256"].as_str().unwrap().to_string())
        .collect();

    // A package written as the store writes it, that no registry row names.
    let orphan = package(99);
    let sha = sha256_hex(&orphan);
    let code = data.join("code");
    std::fs::write(code.join("blobs").join(format!("{sha}.zip")), &orphan).unwrap();
    std::fs::create_dir(code.join("unpacked").join(&sha)).unwrap();
    std::fs::write(code.join("unpacked").join(&sha).join("app.py"), "x").unwrap();
    // An unpacked tree whose blob is gone, and what an interrupted collection moved out.
    let lone = "ab".repeat(32);
    std::fs::create_dir(code.join("unpacked").join(&lone)).unwrap();
    std::fs::create_dir(code.join("tmp").join("gc-0000.d")).unwrap();
    // Not a content address: left alone.
    std::fs::write(code.join("blobs").join("README"), "mine").unwrap();

    s.kill9();
    // Files written after the kill: the server cannot have collected them before.
    std::fs::write(code.join("tmp").join("gc-0001.zip"), "x").unwrap();
    s.restart();
    let gone = || {
        !code.join("blobs").join(format!("{sha}.zip")).exists()
            && !code.join("unpacked").join(&sha).exists()
            && !code.join("unpacked").join(&lone).exists()
    };
    assert!(
        eventually(Duration::from_secs(20), gone),
        "orphans stayed: {:?} {:?}\n{}",
        code_entries(&data, "blobs"),
        code_entries(&data, "unpacked"),
        s.log()
    );
    // The collection moves what it removes into tmp/ first, then deletes it there.
    assert!(
        eventually(Duration::from_secs(20), || code_entries(&data, "tmp")
            .is_empty()),
        "{:?}",
        code_entries(&data, "tmp")
    );
    let mut want_blobs: Vec<String> = referenced.iter().map(|s| format!("{s}.zip")).collect();
    want_blobs.push("README".into());
    want_blobs.sort();
    assert_eq!(code_entries(&data, "blobs"), want_blobs);
    let mut want_trees = referenced.clone();
    want_trees.sort();
    assert_eq!(code_entries(&data, "unpacked"), want_trees);
    invoke_n(&s, "kept", 2);
    invoke_n(&s, "kept:1", 1);
    assert!(
        eventually(Duration::from_secs(5), || s
            .log()
            .contains("code store: unreferenced packages collected")),
        "{}",
        s.log()
    );
    let summary = s
        .log()
        .lines()
        .rfind(|l| l.contains("code store: unreferenced packages collected"))
        .unwrap()
        .to_string();
    assert!(
        summary.contains("removed_blobs=1") && summary.contains("removed_trees=2"),
        "{summary}"
    );
}
