//! Network isolation: each instance has a network namespace of its own with its Runtime
//! API on 127.0.0.1:9001; no instance reaches another's Runtime API, Nimbus's own API or
//! a service on the host's loopback, whatever its policy; `network = "outbound"` reaches
//! other hosts (here: the host's non-loopback address), `network = "none"` does not.
//! These tests fail (never skip) when the isolation is missing. Without slirp4netns,
//! `outbound` instances get their egress from pasta; without either they run on the host
//! network (degraded, reported), never fail.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connects to each `[host, port]` of the event (2 s timeout) and reports what happened;
/// `next_at` asks the Runtime API at that address for the next invocation.
const PROBE: &str = r#"
import os, socket, time, urllib.request, urllib.error

def handler(event, context):
    out = {
        "api": os.environ["AWS_LAMBDA_RUNTIME_API"],
        "netns": os.readlink("/proc/self/ns/net"),
    }
    res = []
    for host, port in event.get("connect", []):
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.settimeout(2)
            try:
                data = s.recv(64).decode(errors="replace")
            except Exception:
                data = ""
            s.close()
            res.append("ok:" + data)
        except Exception as e:
            res.append("error:" + type(e).__name__)
    out["connect"] = res
    if event.get("next_at"):
        url = "http://%s/2018-06-01/runtime/invocation/next" % event["next_at"]
        t0 = time.time()
        try:
            r = urllib.request.urlopen(url, timeout=3)
            out["next"] = {"status": r.status, "body": r.read().decode()[:200]}
        except urllib.error.HTTPError as e:
            out["next"] = {"status": e.code, "body": e.read().decode()[:200]}
        except Exception as e:
            out["next"] = {"status": 0, "body": type(e).__name__}
        out["next"]["seconds"] = time.time() - t0
    return out
"#;

/// Opens `n` connections to 127.0.0.1:`port` and holds them all open while it counts how
/// many were greeted.
const HOLD: &str = r#"
import socket

def handler(event, context):
    held, greeted = [], 0
    for _ in range(event["n"]):
        s = socket.create_connection(("127.0.0.1", event["port"]), timeout=5)
        s.settimeout(5)
        try:
            greeted += s.recv(5) == b"hello"
        except OSError:
            pass
        held.append(s)
    for s in held:
        s.close()
    return {"greeted": greeted}
"#;

fn deploy_probe(s: &Server, name: &str, network: Option<&str>) {
    let mut cfg = python_cfg("app.handler");
    cfg["timeout"] = json!(30);
    if let Some(n) = network {
        cfg["network"] = json!(n);
    }
    s.deploy(name, cfg, &[("app.py", PROBE)]);
}

fn probe(s: &Server, name: &str, event: Value) -> Value {
    s.invoke(name, &event.to_string()).ok()
}

/// A TCP service on `ip` (port chosen by the system) that greets each client with
/// "hello"; counts the connections it accepted.
fn service(ip: Ipv4Addr) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(b"hello");
        }
    });
    (port, count)
}

const SLIRP: &[&str] = &["slirp4netns"];
const PASTA: &[&str] = &["pasta", "passt"];

/// How many processes whose name starts with one of `comms` (slirp4netns; pasta, which
/// Debian's package re-executes as `passt.avx2` where the CPU has it) `pid` has as children.
fn children_named(pid: u32, comms: &[&str]) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            head.rsplit_once('(')
                .is_some_and(|(_, name)| comms.iter().any(|c| name.starts_with(c)))
                && rest.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .count()
}

fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn an_instance_reaches_only_its_own_runtime_api() {
    let s = Server::start(&[]);
    deploy_probe(&s, "fn-a", Some("none"));
    deploy_probe(&s, "fn-b", Some("outbound"));
    // Get shows the policy; the default is outbound.
    let (_, got) = s.get_json("/v1/functions/fn-a");
    assert_eq!(got["config"]["network"], "none", "{got}");
    deploy_probe(&s, "fn-default", None);
    let (_, got) = s.get_json("/v1/functions/fn-default");
    assert_eq!(got["config"]["network"], "outbound", "{got}");
    // The CLI sets it too.
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("app.py", PROBE)]);
    let out = s.cli(&[
        "deploy",
        dir.path().to_str().unwrap(),
        "--name",
        "fn-cli",
        "--runtime",
        "python3.11",
        "--handler",
        "app.handler",
        "--network",
        "none",
    ]);
    cli_ok(&out).unwrap();
    let (_, got) = s.get_json("/v1/functions/fn-cli");
    assert_eq!(got["config"]["network"], "none", "{got}");
    // An unknown policy is refused with a JSON error.
    let mut bad = python_cfg("app.handler");
    bad["network"] = json!("host");
    let (status, body) = s.deploy_zip("fn-bad", bad, &zip_files(&[("app.py", PROBE)]));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("outbound"), "{body}");

    let a = probe(&s, "fn-a", json!({}));
    let b = probe(&s, "fn-b", json!({}));
    // As on Lambda; with a host loopback listener these would be random ports.
    assert_eq!(a["api"], "127.0.0.1:9001", "{a}");
    assert_eq!(b["api"], "127.0.0.1:9001", "{b}");
    // Three different network namespaces: A's, B's and the host's.
    let host = own_netns();
    assert_ne!(a["netns"], b["netns"], "{a} {b}");
    assert_ne!(a["netns"].as_str().unwrap(), host, "{a}");
    assert_ne!(b["netns"].as_str().unwrap(), host, "{b}");

    // A is warm and idle: its runtime waits in `next` on its Runtime API. B, in the middle
    // of an invocation, asks "A's address" for the next invocation: its own Runtime API
    // answers at once (B has not answered the invocation it holds). A's would have held
    // the request (and handed it A's next event).
    let b = probe(&s, "fn-b", json!({ "next_at": a["api"] }));
    assert_eq!(b["next"]["status"], 403, "{b}");
    assert!(
        b["next"]["body"]
            .as_str()
            .unwrap()
            .contains("has not been answered"),
        "{b}"
    );
    // A's next invocation still reaches A, with A's event.
    let a2 = probe(&s, "fn-a", json!({ "connect": [] }));
    assert_eq!(a2["netns"], a["netns"], "{a2}");
    assert!(s.healthy(), "{}", s.log());
}

#[test]
fn host_loopback_and_nimbus_are_unreachable_under_both_policies() {
    let s = Server::start(&[]);
    let (port, accepted) = service(Ipv4Addr::LOCALHOST);
    deploy_probe(&s, "lo-none", Some("none"));
    deploy_probe(&s, "lo-out", Some("outbound"));
    let targets = json!([
        ["127.0.0.1", port],
        // slirp4netns's address for the host (refused: --disable-host-loopback)
        ["10.0.2.2", port],
        ["127.0.0.1", s.port],
        ["10.0.2.2", s.port],
        ["localhost", s.port],
    ]);
    for f in ["lo-none", "lo-out"] {
        let r = probe(&s, f, json!({ "connect": targets }));
        let results = r["connect"].as_array().unwrap();
        assert_eq!(results.len(), 5, "{r}");
        for (i, res) in results.iter().enumerate() {
            assert!(
                res.as_str().unwrap().starts_with("error:"),
                "{f}: target {} was reachable: {r}",
                targets[i]
            );
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the host loopback service was reached"
    );
    assert!(s.healthy(), "{}", s.log());
}

/// `host_services` opens exactly the listed host loopback services to a function, at the
/// same address inside its namespace, under both policies, for instances specialised from
/// stem cells and for instances started fresh; everything else stays unreachable, and
/// other functions do not get it.
#[test]
fn host_services_open_only_the_listed_ports() {
    let (open, opened) = service(Ipv4Addr::LOCALHOST);
    let (closed, closed_count) = service(Ipv4Addr::LOCALHOST);
    let targets = json!([
        ["127.0.0.1", open],
        ["127.0.0.1", closed],
        ["10.0.2.2", open]
    ]);
    for args in [&[][..], &["--stem-cells", "off"][..]] {
        let s = Server::start(args);
        for network in ["none", "outbound"] {
            let name = format!("hs-{network}");
            let mut cfg = python_cfg("app.handler");
            cfg["timeout"] = json!(30);
            cfg["network"] = json!(network);
            cfg["host_services"] = json!([format!("127.0.0.1:{open}")]);
            s.deploy(&name, cfg, &[("app.py", PROBE)]);
            let before = opened.load(Ordering::SeqCst);
            let r = probe(&s, &name, json!({ "connect": targets }));
            assert_eq!(
                r["connect"],
                json!(["ok:hello", "error:ConnectionRefusedError", r["connect"][2]]),
                "{args:?} {name}: {r}"
            );
            assert!(
                r["connect"][2].as_str().unwrap().starts_with("error:"),
                "{r}"
            );
            assert_eq!(opened.load(Ordering::SeqCst), before + 1, "{r}");
            let (_, shown) = s.get_json(&format!("/v1/functions/{name}"));
            assert_eq!(
                shown["config"]["host_services"],
                json!([format!("127.0.0.1:{open}")]),
                "{shown}"
            );
        }
        // A function without the setting is not given it by the others.
        deploy_probe(&s, "hs-without", Some("none"));
        let r = probe(
            &s,
            "hs-without",
            json!({ "connect": [["127.0.0.1", open]] }),
        );
        assert!(
            r["connect"][0].as_str().unwrap().starts_with("error:"),
            "{r}"
        );
        assert!(s.healthy(), "{}", s.log());
    }
    assert_eq!(closed_count.load(Ordering::SeqCst), 0);
    // An instance holds at most 256 connections to a service: the others are closed at once.
    let s = Server::start(&[]);
    let mut cfg = python_cfg("app.handler");
    cfg["timeout"] = json!(60);
    cfg["host_services"] = json!([format!("127.0.0.1:{open}")]);
    s.deploy("hs-many", cfg, &[("app.py", HOLD)]);
    let r = probe(&s, "hs-many", json!({ "port": open, "n": 300 }));
    assert_eq!(r["greeted"], 256, "{r}");
    assert!(s.healthy(), "{}", s.log());
    // Only loopback addresses, never the instance's own ports.
    let s = Server::start(&[]);
    for bad in ["10.0.0.1:5432", "127.0.0.1:9001"] {
        let mut cfg = python_cfg("app.handler");
        cfg["host_services"] = json!([bad]);
        let (status, body) = s.deploy_zip("hs-bad", cfg, &zip_files(&[("app.py", PROBE)]));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains("host service"), "{body}");
    }
}

