//! The outbox and its delivery, with an in-memory publisher that fails on demand (the
//! real publishers are tested against the real brokers).

use super::*;
use crate::store::SqliteSourceStore;
use nimbus_events::external::ExternalTargets;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A published message: its body and headers.
type Published = (String, Vec<(String, String)>);

#[derive(Default)]
struct Mem {
    got: Mutex<Vec<Published>>,
    fail_next: AtomicU32,
    connects: AtomicU32,
}

#[async_trait]
impl Publisher for Mem {
    async fn connect(&self) -> Result<()> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(SourceError::Unreachable {
                endpoint: "mem".into(),
                reason: "down".into(),
            });
        }
        self.got.lock().unwrap().push((
            String::from_utf8(payload.to_vec()).unwrap(),
            headers.to_vec(),
        ));
        Ok(())
    }
}

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        kind: Kind::Nats,
        endpoints: vec!["nats://127.0.0.1:4222".into()],
        secret: None,
        options: [("subject".to_string(), "out".to_string())].into(),
        last_modified_s: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_delivered_in_order_after_failures_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(Mem::default());
    mem.fail_next.store(2, Ordering::SeqCst);
    {
        let store = Arc::new(SqliteSourceStore::open(dir.path()).unwrap());
        store.put_target(&target("out")).unwrap();
        // Enqueued before any runner runs (the server was down): kept in sources.db.
        store.enqueue("out", "m0", None, now()).unwrap();
    }
    let store = Arc::new(SqliteSourceStore::open(dir.path()).unwrap());
    let m = mem.clone();
    let runner = TargetRunner::with_opener(
        store.clone(),
        Arc::new(|_| Ok(None)),
        Arc::new(move |_| Ok(m.clone() as Arc<dyn Publisher>)),
        (Duration::from_millis(10), Duration::from_millis(40)),
    );
    let task = runner.spawn();
    runner
        .enqueue(
            "out",
            "m1",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )
        .unwrap();
    runner.enqueue("out", "m2", None).unwrap();
    assert!(runner
        .enqueue("nope", "x", None)
        .unwrap_err()
        .contains("no target nope"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mem.got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = mem.got.lock().unwrap().clone();
    let bodies: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    assert_eq!(got[1].1[0].0, "traceparent");
    assert!(
        mem.connects.load(Ordering::SeqCst) >= 3,
        "reconnected after each failure"
    );
    // The runner counts a delivery and takes it out of the outbox after the publisher
    // returned: the third may still be on its way there.
    while (runner.status("out").delivered < 3 || store.depth("out").unwrap() > 0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = runner.status("out");
    assert_eq!((st.delivered, st.failed), (3, 2), "{st:?}");
    assert_eq!(store.depth("out").unwrap(), 0);
    runner.stop();
    task.abort();
}

#[test]
fn targets_are_checked() {
    assert!(target("out").validate().is_ok());
    let mut t = target("bad name");
    assert!(t.validate().is_err());
    t = target("out");
    t.options.clear();
    assert!(t
        .validate()
        .unwrap_err()
        .to_string()
        .contains("options.subject"));
    t = target("out");
    t.kind = Kind::Postgres;
    assert!(t.validate().is_err());
    t = target("out");
    t.kind = Kind::Mqtt;
    t.endpoints = vec!["mqtt://127.0.0.1:1883".into()];
    t.options = [
        ("topic".to_string(), "a/b".to_string()),
        ("qos".to_string(), "2".to_string()),
    ]
    .into();
    assert!(t.validate().unwrap_err().to_string().contains("qos"));
    assert_eq!(
        target("out").arn(),
        "arn:nimbus:targets:us-east-1:000000000000:target/out"
    );
}

fn now() -> i64 {
    crate::source::now_ms()
}

/// Publishes slowly (each publish takes 300 ms).
#[derive(Default)]
struct Slow(Mutex<Vec<String>>);

#[async_trait]
impl Publisher for Slow {
    async fn connect(&self) -> Result<()> {
        Ok(())
    }
    async fn publish(&self, payload: &[u8], _headers: &[(String, String)]) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0
            .lock()
            .unwrap()
            .push(String::from_utf8(payload.to_vec()).unwrap());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_publish_in_progress_and_leaves_the_rest_in_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteSourceStore::open(dir.path()).unwrap());
    store.put_target(&target("out")).unwrap();
    for i in 0..5 {
        store.enqueue("out", &format!("m{i}"), None, now()).unwrap();
    }
    let slow = Arc::new(Slow::default());
    let s = slow.clone();
    let runner = TargetRunner::with_opener(
        store.clone(),
        Arc::new(|_| Ok(None)),
        Arc::new(move |_| Ok(s.clone() as Arc<dyn Publisher>)),
        (Duration::from_millis(10), Duration::from_millis(40)),
    );
    let _task = runner.spawn();
    tokio::time::sleep(Duration::from_millis(100)).await; // m0 is being published
    tokio::time::timeout(Duration::from_secs(5), runner.drain())
        .await
        .unwrap();
    assert_eq!(
        *slow.0.lock().unwrap(),
        ["m0"],
        "the publish in progress finished"
    );
    assert_eq!(
        store.depth("out").unwrap(),
        4,
        "the rest stays in the outbox"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        slow.0.lock().unwrap().len(),
        1,
        "nothing more after the drain"
    );
}
