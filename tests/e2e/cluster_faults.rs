//! Faults around a cluster (tests/support/cluster.rs): a node partitioned in its own
//! network namespace, NATS down, PostgreSQL restarted under load, a node older than the
//! database's schema, a second process with a live node's id, a master key rotation.

use crate::cluster::{
    delivered, deploy_sink, greet, node3_work_taken_over, node_status, submit, submit_signed,
    within,
};
use nimbus_tests::cluster::Cluster;
use nimbus_tests::netns::NetNs;
use nimbus_tests::pg_instance::PgInstance;
use nimbus_tests::proxy::Proxy;
use nimbus_tests::*;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `cluster` check of a node's `/v1/ready`: the HTTP status and the check's status.
fn cluster_check(node: &nimbus_tests::cluster::Node) -> (u16, String, Value) {
    let (code, ready) = node.call("GET", "/v1/ready", None);
    let check = ready["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "cluster")
        .cloned()
        .unwrap_or(Value::Null);
    let status = check["status"].as_str().unwrap_or("").to_string();
    (code, status, check)
}

#[test]
fn with_nats_down_the_nodes_keep_serving_changes_by_polling_and_say_degraded() {
    // Both nodes reach NATS through a proxy the test cuts.
    let proxy = Proxy::start("127.0.0.1:4222");
    let nats = format!("nats://{}", proxy.addr);
    let c = Cluster::start_on(2, &["--isolation", "none"], &[], None, Some(&nats));
    let (n1, n2) = (c.node(1), c.node(2));
    for n in [n1, n2] {
        let ok = within(Duration::from_secs(10), || cluster_check(n).1 == "ok");
        assert!(ok.is_some(), "{:?}\n{}", cluster_check(n), c.logs());
    }
    assert_eq!(cluster_check(n1).2["value"]["nats"], "connected");
    n1.deploy(
        "greet",
        python_cfg("app.handler"),
        &[("app.py", &greet("v1"))],
    );
    assert_eq!(n2.invoke("greet", "{}"), (200, "\"v1\"".into()));

    proxy.cut();
    // Ready stays 200 (the cluster works without NATS) but says degraded, and why.
    for n in [n1, n2] {
        let seen = within(Duration::from_secs(15), || {
            let (code, status, _) = cluster_check(n);
            code == 200 && status == "degraded"
        });
        assert!(seen.is_some(), "{:?}\n{}", cluster_check(n), c.logs());
    }
    let (_, _, check) = cluster_check(n2);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("NATS unreachable"),
        "{check}"
    );
    assert_eq!(check["value"]["nats"], "disconnected", "{check}");

    // A redeploy on node 1 reaches node 2 by polling alone, within the same second.
    n1.deploy(
        "greet",
        python_cfg("app.handler"),
        &[("app.py", &greet("v2"))],
    );
    let took = within(Duration::from_secs(3), || {
        n2.invoke("greet", "{}") == (200, "\"v2\"".into())
    });
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(1)),
        "node 2 served v2 only after {took:?} without NATS\n{}",
        c.logs()
    );
    // Async events submitted on one node run (the queue is in PostgreSQL).
    let out = tempfile::NamedTempFile::new().unwrap();
    deploy_sink(&c, out.path(), 0, 4);
    for n in 0..20u64 {
        assert!(submit(c.node(1 + (n as usize % 2)), n), "{}", c.logs());
    }
    let all: HashSet<u64> = (0..20).collect();
    assert!(
        within(Duration::from_secs(30), || all
            .is_subset(&delivered(out.path())))
        .is_some(),
        "events not delivered without NATS: {:?}\n{}",
        delivered(out.path()),
        c.logs()
    );

    // NATS back: the nodes reconnect and are ok again.
    proxy.restore();
    for n in [n1, n2] {
        let back = within(Duration::from_secs(30), || cluster_check(n).1 == "ok");
        assert!(back.is_some(), "{:?}\n{}", cluster_check(n), c.logs());
    }
    eprintln!("NATS cut: v2 served by node 2 {took:?} after the deploy (polling)");
}

/// One client's record of a load run.
#[derive(Default)]
struct Load {
    acked: HashSet<u64>,
    sync_ok: usize,
    /// Failed synchronous requests: (status, body).
    failed: Vec<(u16, String)>,
}

