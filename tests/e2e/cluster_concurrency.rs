//! Reserved concurrency across the nodes of a cluster (docs/cluster.md, "Concurrency
//! across nodes"): three `nimbus serve` nodes on one PostgreSQL schema, 30 callers spread
//! over them, and a function that records when each invocation starts and ends in a host
//! file. However the calls spread, no more run at once than the reservation.

use nimbus_tests::cluster::Cluster;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Sleeps 300 ms; appends `start end` (ms) to the host file named by the event.
pub(crate) const RECORDER: &str = r#"
import time

def handler(event, context):
    start = time.time()
    time.sleep(0.3)
    end = time.time()
    with open(event["file"], "a") as f:
        f.write("%d %d\n" % (int(start * 1000), int(end * 1000)))
    return "ok"
"#;

/// The most intervals open at once (an end and a start in the same millisecond do not
/// overlap).
pub(crate) fn peak(runs: &[(i64, i64)]) -> usize {
    let mut ev: Vec<(i64, i32)> = runs.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    ev.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

pub(crate) fn read_runs(file: &Path) -> Vec<(i64, i64)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (s, e) = l.split_once(' ').unwrap();
            (s.parse().unwrap(), e.parse().unwrap())
        })
        .collect()
}

/// `callers` callers spread over the nodes call `rec` with `payload` for `secs` seconds,
/// each again as soon as it has an answer: (node index, status, body) of every call; a
/// function error fails the test.
pub(crate) fn call_rec(
    c: &Cluster,
    http: &reqwest::blocking::Client,
    payload: &str,
    callers: usize,
    secs: u64,
) -> Vec<(usize, u16, String)> {
    let until = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..callers)
            .map(|i| {
                let node = c.node(1 + i % 3);
                sc.spawn(move || {
                    let mut out = Vec::new();
                    while Instant::now() < until {
                        let r = http
                            .post(node.url("/2015-03-31/functions/rec/invocations"))
                            .body(payload.to_string())
                            .send()
                            .unwrap();
                        let status = r.status().as_u16();
                        let error = r
                            .headers()
                            .get("x-amz-function-error")
                            .map(|v| v.to_str().unwrap().to_string());
                        let body = r.text().unwrap();
                        assert!(error.is_none(), "function error: {body}");
                        out.push((i % 3, status, body));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn reserved_concurrency_holds_across_three_nodes() {
    // Waits longer than this are throttled: with 30 callers on 5 permits, some are.
    let c = Cluster::start(3, &["--isolation", "none", "--queue-timeout-ms", "1500"]);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Deployed and reserved through node 1.
    c.node(1)
        .deploy("rec", python_cfg("app.handler"), &[("app.py", RECORDER)]);
    let (s, v) = c.node(1).call(
        "PUT",
        "/2017-10-31/functions/rec/concurrency",
        Some(json!({ "ReservedConcurrentExecutions": 5 })),
    );
    assert_eq!(s, 200, "{v}");
    // Every node reads the reservation within a second (its registry cache follows the
    // database's change generations).
    std::thread::sleep(Duration::from_millis(1500));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.txt");
    let payload = json!({ "file": file }).to_string();
    // 30 callers, 10 per node, each calling again as soon as it has an answer.
    let results = call_rec(&c, &http, &payload, 30, 10);

    let mut ok = [0usize; 3];
    let mut throttled = 0;
    for (node, status, body) in &results {
        match status {
            200 => {
                assert_eq!(body, "\"ok\"");
                ok[*node] += 1;
            }
            429 => {
                let v: Value = serde_json::from_str(body).unwrap();
                assert_eq!(
                    v["Reason"], "ReservedFunctionConcurrentInvocationLimitExceeded",
                    "{v}"
                );
                assert!(
                    v["message"]
                        .as_str()
                        .or(v["Message"].as_str())
                        .unwrap_or_default()
                        .contains("reserved concurrency of 5"),
                    "{v}"
                );
                throttled += 1;
            }
            other => panic!("call failed with {other}: {body}\n{}", c.logs()),
        }
    }
    let runs = read_runs(&file);
    let served: usize = ok.iter().sum();
    assert_eq!(runs.len(), served, "every served call recorded its run");
    let most = peak(&runs);
    eprintln!(
        "{served} calls served ({ok:?} by node), {throttled} throttled, at most {most} at once"
    );
    // The documented bound on overshoot without failures is 0.
    assert!(
        most <= 5,
        "{most} invocations ran at once under a reservation of 5"
    );
    assert_eq!(most, 5, "the reservation was never used in full");
    assert!(
        throttled > 0,
        "30 callers on 5 permits were never throttled"
    );
    // 5 at a time for 10 s at 300 ms each is about 160 (67 measured beside two builds at
    // nice 19): the permits move between nodes and none stays stuck. How fast is the
    // benchmark's business (`nimbus-bench --cluster`), not this test's.
    assert!(served >= 50, "only {served} calls served in 10 s");
    // Fair shares: every node serves a part (a third each when the callers are even).
    for (i, n) in ok.iter().enumerate() {
        assert!(
            *n * 10 >= served,
            "node n{} served {n} of {served}: {ok:?}",
            i + 1
        );
    }
}
