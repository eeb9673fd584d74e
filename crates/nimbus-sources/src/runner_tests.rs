//! The runner's semantics, driven with an in-memory source (the real connectors are
//! tested against the real brokers in `tests/`) and a scripted function.

use super::*;
use crate::model::{OnFailure, SourceSpec, StartingPosition};
use crate::store::SqliteSourceStore;
use std::future::Future;
use std::pin::Pin;

/// An in-memory broker: records in order, acknowledgements and rejections recorded, the
/// next poll failing on demand (a cut connection). Ordered like a stream when `ordered`:
/// after a reconnect it starts again from the first unacknowledged record.
#[derive(Default)]
struct Mem {
    inner: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    records: Vec<(String, Value)>,
    next: usize,
    acked: Vec<String>,
    rejected: Vec<String>,
    connects: u32,
    fail_polls: u32,
}

#[async_trait]
impl Source for Mem {
    async fn connect(&self) -> crate::Result<()> {
        let mut st = self.inner.lock().unwrap();
        st.connects += 1;
        // Start again after the last acknowledged record (at least once).
        let acked: HashSet<String> = st.acked.iter().cloned().collect();
        st.next = st
            .records
            .iter()
            .position(|(id, _)| !acked.contains(id))
            .unwrap_or(st.records.len());
        Ok(())
    }
    async fn poll(&self, max: usize, wait: Duration) -> crate::Result<Vec<Record>> {
        let out = {
            let mut st = self.inner.lock().unwrap();
            if st.fail_polls > 0 {
                st.fail_polls -= 1;
                return Err(SourceError::Unreachable {
                    endpoint: "mem".into(),
                    reason: "cut".into(),
                });
            }
            let end = (st.next + max).min(st.records.len());
            let out: Vec<Record> = st.records[st.next..end]
                .iter()
                .map(|(id, data)| Record::new(id.clone(), data.clone(), now_ms(), Arc::new(())))
                .collect();
            st.next = end;
            out
        };
        if out.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
        }
        Ok(out)
    }
    async fn ack(&self, records: &[Record]) -> crate::Result<()> {
        let mut st = self.inner.lock().unwrap();
        st.acked.extend(records.iter().map(|r| r.id.clone()));
        Ok(())
    }
    async fn reject(&self, records: &[Record]) -> crate::Result<()> {
        let mut st = self.inner.lock().unwrap();
        st.rejected.extend(records.iter().map(|r| r.id.clone()));
        Ok(())
    }
}

type Script = Box<dyn Fn(&[String], usize) -> Attempt + Send + Sync>;

/// A function: records every batch's ids and answers with `script(ids, call number)`;
/// tracks how many invocations run at once.
struct Function {
    calls: Mutex<Vec<Vec<String>>>,
    running: AtomicU32,
    most: AtomicU32,
    delay: Duration,
    script: Script,
}

impl Function {
    fn new(delay: Duration, script: Script) -> Arc<Self> {
        Arc::new(Self {
            calls: Default::default(),
            running: AtomicU32::new(0),
            most: AtomicU32::new(0),
            delay,
            script,
        })
    }
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Invoker for Function {
    fn invoke<'a>(
        &'a self,
        _function: &'a str,
        _qualifier: &'a str,
        _request_id: &'a str,
        payload: String,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let ev: Value = serde_json::from_str(&payload).unwrap();
            let ids: Vec<String> = ev["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["eventID"].as_str().unwrap().to_string())
                .collect();
            tokio::time::sleep(self.delay).await;
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(ids.clone());
                calls.len()
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            (self.script)(&ids, n)
        })
    }
}

fn ok() -> Attempt {
    Attempt::Success {
        body: String::new(),
        version: "$LATEST".into(),
    }
}

fn error() -> Attempt {
    Attempt::FunctionError {
        body: "{}".into(),
        error_type: "Unhandled".into(),
        version: "$LATEST".into(),
    }
}