#[test]
fn a_postgres_restart_under_load_loses_no_acknowledged_work() {
    // A PostgreSQL of the test's own, so restarting it disturbs no other test.
    let pg = PgInstance::start("replica");
    let mut c = Cluster::start_on(2, &["--isolation", "none"], &[], Some(&pg.url()), None);
    let out = tempfile::NamedTempFile::new().unwrap();
    deploy_sink(&c, out.path(), 0, 4);
    c.node(1).deploy(
        "greet",
        python_cfg("app.handler"),
        &[("app.py", &greet("v1"))],
    );

    // One client per node: an async event, then a sync request, in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let clients: Vec<_> = (0..2u64)
        .map(|k| {
            let (base, stop, load) = (c.node(1 + k as usize).base(), stop.clone(), load.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let mut n = k;
                while !stop.load(Ordering::SeqCst) {
                    let r = http
                        .post(format!("{base}/2015-03-31/functions/sink/invocations"))
                        .header("X-Amz-Invocation-Type", "Event")
                        .body(format!(r#"{{"n":{n}}}"#))
                        .send();
                    if r.is_ok_and(|r| r.status().as_u16() == 202) {
                        load.lock().unwrap().acked.insert(n);
                    }
                    n += 2;
                    match http
                        .post(format!("{base}/2015-03-31/functions/greet/invocations"))
                        .body("{}")
                        .send()
                    {
                        Ok(r) if r.status().as_u16() == 200 => load.lock().unwrap().sync_ok += 1,
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body = r.text().unwrap_or_default();
                            load.lock().unwrap().failed.push((status, body));
                        }
                        Err(e) => load.lock().unwrap().failed.push((0, e.to_string())),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(3));
    let before = load.lock().unwrap().acked.len();
    // The restart: down for 3 s, every connection of the nodes broken.
    let t = Instant::now();
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again();
    let down = t.elapsed();
    // The nodes reconnect: both serve again (sync and async) within a few seconds.
    let served_at = {
        let mark = load.lock().unwrap().sync_ok;
        within(Duration::from_secs(30), || {
            load.lock().unwrap().sync_ok > mark + 20
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    let load = std::mem::take(&mut *load.lock().unwrap());
    assert!(
        served_at.is_some(),
        "the nodes never served again after PostgreSQL came back\n{}",
        c.logs()
    );
    for i in 1..=2 {
        assert!(
            c.node_mut(i).wait_exit(Duration::ZERO).is_none(),
            "node {i} exited\n{}",
            c.logs()
        );
        let ready = within(Duration::from_secs(20), || {
            cluster_check(c.node(i)).0 == 200
        });
        assert!(ready.is_some(), "{:?}", cluster_check(c.node(i)));
    }
    // Requests that failed while the database was away failed cleanly: a JSON error with
    // a status, never a dropped connection.
    for (status, body) in &load.failed {
        assert!(
            *status >= 500 || *status == 429,
            "a failed request: {status} {body}"
        );
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|_| panic!("not a JSON error: {status} {body}"));
        assert!(
            v.get("Type")
                .or(v.get("type"))
                .or(v.get("__type"))
                .is_some()
                && v.get("message").or(v.get("Message")).is_some(),
            "{status} {body}"
        );
    }
    assert!(
        load.acked.len() > before,
        "no event acknowledged after the restart"
    );
    // Every acknowledged event runs.
    let all = within(Duration::from_secs(90), || {
        load.acked.is_subset(&delivered(out.path()))
    });
    let seen = delivered(out.path());
    let missing: Vec<&u64> = load.acked.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        all.is_some(),
        "acknowledged, never delivered: {missing:?}\n{}",
        c.logs()
    );
    eprintln!(
        "PostgreSQL down {down:?}: serving again {:?} after it came back; {} events acknowledged, all delivered; {} sync requests answered 200, {} failed cleanly while it was away",
        served_at.unwrap(),
        load.acked.len(),
        load.sync_ok,
        load.failed.len()
    );
}

#[test]
fn a_node_older_than_the_database_schema_refuses_to_start() {
    let mut c = Cluster::start(1, &["--isolation", "none"]);
    c.node_mut(1).terminate();
    // A newer Nimbus made a breaking change to the registry's schema.
    c.db.pg
        .with(async |cl| {
            cl.execute(
                "UPDATE nimbus_schema SET version = version + 1, compatible = version + 1
                 WHERE component = 'registry'",
                &[],
            )
            .await?;
            Ok(())
        })
        .unwrap();
    let node = c.node_mut(1);
    node.start();
    let exit = node.wait_exit(Duration::from_secs(30));
    let log = node.log();
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}\n{log}");
    assert!(
        log.contains("registry schema is at version")
            && log.contains("upgrade this node's nimbus binary"),
        "{log}"
    );
}

#[test]
fn a_second_process_with_a_live_nodes_id_is_refused() {
    let c = Cluster::start(1, &["--isolation", "none"]);
    let mut twin = c.spare_node(2, "n1", &["--isolation", "none"]);
    twin.start();
    let exit = twin.wait_exit(Duration::from_secs(30));
    let log = twin.log();
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}\n{log}");
    assert!(log.contains("another live node has the id n1"), "{log}");
    // The first keeps its id and serves.
    let (_, cluster) = c.node(1).call("GET", "/v1/cluster", None);
    let n1 = &cluster["nodes"][0];
    assert_eq!(
        (
            n1["id"].as_str(),
            n1["status"].as_str(),
            n1["address"].as_str()
        ),
        (Some("n1"), Some("alive"), Some(c.node(1).base().as_str())),
        "{cluster}"
    );
    assert!(c.node(1).call("GET", "/v1/ready", None).0 == 200);
}

const READER: &str = "import os\ndef handler(e, c):\n    return os.environ.get('DB_PASSWORD')\n";

#[test]
fn a_master_key_rotated_through_one_node_is_followed_by_the_others() {
    let mut c = Cluster::start(2, &["--isolation", "none"]);
    // Node 3 reads the cluster's key from a key file instead of NIMBUS_MASTER_KEY.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{}\n", c.master_key)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut n3 = c.spare_node(
        3,
        "n3",
        &[
            "--isolation",
            "none",
            "--master-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    n3.set_env("NIMBUS_MASTER_KEY", None);
    n3.restart();

    let (s, v) = c.node(1).call(
        "PUT",
        "/v1/secrets/db-pass",
        Some(serde_json::json!({"value": "s3cret-1"})),
    );
    assert!(s < 300, "{s} {v}");
    let mut cfg = python_cfg("app.handler");
    cfg["secrets"] = serde_json::json!({"DB_PASSWORD": "db-pass"});
    c.node(1)
        .deploy("reader", cfg.clone(), &[("app.py", READER)]);
    for n in [c.node(2), &n3] {
        assert_eq!(
            n.invoke("reader", "{}"),
            (200, "\"s3cret-1\"".into()),
            "{}",
            n.log()
        );
    }

    // Rotated through node 1.
    let new_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (s, v) = c.node(1).call(
        "POST",
        "/v1/secrets/rotate",
        Some(serde_json::json!({"new_key": new_key})),
    );
    assert_eq!(s, 200, "{v}");
    let new_id = v["key_id"].as_str().unwrap().to_string();
    // Nodes 2 and 3 follow within a second: they write and read secrets under the new key.
    for (i, n) in [(2, c.node(2)), (3, &n3)] {
        let took = within(Duration::from_secs(3), || {
            n.call(
                "PUT",
                &format!("/v1/secrets/from-n{i}"),
                Some(serde_json::json!({"value": format!("v{i}")})),
            )
            .0 < 300
        });
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "node {i} followed the rotation only after {took:?}\n{}",
            n.log()
        );
        eprintln!("node {i} followed the rotation within {took:?}");
    }
    c.node(1).deploy("reader2", cfg, &[("app.py", READER)]);
    for n in [c.node(2), &n3] {
        assert_eq!(
            n.invoke("reader2", "{}"),
            (200, "\"s3cret-1\"".into()),
            "{}",
            n.log()
        );
    }
    // Node 3's key file now holds the new key; node 2 (key from the environment) says to
    // update the variable.
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        new_key,
        "{}",
        n3.log()
    );
    assert!(
        c.node(2)
            .log()
            .contains("set NIMBUS_MASTER_KEY to the new key"),
        "{}",
        c.node(2).log()
    );
    // Restarted on its key file, node 3 serves; node 2 restarted with the old variable is
    // refused (naming both keys), and with the new one serves.
    n3.restart();
    assert_eq!(n3.invoke("reader", "{}").0, 200, "{}", n3.log());
    let n2 = c.node_mut(2);
    n2.kill9();
    n2.start();
    let exit = n2.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| !s.success()), "{}", n2.log());
    assert!(n2.log().contains(&new_id), "{}", n2.log());
    n2.set_env("NIMBUS_MASTER_KEY", Some(new_key));
    n2.restart();
    assert_eq!(
        n2.invoke("reader", "{}"),
        (200, "\"s3cret-1\"".into()),
        "{}",
        n2.log()
    );
}

#[test]
fn a_partitioned_node_stops_claiming_and_its_work_is_finished_by_the_others() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut c = Cluster::start(2, &["--isolation", "none"]);
    // Node 3 runs in a network namespace of its own: it reaches PostgreSQL and NATS, and
    // the clients and the other nodes reach it, only through the veth pair the test cuts.
    let ns = NetNs::create();
    let pg = Proxy::start_on(&ns.host_ip, "127.0.0.1:5432");
    let nats = Proxy::start_on(&ns.host_ip, "127.0.0.1:4222");
    // Off loopback, a node serves only signed requests.
    let mut n3 = c.spare_node(3, "n3", &["--isolation", "none", "--auth", "on"]);
    n3.netns = Some(ns.name.clone());
    n3.ip = ns.ns_ip.clone();
    n3.set_database(&c.database.replace("127.0.0.1:5432", &pg.addr));
    n3.set_flag("--nats", &format!("nats://{}", nats.addr));
    n3.restart();
    assert!(
        within(Duration::from_secs(10), || node_status(&c, 1, "n3")
            == "alive")
        .is_some(),
        "{}",
        n3.log()
    );
    // 6 s per event, 2 at a time per node: node 3 is running what it claimed at the cut.
    deploy_sink(&c, out.path(), 6000, 2);
    // Submitted through all three nodes (a node claims every due event its engine has
    // room for: those submitted to node 3 are the ones it surely claims).
    let admin = n3.bootstrap_credentials().expect("node 3's bootstrap key");
    let submit_all = || {
        let acked: HashSet<u64> = (0..18u64)
            .filter(|&n| match n % 3 {
                2 => submit_signed(&n3, n, &admin),
                k => submit(c.node(1 + k as usize), n),
            })
            .collect();
        assert_eq!(acked.len(), 18, "{}\n{}", c.logs(), n3.log());
        acked
    };
    let (acked, dead, all, reruns) =
        node3_work_taken_over(&c, out.path(), submit_all, || ns.cut(), || n3.log());
    // Cut off, node 3 claimed nothing more: an event ran at most twice (node 3's run of
    // what it held at the cut, which it could not record, and the others' re-run).
    let mut runs_of: std::collections::HashMap<String, usize> = Default::default();
    for l in std::fs::read_to_string(out.path()).unwrap().lines() {
        *runs_of.entry(l.to_string()).or_default() += 1;
    }
    let thrice: Vec<_> = runs_of.iter().filter(|(_, k)| **k > 2).collect();
    assert!(
        thrice.is_empty(),
        "ran more than twice: {thrice:?}: node 3 kept claiming while cut off\n{}",
        n3.log()
    );
    // It noticed: its statements into the partition fail (TCP user timeout) rather than
    // hang for TCP's retransmissions.
    assert!(
        within(Duration::from_secs(30), || n3
            .log()
            .contains("cannot write the cluster heartbeat"))
        .is_some(),
        "{}",
        n3.log()
    );

    // The link back: node 3 is alive again and serves.
    ns.restore();
    let back = within(Duration::from_secs(30), || {
        node_status(&c, 1, "n3") == "alive"
    });
    assert!(back.is_some(), "node 3 never came back\n{}", n3.log());
    let (status, reply) = n3.signed(
        "POST",
        "/2015-03-31/functions/sink/invocations",
        br#"{"n":100000}"#,
        &admin,
    );
    assert_eq!(status, 200, "{reply}\n{}", n3.log());
    eprintln!(
        "partitioned node 3 seen dead {dead:?} after the cut; all {} events delivered {all:?} after, {reruns} run twice (node 3's, taken over); back {:?} after the link",
        acked.len(),
        back.unwrap()
    );
    c.node_mut(1).terminate();
}
