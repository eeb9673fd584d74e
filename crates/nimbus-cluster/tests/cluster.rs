//! Membership and change generations on the local PostgreSQL (a schema per test).

use nimbus_cluster::{
    install_triggers, Changes, ClusterError, Load, Membership, MembershipConfig, NodeId,
};
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fast() -> MembershipConfig {
    MembershipConfig {
        heartbeat: Duration::from_millis(100),
        ttl: Duration::from_millis(600),
        forget_after: Duration::from_secs(3600),
    }
}

fn node(id: &str) -> NodeId {
    NodeId::parse(id).unwrap()
}

fn status(m: &Membership, id: &str) -> String {
    m.nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
        .map(|n| n.status)
        .unwrap_or_default()
}

#[test]
fn idle_instances_reach_the_other_live_nodes() {
    let db = TestDb::new("members_idle");
    let other = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let a = Membership::join(&db.pg, node("a"), "http://127.0.0.1:1", "1.0", fast(), None).unwrap();
    let b = Membership::join(&other, node("b"), "http://127.0.0.1:2", "1.0", fast(), None).unwrap();
    let idle = |n: u32| Load {
        idle: [("rev-1".to_string(), n)].into(),
        ..Load::default()
    };
    b.beat(idle(2)).unwrap();
    a.beat(Load::default()).unwrap();
    let p = a.peers().pick("rev-1").expect("b's idle instance");
    assert_eq!(
        (p.node.as_str(), p.address.as_str()),
        ("b", "http://127.0.0.1:2")
    );
    drop(p);
    assert!(a.peers().pick("rev-2").is_none(), "another revision");
    assert!(
        b.peers().pick("rev-1").is_none(),
        "a node never picks itself"
    );
    // Unchanged counts are not written again, and stay.
    b.beat(idle(2)).unwrap();
    a.beat(Load::default()).unwrap();
    assert!(a.peers().pick("rev-1").is_some());
    // None idle: none picked.
    b.beat(Load::default()).unwrap();
    a.beat(Load::default()).unwrap();
    assert!(a.peers().pick("rev-1").is_none());
    // A draining node is not a candidate.
    b.beat(idle(1)).unwrap();
    assert!(b.set_draining("b", true).unwrap());
    a.beat(Load::default()).unwrap();
    assert!(a.peers().pick("rev-1").is_none(), "b drains");
    assert!(b.set_draining("b", false).unwrap());
    a.beat(Load::default()).unwrap();
    assert!(a.peers().pick("rev-1").is_some());
    // Nor is a dead one.
    std::thread::sleep(Duration::from_millis(800));
    a.beat(Load::default()).unwrap();
    assert!(a.peers().pick("rev-1").is_none(), "b stopped beating");
}

#[test]
fn nodes_join_beat_die_and_leave() {
    let db = TestDb::new("members");
    let other = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let a = Membership::join(&db.pg, node("a"), "http://127.0.0.1:1", "1.0", fast(), None).unwrap();
    let b = Membership::join(&other, node("b"), "http://127.0.0.1:2", "1.0", fast(), None).unwrap();
    b.beat(Load {
        in_flight: 3,
        instances: 2,
        ..Load::default()
    })
    .unwrap();
    let nodes = a.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    let nb = nodes.iter().find(|n| n.id == "b").unwrap();
    assert_eq!(
        (
            nb.status.as_str(),
            nb.in_flight,
            nb.instances,
            nb.address.as_str()
        ),
        ("alive", 3, 2, "http://127.0.0.1:2")
    );
    // b stops beating: dead once its TTL has passed, while a keeps beating.
    std::thread::sleep(Duration::from_millis(800));
    a.beat(Load::default()).unwrap();
    assert_eq!(status(&a, "b"), "dead");
    assert_eq!(a.dead_nodes().unwrap(), ["b"]);
    assert_eq!(status(&a, "a"), "alive");
    // Drain marks are seen by the node itself.
    assert!(a.set_draining("a", true).unwrap());
    assert!(a.draining().unwrap());
    assert_eq!(status(&b, "a"), "draining");
    assert!(!a.set_draining("nobody", true).unwrap());
    a.leave().unwrap();
    assert_eq!(status(&b, "a"), "left");
    assert_eq!(b.dead_nodes().unwrap(), ["a", "b"]);
}