fn failures(ids: &[&str]) -> Attempt {
    let items: Vec<Value> = ids.iter().map(|i| json!({"itemIdentifier": i})).collect();
    Attempt::Success {
        body: json!({ "batchItemFailures": items }).to_string(),
        version: "$LATEST".into(),
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<(String, Value)>>);

#[async_trait]
impl FailureSink for Sink {
    async fn send(&self, arn: &str, record: &Value, _key: String) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((arn.to_string(), record.clone()));
        Ok(())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    runner: Arc<SourceRunner>,
    mem: Arc<Mem>,
    sink: Arc<Sink>,
    task: JoinHandle<()>,
    mapping: SourceMapping,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.runner.stop();
        self.task.abort();
    }
}

fn records(n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            let id = format!("r{i:03}");
            (id.clone(), json!({"eventID": id, "n": i}))
        })
        .collect()
}

fn start(
    kind: Kind,
    n: usize,
    change: impl FnOnce(&mut SourceMapping),
    function: Arc<Function>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SourceStore> = Arc::new(SqliteSourceStore::open(dir.path()).unwrap());
    let mut m = SourceMapping::new(
        "0a1b2c3d-0000".into(),
        "f".into(),
        SourceSpec {
            kind,
            endpoints: vec![format!("{}://h", kind.schemes()[0])],
            topics: vec!["t".into()],
            group: None,
            secret: None,
            options: Default::default(),
            starting_position: StartingPosition::TrimHorizon,
        },
    );
    m.batch_size = 10;
    change(&mut m);
    m.validate().unwrap();
    store.create(&m).unwrap();
    let mem = Arc::new(Mem::default());
    mem.inner.lock().unwrap().records = records(n);
    let opener_mem = mem.clone();
    let cfg = RunnerConfig {
        poll_wait: Duration::from_millis(50),
        reconcile_every: Duration::from_millis(200),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
        lagging_after: Duration::from_secs(60),
    };
    let runner = SourceRunner::with_opener(
        store,
        Arc::new(|_| Ok(None)),
        cfg,
        Arc::new(move |_| Ok(opener_mem.clone() as Arc<dyn Source>)),
    );
    let sink = Arc::new(Sink::default());
    runner.set_failure_sink(sink.clone());
    let task = runner.spawn(function);
    Harness {
        _dir: dir,
        runner,
        mem,
        sink,
        task,
        mapping: m,
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("r{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_after_success() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| ok()));
    let h = start(Kind::Nats, 25, |_| {}, f.clone());
    until("all acked", || {
        h.mem.inner.lock().unwrap().acked.len() == 25
    })
    .await;
    assert!(f.calls().iter().all(|c| c.len() <= 10), "{:?}", f.calls());
    assert_eq!(
        sorted(h.mem.inner.lock().unwrap().acked.clone()),
        ids(0..25)
    );
    let st = h.runner.status(&h.mapping);
    assert_eq!(st.state, "connected");
    assert_eq!(st.records, 25);
    assert_eq!(st.last_processing_result(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_redelivers_only_the_failed_records() {
    // The first call reports r001 failed; later calls succeed.
    let f = Function::new(
        Duration::ZERO,
        Box::new(|ids, n| {
            if n == 1 && ids.contains(&"r001".to_string()) {
                failures(&["r001"])
            } else {
                ok()
            }
        }),
    );
    let h = start(
        Kind::Redis,
        5,
        |m| {
            m.report_batch_item_failures = true;
            m.maximum_concurrency = 1;
        },
        f.clone(),
    );
    until("all acked", || h.mem.inner.lock().unwrap().acked.len() == 5).await;
    let calls = f.calls();
    assert_eq!(calls[0], ids(0..5));
    assert_eq!(calls[1], vec!["r001".to_string()], "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_source_checkpoints_before_the_first_failed_record() {
    let f = Function::new(
        Duration::ZERO,
        Box::new(|_, n| if n == 1 { failures(&["r003"]) } else { ok() }),
    );
    let h = start(
        Kind::Postgres,
        6,
        |m| m.report_batch_item_failures = true,
        f.clone(),
    );
    until("all acked", || h.mem.inner.lock().unwrap().acked.len() == 6).await;
    // r000..r002 acknowledged in order, then r003.. retried as one batch, in order.
    assert_eq!(h.mem.inner.lock().unwrap().acked, ids(0..6));
    assert_eq!(f.calls()[1], ids(3..6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_source_gives_up_only_the_reported_records() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| failures(&["r003"])));
    let h = start(
        Kind::Postgres,
        6,
        |m| {
            m.report_batch_item_failures = true;
            m.maximum_retry_attempts = 1;
            m.on_failure = Some(OnFailure {
                destination: "arn:aws:sqs:us-east-1:000000000000:dlq".into(),
            });
        },
        f.clone(),
    );
    until("all acked", || h.mem.inner.lock().unwrap().acked.len() == 6).await;
    assert_eq!(h.mem.inner.lock().unwrap().acked, ids(0..6));
    let sent = h.sink.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1["SourceBatchInfo"]["batchSize"], 1);
    assert_eq!(sent[0].1["SourceBatchInfo"]["firstRecordId"], "r003");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_the_on_failure_destination() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| error()));
    let h = start(
        Kind::Rabbitmq,
        3,
        |m| {
            m.maximum_retry_attempts = 2;
            m.on_failure = Some(OnFailure {
                destination: "arn:aws:sqs:us-east-1:000000000000:dlq".into(),
            });
        },
        f.clone(),
    );
    until("dead-lettered", || !h.sink.0.lock().unwrap().is_empty()).await;
    until("acked", || h.mem.inner.lock().unwrap().acked.len() == 3).await;
    assert_eq!(f.calls().len(), 3, "one attempt and two retries");
    let (arn, record) = h.sink.0.lock().unwrap()[0].clone();
    assert_eq!(arn, "arn:aws:sqs:us-east-1:000000000000:dlq");
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["SourceBatchInfo"]["batchSize"], 3);
    assert_eq!(record["payload"]["Records"][2]["eventID"], "r002");
    assert!(h.mem.inner.lock().unwrap().rejected.is_empty());
    assert_eq!(h.runner.status(&h.mapping).dead_lettered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_destination_the_broker_dead_letters() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| error()));
    let h = start(Kind::Nats, 2, |m| m.maximum_retry_attempts = 0, f.clone());
    until("rejected", || {
        h.mem.inner.lock().unwrap().rejected.len() == 2
    })
    .await;
    assert_eq!(f.calls().len(), 1);
    assert!(h.mem.inner.lock().unwrap().acked.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bisection_isolates_the_poison_record() {
    // Any batch holding r005 fails.
    let f = Function::new(
        Duration::ZERO,
        Box::new(|ids, _| {
            if ids.contains(&"r005".to_string()) {
                error()
            } else {
                ok()
            }
        }),
    );
    let h = start(
        Kind::Postgres,
        8,
        |m| {
            m.bisect_batch_on_function_error = true;
            m.maximum_retry_attempts = 1;
        },
        f.clone(),
    );
    until("rejected", || {
        h.mem.inner.lock().unwrap().rejected.len() == 1
    })
    .await;
    until("the rest acked", || {
        h.mem.inner.lock().unwrap().acked.len() == 7
    })
    .await;
    let st = h.mem.inner.lock().unwrap();
    assert_eq!(st.rejected, vec!["r005".to_string()]);
    // An ordered source acknowledges in order, around the dead-lettered record.
    let mut want = ids(0..8);
    want.retain(|i| i != "r005");
    assert_eq!(st.acked, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_concurrency_holds() {
    let f = Function::new(Duration::from_millis(60), Box::new(|_, _| ok()));
    let h = start(
        Kind::Mqtt,
        60,
        |m| {
            m.batch_size = 2;
            m.maximum_concurrency = 3;
        },
        f.clone(),
    );
    until("all acked", || {
        h.mem.inner.lock().unwrap().acked.len() == 60
    })
    .await;
    assert_eq!(f.most.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_are_not_retries() {
    let f = Function::new(
        Duration::ZERO,
        Box::new(|_, n| {
            if n <= 3 {
                Attempt::Throttled("busy".into())
            } else {
                ok()
            }
        }),
    );
    let h = start(Kind::Nats, 2, |m| m.maximum_retry_attempts = 0, f.clone());
    until("acked", || h.mem.inner.lock().unwrap().acked.len() == 2).await;
    assert!(h.mem.inner.lock().unwrap().rejected.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_acknowledge_without_invoking() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| ok()));
    let h = start(
        Kind::Postgres,
        10,
        |m| m.filters = vec![r#"{"n": [{"numeric": [">=", 7]}]}"#.into()],
        f.clone(),
    );
    until("acked", || h.mem.inner.lock().unwrap().acked.len() == 10).await;
    let sent: Vec<String> = f.calls().concat();
    assert_eq!(sent, ids(7..10));
    assert_eq!(h.runner.status(&h.mapping).filtered, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_reconnects_and_reports_the_error() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| ok()));
    let h = start(Kind::Redis, 0, |_| {}, f.clone());
    until("connected", || h.mem.inner.lock().unwrap().connects == 1).await;
    h.mem.inner.lock().unwrap().fail_polls = 2;
    until("reconnected twice", || {
        h.mem.inner.lock().unwrap().connects == 3
    })
    .await;
    let st = h.runner.status(&h.mapping);
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach mem"),
        "{st:?}"
    );
    h.mem.inner.lock().unwrap().records = records(3);
    until("acked", || h.mem.inner.lock().unwrap().acked.len() == 3).await;
    assert_eq!(h.runner.status(&h.mapping).state, "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_payload_limit_is_dead_lettered_not_stuck() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| ok()));
    let h = start(Kind::Postgres, 0, |_| {}, f.clone());
    {
        let mut st = h.mem.inner.lock().unwrap();
        st.records = records(3);
        st.records[1].1["blob"] = json!("x".repeat(MAX_PAYLOAD));
    }
    until("settled", || {
        let st = h.mem.inner.lock().unwrap();
        st.acked.len() == 2 && st.rejected.len() == 1
    })
    .await;
    let st = h.mem.inner.lock().unwrap();
    assert_eq!(st.rejected, vec!["r001".to_string()]);
    assert_eq!(st.acked, vec!["r000".to_string(), "r002".to_string()]);
    let status = h.runner.status(&h.mapping);
    assert!(
        status
            .last_error
            .clone()
            .unwrap()
            .contains("larger than the 6 MB"),
        "{status:?}"
    );
}

#[test]
fn filters_see_base64_json_decoded() {
    let data = json!({"eventID": "1", "data": "eyJraW5kIjoia2VlcCJ9"});
    assert_eq!(filter_view(&data)["data"]["kind"], "keep");
    let plain = json!({"data": "bm90IGpzb24="});
    assert_eq!(filter_view(&plain)["data"], "bm90IGpzb24=");
    let mqtt = json!({"payload": {"kind": "keep"}});
    assert_eq!(filter_view(&mqtt)["payload"]["kind"], "keep");
}

#[test]
fn oversized_batches_are_split() {
    let rec = |size: usize| {
        let mut r = Record::new("i".into(), json!({}), 0, Arc::new(()));
        r.size = size;
        r
    };
    assert_eq!(fitting(&[rec(10), rec(10)]), 2);
    let big: Vec<Record> = (0..20).map(|_| rec(1024 * 1024)).collect();
    assert_eq!(fitting(&big), 5);
    assert_eq!(fitting(&[rec(MAX_PAYLOAD * 2)]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_leaves_a_filling_batch_to_the_broker_at_once() {
    let f = Function::new(Duration::ZERO, Box::new(|_, _| ok()));
    // 3 records, batches of 10 filled for up to a minute: the batch is still filling.
    let h = start(Kind::Nats, 3, |m| m.window_s = 60, f.clone());
    until("the records polled", || {
        h.mem.inner.lock().unwrap().next == 3
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), h.runner.drain())
        .await
        .expect("the drain does not wait for the batching window");
    assert!(f.calls().is_empty(), "never delivered");
    assert!(
        h.mem.inner.lock().unwrap().acked.is_empty(),
        "unacknowledged: the broker delivers them again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_the_batches_being_settled() {
    let f = Function::new(Duration::from_millis(400), Box::new(|_, _| ok()));
    let h = start(Kind::Nats, 5, |_| {}, f.clone());
    until("a batch in flight", || {
        f.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let drain = {
        let runner = h.runner.clone();
        tokio::spawn(async move { runner.drain().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!drain.is_finished(), "the batch is still being settled");
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.calls().len(), 1);
    assert_eq!(h.mem.inner.lock().unwrap().acked.len(), 5, "settled");
}