#[test]
fn outbound_reaches_other_hosts_and_none_does_not() {
    // Instances specialised from stem cells (the default) and instances started fresh.
    let s = Server::start(&[]);
    wait_for_stem_cells(&s, "python");
    outbound_and_none(&s, false);
    outbound_and_none(&Server::start(&["--stem-cells", "off"]), true);
}

/// `slirp`: also check that each outbound instance has exactly one slirp4netns, gone
/// with the instance (only without stem cells, which have theirs while idle).
fn outbound_and_none(s: &Server, slirp: bool) {
    let ip = host_address();
    let (port, accepted) = service(ip);
    deploy_probe(s, "egress", Some("outbound"));
    deploy_probe(s, "no-egress", Some("none"));
    let target = json!({ "connect": [[ip.to_string(), port]] });

    let r = probe(s, "egress", target.clone());
    assert_eq!(
        r["connect"][0], "ok:hello",
        "outbound could not reach {ip}:{port}: {r}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let r = probe(s, "no-egress", target);
    assert!(
        r["connect"][0].as_str().unwrap().starts_with("error:"),
        "network = none reached {ip}:{port}: {r}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "none reached the service"
    );

    // A warm outbound instance keeps its egress.
    let r = probe(s, "egress", json!({ "connect": [[ip.to_string(), port]] }));
    assert_eq!(r["connect"][0], "ok:hello", "{r}");
    if !slirp {
        return;
    }
    // One slirp4netns per outbound instance, none for `none`; gone with the instance.
    one_helper_gone_with_its_instance(s, "egress", SLIRP);
}

/// The `egress` layer of the server's isolation report (`/v1/health`).
fn egress_layer(s: &Server) -> Value {
    let (_, h) = s.get_json("/v1/health");
    h["isolation"]["layers"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "egress"))
        .cloned()
        .unwrap_or_else(|| panic!("no egress layer: {h}"))
}

/// The server has exactly one `helper` child (slirp4netns or pasta) while `function`'s
/// one instance lives, and none once the function is deleted.
fn one_helper_gone_with_its_instance(s: &Server, function: &str, helper: &[&str]) {
    let server = s.child.as_ref().unwrap().id();
    assert_eq!(children_named(server, helper), 1, "{helper:?}");
    let st = s
        .http
        .delete(s.url(&format!("/v1/functions/{function}")))
        .send()
        .unwrap()
        .status();
    assert!(st.is_success(), "{st}");
    assert!(
        eventually(Duration::from_secs(10), || children_named(server, helper)
            == 0),
        "{helper:?} outlived its instance"
    );
    assert!(s.healthy(), "{}", s.log());
}