#[test]
fn a_live_id_is_refused_and_a_crashed_one_is_taken_over() {
    let db = TestDb::new("dup");
    let first = Membership::join(&db.pg, node("n1"), "http://a", "1.0", fast(), None).unwrap();
    // The first keeps beating while a second process asks for its id.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let (m, stop) = (first.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                m.beat(Load::default()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let other = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let e = Membership::join(&other, node("n1"), "http://b", "1.0", fast(), None).unwrap_err();
    assert!(
        matches!(&e, ClusterError::DuplicateNode { id, address } if id == "n1" && address == "http://a"),
        "{e}"
    );
    assert!(e.to_string().contains("--node-id"), "{e}");
    stop.store(true, Ordering::Relaxed);
    beater.join().unwrap();
    // Now the first is silent (as after kill -9): a restart waits one TTL and takes over.
    let t = Instant::now();
    let second = Membership::join(&other, node("n1"), "http://b", "1.0", fast(), None).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(
        first.beat(Load::default()),
        Err(ClusterError::Superseded(_))
    ));
    assert!(first.superseded());
    second.beat(Load::default()).unwrap();
    let nodes = second.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].address, "http://b");
}

#[test]
fn a_node_restarted_on_its_data_takes_its_place_at_once() {
    let db = TestDb::new("rejoin");
    let first = Membership::join(&db.pg, node("n1"), "http://a", "1.0", fast(), None).unwrap();
    first.beat(Load::default()).unwrap();
    // Killed (no leave), started again at once with the incarnation it kept.
    let t = Instant::now();
    let again = Membership::join(
        &db.pg,
        node("n1"),
        "http://a",
        "1.0",
        fast(),
        Some(first.incarnation()),
    )
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_ne!(again.incarnation(), first.incarnation());
    assert!(matches!(
        first.beat(Load::default()),
        Err(ClusterError::Superseded(_))
    ));
    // Another process's incarnation is still watched for a TTL.
    let t = Instant::now();
    let third =
        Membership::join(&db.pg, node("n1"), "http://a", "1.0", fast(), Some("other")).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    drop(third);
}

/// Stand-ins for two stores' tables, made as their migrations would.
fn tables(pg: &Pg) {
    pg.with(async |c| {
        c.batch_execute(
            "CREATE TABLE registry_functions (name TEXT PRIMARY KEY, config TEXT);
             CREATE TABLE bus_buses (name TEXT PRIMARY KEY);
             CREATE TABLE bus_rules (bus TEXT, name TEXT, pattern TEXT, schedule TEXT,
                 timezone TEXT, enabled BOOLEAN, targets TEXT, last_fired_ms BIGINT,
                 PRIMARY KEY (bus, name));",
        )
        .await?;
        Ok(())
    })
    .unwrap();
}

fn exec(pg: &Pg, sql: &'static str) {
    pg.with(async |c| {
        c.batch_execute(sql).await?;
        Ok(())
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_change_reaches_the_other_nodes_listeners() {
    let db = TestDb::new("changes");
    let pg = db.pg.clone();
    let made = tokio::task::spawn_blocking(move || {
        tables(&pg);
        let made = install_triggers(&pg).unwrap();
        // Installing again finds them all.
        assert_eq!(install_triggers(&pg).unwrap(), 0);
        made
    })
    .await
    .unwrap();
    assert_eq!(made, 3, "registry_functions, bus_buses, bus_rules");

    // "Node 2" listens; "node 1" (another pool) writes.
    let changes = Changes::new(db.pg.clone(), None);
    let registry = Arc::new(AtomicUsize::new(0));
    let bus = Arc::new(AtomicUsize::new(0));
    {
        let r = registry.clone();
        changes.on("registry", move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let b = bus.clone();
        changes.on("bus", move || {
            b.fetch_add(1, Ordering::SeqCst);
        });
    }
    let task = changes.spawn();
    // The first read is the baseline: every listener reloads once (what was cached
    // before it may predate a change).
    let t = Instant::now();
    while registry.load(Ordering::SeqCst) == 0 || bus.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no reload at the baseline"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    registry.store(0, Ordering::SeqCst);
    bus.store(0, Ordering::SeqCst);
    let writer = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let w = writer.clone();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || {
        exec(&w, "INSERT INTO registry_functions VALUES ('f', '{}')");
    })
    .await
    .unwrap();
    while registry.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(1), "not seen within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.load(Ordering::SeqCst), 0);

    // Bookkeeping columns do not count; rule changes do; a rolled-back change does not.
    let w = writer.clone();
    tokio::task::spawn_blocking(move || {
        exec(
            &w,
            "INSERT INTO bus_buses VALUES ('default');
             INSERT INTO bus_rules VALUES ('default', 'r', NULL, 'rate(1 minute)', NULL, true, '[]', NULL)",
        );
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after_rule = bus.load(Ordering::SeqCst);
    assert!(after_rule >= 1);
    let w = writer.clone();
    tokio::task::spawn_blocking(move || {
        exec(&w, "UPDATE bus_rules SET last_fired_ms = 5");
        exec(&w, "BEGIN; UPDATE bus_rules SET enabled = false; ROLLBACK;");
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(bus.load(Ordering::SeqCst), after_rule);
    task.abort();
}