/// Without slirp4netns, pasta gives outbound instances their egress: the same
/// isolation (the Runtime API at 127.0.0.1:9001 in a namespace of its own, the host's
/// loopback unreachable), one pasta per instance, gone with it; reported in the health.
#[test]
fn outbound_through_pasta_when_slirp4netns_is_missing() {
    let s = Server::start_with_env(
        &["--stem-cells", "off"],
        &[("NIMBUS_SLIRP4NETNS", "/nonexistent/slirp4netns")],
    );
    deploy_probe(&s, "via-pasta", Some("outbound"));
    let ip = host_address();
    let (port, accepted) = service(ip);
    let (lo_port, lo_accepted) = service(Ipv4Addr::LOCALHOST);
    let r = probe(
        &s,
        "via-pasta",
        json!({ "connect": [
            [ip.to_string(), port],
            ["127.0.0.1", lo_port],
            ["10.0.2.2", lo_port],
            ["127.0.0.1", s.port],
        ] }),
    );
    assert_eq!(r["connect"][0], "ok:hello", "{r}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    for i in 1..4 {
        assert!(
            !r["connect"][i].as_str().unwrap().contains("hello"),
            "target {i} reached the host's loopback: {r}"
        );
    }
    assert_eq!(
        lo_accepted.load(Ordering::SeqCst),
        0,
        "the host loopback service was reached through pasta"
    );
    assert_eq!(r["api"], "127.0.0.1:9001", "{r}");
    assert_ne!(r["netns"].as_str().unwrap(), own_netns(), "{r}");
    let egress = egress_layer(&s);
    assert_eq!(egress["ok"], true, "{egress}");
    assert!(
        egress["detail"].as_str().unwrap().contains("pasta"),
        "{egress}"
    );
    assert_eq!(children_named(s.child.as_ref().unwrap().id(), SLIRP), 0);
    one_helper_gone_with_its_instance(&s, "via-pasta", PASTA);
}

/// Degrade, never break (`--isolation auto`): without slirp4netns or pasta an `outbound`
/// function still runs, on the host network (its Runtime API on a host loopback port),
/// warned at start and reported as the missing `egress` layer; `none` keeps its
/// namespace; strict refuses to start, naming the package.
#[test]
fn outbound_without_slirp4netns_or_pasta_runs_on_the_host_network_and_strict_refuses() {
    let hide = [
        ("NIMBUS_SLIRP4NETNS", "/nonexistent/slirp4netns"),
        ("NIMBUS_PASTA", "/nonexistent/pasta"),
    ];
    let s = Server::start_with_env(&[], &hide);
    deploy_probe(&s, "needs-egress", Some("outbound"));
    deploy_probe(&s, "offline", Some("none"));
    let ip = host_address();
    let (port, accepted) = service(ip);
    let r = probe(
        &s,
        "needs-egress",
        json!({ "connect": [[ip.to_string(), port]] }),
    );
    assert_eq!(r["connect"][0], "ok:hello", "{r}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let api = r["api"].as_str().unwrap();
    assert!(
        api.starts_with("127.0.0.1:") && api != "127.0.0.1:9001",
        "a host loopback port: {r}"
    );
    let ok = probe(&s, "offline", json!({}));
    assert_eq!(ok["api"], "127.0.0.1:9001", "{ok}");
    assert_ne!(ok["netns"], r["netns"], "none keeps a namespace of its own");
    let egress = egress_layer(&s);
    assert_eq!(egress["ok"], false, "{egress}");
    assert!(
        egress["detail"].as_str().unwrap().contains("host network"),
        "{egress}"
    );
    assert!(
        s.log().contains("run WITHOUT one") && s.log().contains("apt-get install slirp4netns"),
        "{}",
        s.log()
    );
    assert!(s.healthy(), "{}", s.log());

    // --isolation strict refuses to start without it, and says what to install.
    let dir = tempfile::tempdir().unwrap();
    let (exited, status, log) = run_bounded(
        std::process::Command::new(nimbus_bin())
            .args(["serve", "--isolation", "strict", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path())
            .envs(hide),
        Duration::from_secs(20),
    );
    assert!(exited && !status.success(), "strict must refuse: {log}");
    assert!(
        log.contains("egress") && log.contains("apt-get install slirp4netns"),
        "{log}"
    );
}
