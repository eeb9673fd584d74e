//! The NATS connectors against the real nats-server (JetStream on) at 127.0.0.1:4222.
//! Every test uses its own stream, subjects and consumer (random suffix) and deletes them.

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use nimbus_sources::connectors::nats::{CoreNatsSource, JetStreamSource};
use nimbus_sources::store::MemoryCheckpoints;
use nimbus_sources::{
    Context, Credentials, Kind, Record, Source, SourceError, SourceSpec, StartingPosition,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NATS: &str = "nats://127.0.0.1:4222";

/// Fails loudly when the server is not there (tests never skip silently).
async fn client() -> async_nats::Client {
    match async_nats::connect(NATS).await {
        Ok(c) => c,
        Err(e) => panic!(
            "NATS is not reachable at {NATS} ({e}): start it with `nats-server -js` \
             (JetStream on) before running these tests"
        ),
    }
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn ctx(kind: Kind, topics: &[&str], group: &str, options: &[(&str, &str)]) -> Context {
    Context {
        mapping: format!("map-{group}"),
        spec: SourceSpec {
            kind,
            endpoints: vec![NATS.into()],
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group: Some(group.into()),
            secret: None,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            starting_position: StartingPosition::TrimHorizon,
        },
        credentials: None,
        checkpoints: Arc::new(MemoryCheckpoints::default()),
        batch_size: 10,
        concurrency: 2,
    }
}

/// A stream `NR_<suffix>` on subjects `nr<suffix>.>`, deleted on drop (even when the test
/// panics).
struct TestStream {
    name: String,
    prefix: String,
    js: jetstream::Context,
}

impl TestStream {
    async fn new() -> Self {
        let s = suffix();
        let name = format!("NR_{s}");
        let prefix = format!("nr{s}");
        let js = jetstream::new(client().await);
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!("cannot create a JetStream stream (is JetStream on? nats-server -js): {e}")
        });
        Self { name, prefix, js }
    }

    fn subject(&self, s: &str) -> String {
        format!("{}.{s}", self.prefix)
    }

    async fn publish(&self, subject: &str, body: &str) {
        self.js
            .publish(self.subject(subject), body.as_bytes().to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        // A fresh client on a runtime of its own: the test's runtime is blocked here.
        let name = self.name.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(c) = async_nats::connect(NATS).await {
                    if let Err(e) = jetstream::new(c).delete_stream(&name).await {
                        eprintln!("cannot delete the test stream {name}: {e}");
                    }
                }
            });
        })
        .join()
        .ok();
    }
}

fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn jetstream_records_batches_ack_and_empty_wait() {
    let s = TestStream::new().await;
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    h.append("X-Tag", "a");
    h.append("X-Tag", "b");
    s.js.publish_with_headers(s.subject("a"), h, b"\x00\xffhi".to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    for i in 0..4 {
        s.publish("b", &format!("m{i}")).await;
    }
    let group = format!("g{}", suffix());
    let src = JetStreamSource::new(ctx(Kind::Nats, &[&s.subject(">")], &group, &[])).unwrap();
    src.connect().await.unwrap();
    assert_eq!(src.lag().await, Some(5));

    let first = src.poll(3, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&first), ["1", "2", "3"], "a batch holds at most max");
    let r = &first[0];
    let d = &r.data;
    assert_eq!(d["eventID"], "1");
    assert_eq!(d["eventSource"], "nimbus:nats");
    assert_eq!(
        d["eventSourceARN"],
        format!("arn:nimbus:nats:us-east-1:000000000000:stream/{}", s.name)
    );
    assert_eq!(d["subject"], s.subject("a"));
    assert_eq!(d["data"], "AP9oaQ==");
    assert_eq!(d["headers"]["X-Tag"], serde_json::json!(["a", "b"]));
    assert_eq!(d["stream"], s.name);
    assert_eq!(d["consumer"], group);
    assert_eq!(d["sequence"], 1);
    assert_eq!(d["deliveredCount"], 1);
    assert!(d["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        r.trace.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    let age = nimbus_sources::source::now_ms() - r.produced_ms;
    assert!(
        (0..60_000).contains(&age),
        "produced_ms from the server: {age}"
    );

    let started = Instant::now();
    let rest = src.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ids(&rest), ["4", "5"]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "returns once records came, not after wait: {:?}",
        started.elapsed()
    );
    src.ack(&first).await.unwrap();
    src.ack(&rest).await.unwrap();

    let started = Instant::now();
    let none = src.poll(10, Duration::from_millis(500)).await.unwrap();
    let took = started.elapsed();
    assert!(none.is_empty());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "an empty poll waits about `wait`: {took:?}"
    );
    assert_eq!(src.lag().await, Some(0));

    // A message published while a poll waits ends the poll at once.
    let js = s.js.clone();
    let subject = s.subject("late");
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        js.publish(subject, "late".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let started = Instant::now();
    let got = src.poll(10, Duration::from_secs(5)).await.unwrap();
    late.await.unwrap();
    assert_eq!(ids(&got), ["6"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken by the message: {:?}",
        started.elapsed()
    );
    src.ack(&got).await.unwrap();

    // wait = 0 and a tiny wait do not fail.
    assert!(src.poll(10, Duration::ZERO).await.unwrap().is_empty());
    assert!(src
        .poll(10, Duration::from_millis(2))
        .await
        .unwrap()
        .is_empty());
    src.remove().await.unwrap(); // a named group: kept
}

#[tokio::test]
async fn jetstream_redelivers_unacked_after_reconnect_and_terms_rejects() {
    let s = TestStream::new().await;
    s.publish("x", "one").await;
    s.publish("x", "two").await;
    let group = format!("g{}", suffix());
    let c = ctx(
        Kind::Nats,
        &[&s.subject("x")],
        &group,
        &[("ack_wait_s", "1")],
    );
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&got), ["1", "2"]);

    src.connect().await.unwrap();
    // Records of the old connection are not settled on the new one.
    src.ack(&got).await.unwrap();
    let again = src.poll(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(ids(&again), ["1", "2"], "not acked: delivered again");
    assert_eq!(again[0].data["deliveredCount"], 2);
    src.touch(&again).await.unwrap();
    src.ack(&again).await.unwrap();

    s.publish("x", "three").await;
    let third = src.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&third), ["3"]);
    src.reject(&third).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert!(after.is_empty(), "terminated: not redelivered: {after:?}");
}

#[tokio::test]
async fn jetstream_touch_holds_the_ack_deadline() {
    let s = TestStream::new().await;
    s.publish("x", "slow").await;
    let group = format!("g{}", suffix());
    let c = ctx(
        Kind::Nats,
        &[&s.subject("x")],
        &group,
        &[("ack_wait_s", "1")],
    );
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        src.touch(&got).await.unwrap();
    }
    let none = src.poll(10, Duration::from_millis(300)).await.unwrap();
    assert!(none.is_empty(), "touched within ack_wait: not redelivered");
    src.ack(&got).await.unwrap();
}

#[tokio::test]
async fn jetstream_a_second_source_gets_what_a_killed_one_held() {
    let s = TestStream::new().await;
    for i in 0..3 {
        s.publish("k", &format!("m{i}")).await;
    }
    let group = format!("g{}", suffix());
    let c = ctx(
        Kind::Nats,
        &[&s.subject("k")],
        &group,
        &[("ack_wait_s", "1")],
    );
    let a = JetStreamSource::new(c.clone()).unwrap();
    a.connect().await.unwrap();
    assert_eq!(a.poll(10, Duration::from_secs(2)).await.unwrap().len(), 3);
    drop(a); // kill -9: nothing acked

    let b = JetStreamSource::new(c).unwrap();
    b.connect().await.unwrap();
    let got = b.poll(10, Duration::from_secs(4)).await.unwrap();
    assert_eq!(ids(&got), ["1", "2", "3"]);
    b.ack(&got).await.unwrap();
}

#[tokio::test]
async fn jetstream_max_ack_pending_stops_the_flow() {
    let s = TestStream::new().await;
    for i in 0..40 {
        s.publish("f", &format!("m{i}")).await;
    }
    let group = format!("g{}", suffix());
    let mut c = ctx(Kind::Nats, &[&s.subject("f")], &group, &[]);
    c.batch_size = 2;
    c.concurrency = 1;
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.extend(src.poll(100, Duration::from_millis(300)).await.unwrap());
    }
    assert!(
        held.len() >= 2 && held.len() <= 2 + 16,
        "unacknowledged records are bounded by batch x concurrency + margin: {}",
        held.len()
    );
    // At the limit a poll is empty (not an error) after about `wait`.
    let started = Instant::now();
    let blocked = src.poll(100, Duration::from_millis(500)).await.unwrap();
    assert!(
        blocked.is_empty(),
        "{} more beyond the limit",
        blocked.len()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "a throttled poll waits (no tight loop): {took:?}"
    );
    src.ack(&held).await.unwrap();
    let mut more = Vec::new();
    for _ in 0..3 {
        more = src.poll(100, Duration::from_secs(1)).await.unwrap();
        if !more.is_empty() {
            break;
        }
    }
    assert!(!more.is_empty(), "acking lets the flow go on");
}

#[tokio::test]
async fn jetstream_consumer_filter_is_updated() {
    let s = TestStream::new().await;
    let group = format!("g{}", suffix());
    let a = JetStreamSource::new(ctx(Kind::Nats, &[&s.subject("a")], &group, &[])).unwrap();
    a.connect().await.unwrap();
    drop(a);
    s.publish("a", "not for b").await;
    s.publish("b", "for b").await;
    let b = JetStreamSource::new(ctx(Kind::Nats, &[&s.subject("b")], &group, &[])).unwrap();
    b.connect().await.unwrap();
    let got = b.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].data["subject"], s.subject("b"));
    b.ack(&got).await.unwrap();
}

#[tokio::test]
async fn jetstream_remove_deletes_a_derived_consumer() {
    let s = TestStream::new().await;
    let mut c = ctx(Kind::Nats, &[&s.subject("r")], "unused", &[]);
    c.spec.group = None;
    c.mapping = format!("{}-0000-0000", suffix());
    let name = c.group();
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let st = s.js.get_stream(&s.name).await.unwrap();
    assert!(st.consumer_info(&name).await.is_ok());
    src.remove().await.unwrap();
    assert!(st.consumer_info(&name).await.is_err(), "consumer deleted");
}

#[tokio::test]
async fn jetstream_missing_stream_and_unreachable_server() {
    let _ = client().await;
    let sfx = suffix();
    let nomatch = format!("nomatch{sfx}.a");
    let src = JetStreamSource::new(ctx(Kind::Nats, &[&nomatch], "g", &[])).unwrap();
    match src.connect().await {
        Err(SourceError::Missing(m)) => {
            assert!(m.contains(&nomatch) && m.contains("nats stream add"), "{m}")
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let named = format!("NOPE_{sfx}");
    let src =
        JetStreamSource::new(ctx(Kind::Nats, &[&nomatch], "g", &[("stream", &named)])).unwrap();
    match src.connect().await {
        Err(SourceError::Missing(m)) => assert!(m.contains(&named), "{m}"),
        other => panic!("expected Missing, got {other:?}"),
    }
    let mut c = ctx(Kind::Nats, &["a"], "g", &[]);
    c.spec.endpoints = vec!["nats://127.0.0.1:1".into()];
    let src = JetStreamSource::new(c.clone()).unwrap();
    assert!(
        matches!(src.connect().await, Err(SourceError::Unreachable { .. })),
        "a closed port is Unreachable"
    );
    c.spec.kind = Kind::NatsCore;
    let core = CoreNatsSource::new(c).unwrap();
    assert!(matches!(
        core.connect().await,
        Err(SourceError::Unreachable { .. })
    ));
}

/// Option `create_stream`: a missing stream is created with the mapping's subjects, an
/// existing one is used as it is; the option is checked when the mapping is read.
#[tokio::test]
async fn jetstream_create_stream_makes_a_missing_stream() {
    let c = client().await;
    let sfx = suffix();
    let (name, subject) = (format!("NC_{sfx}"), format!("nc{sfx}.>"));
    let opts = [("stream", name.as_str()), ("create_stream", "true")];
    let src = JetStreamSource::new(ctx(Kind::Nats, &[&subject], "g", &opts)).unwrap();
    src.connect().await.unwrap();
    let js = jetstream::new(c);
    let created = js.get_stream(&name).await.unwrap().cached_info().clone();
    let cleanup = async {
        js.delete_stream(&name).await.unwrap();
    };
    assert_eq!(created.config.subjects, vec![subject.clone()]);
    js.publish(format!("nc{sfx}.a"), "hi".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let got = src.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&got), ["1"]);
    src.ack(&got).await.unwrap();
    // A second mapping finds the stream (and its message) where it is.
    let again = JetStreamSource::new(ctx(Kind::Nats, &[&subject], "h", &opts)).unwrap();
    again.connect().await.unwrap();
    assert_eq!(again.lag().await, Some(1));
    cleanup.await;
    for bad in [
        &[("create_stream", "true")][..],
        &[("stream", "X"), ("create_stream", "yes")][..],
    ] {
        match JetStreamSource::new(ctx(Kind::Nats, &[&subject], "g", bad)) {
            Err(SourceError::Config(m)) => assert!(m.contains("create_stream"), "{m}"),
            Err(e) => panic!("expected Config, got {e:?}"),
            Ok(_) => panic!("{bad:?} was accepted"),
        }
    }
}

/// A private nats-server (JetStream on, optionally with user/password) on a free port,
/// killed on drop: for the auth and the restart tests.
struct PrivateServer {
    child: Option<std::process::Child>,
    port: u16,
    auth: bool,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    async fn start(auth: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Self {
            child: None,
            port,
            auth,
            dir: tempfile::tempdir().unwrap(),
        };
        s.run().await;
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let mut cmd = std::process::Command::new("/usr/sbin/nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        if self.auth {
            cmd.args(["--user", "nimbus", "--pass", "right-pass"]);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start /usr/sbin/nats-server: {e}")),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn jetstream_survives_a_server_restart() {
    let mut server = PrivateServer::start(false).await;
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "RESTART".into(),
        subjects: vec!["restart.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("restart.a", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut c = ctx(Kind::Nats, &["restart.>"], "g", &[("ack_wait_s", "1")]);
    c.spec.endpoints = vec![server.url()];
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&got), ["1"]);

    server.stop();
    let started = Instant::now();
    let err = src
        .poll(10, Duration::from_millis(500))
        .await
        .expect_err("a poll without a server fails");
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    match src.connect().await {
        Err(SourceError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }

    server.run().await;
    src.connect().await.unwrap();
    // Not acked before the restart: delivered again (the stream and consumer are on disk).
    let again = src.poll(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(ids(&again), ["1"]);
    src.ack(&again).await.unwrap();
}

#[tokio::test]
async fn nats_wrong_password_is_auth() {
    let server = PrivateServer::start(true).await;
    let mut c = ctx(Kind::Nats, &["auth.a"], "g", &[]);
    c.spec.endpoints = vec![format!("nats://127.0.0.1:{}", server.port)];
    c.credentials = Some(Credentials {
        username: Some("nimbus".into()),
        password: Some("wrong-pass".into()),
    });
    let src = JetStreamSource::new(c.clone()).unwrap();
    match src.connect().await {
        Err(SourceError::Auth(m)) => {
            assert!(!m.contains("wrong-pass") && m.contains("nimbus"), "{m}")
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    c.credentials = None;
    let src = JetStreamSource::new(c.clone()).unwrap();
    assert!(matches!(src.connect().await, Err(SourceError::Auth(_))));

    // The right password gets through (then the stream is missing on this server).
    c.credentials = Some(Credentials {
        username: Some("nimbus".into()),
        password: Some("right-pass".into()),
    });
    let src = JetStreamSource::new(c).unwrap();
    assert!(matches!(src.connect().await, Err(SourceError::Missing(_))));
}

#[tokio::test]
async fn core_nats_delivers_published_messages_and_bounds_its_buffer() {
    let nc = client().await;
    let subject = format!("core{}", suffix());
    let mut c = ctx(Kind::NatsCore, &[&format!("{subject}.>")], "g", &[]);
    c.batch_size = 2;
    c.concurrency = 1;
    let src = CoreNatsSource::new(c).unwrap();
    src.connect().await.unwrap();

    let started = Instant::now();
    assert!(src
        .poll(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    let mut h = HeaderMap::new();
    h.insert("traceparent", "00-aa-bb-01");
    nc.publish_with_headers(format!("{subject}.a"), h, "hello".into())
        .await
        .unwrap();
    nc.publish(format!("{subject}.b"), "world".into())
        .await
        .unwrap();
    nc.flush().await.unwrap();
    let mut got = src.poll(10, Duration::from_secs(2)).await.unwrap();
    if got.len() < 2 {
        got.extend(src.poll(10, Duration::from_secs(2)).await.unwrap());
    }
    assert_eq!(got.len(), 2);
    let d = &got[0].data;
    assert_eq!(d["eventSource"], "nimbus:nats");
    assert_eq!(d["eventID"], got[0].id);
    assert_eq!(d["subject"], format!("{subject}.a"));
    assert_eq!(d["data"], "aGVsbG8=");
    assert!(d.get("stream").is_none());
    assert_eq!(got[0].trace.as_deref(), Some("00-aa-bb-01"));
    assert_ne!(got[0].id, got[1].id);
    src.ack(&got).await.unwrap();

    // The runner does not poll: the buffer keeps the newest batch x concurrency + 16.
    for i in 0..100 {
        nc.publish(format!("{subject}.c"), format!("{i}").into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = src.poll(1000, Duration::from_secs(1)).await.unwrap();
    assert_eq!(kept.len(), 18, "bounded buffer");
    assert_eq!(
        kept.last().unwrap().data["data"],
        "OTk=",
        "the newest is kept"
    );
}

#[tokio::test]
async fn jetstream_a_dropped_poll_loses_nothing() {
    let s = TestStream::new().await;
    let group = format!("g{}", suffix());
    let src = JetStreamSource::new(ctx(Kind::Nats, &[&s.subject("d")], &group, &[])).unwrap();
    src.connect().await.unwrap();
    // The runner drops a poll while its pull request waits; a message then arrives and
    // the server sends it to that request (ack_wait is 30 s: it must not wait for that).
    let cut = tokio::time::timeout(
        Duration::from_millis(200),
        src.poll(10, Duration::from_secs(2)),
    );
    assert!(cut.await.is_err());
    s.publish("d", "during").await;
    let started = Instant::now();
    let got = src.poll(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(ids(&got), ["1"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    src.ack(&got).await.unwrap();
    // The old request's end (408 at its expiry) does not end a later poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.publish("d", "after").await;
    let got = src.poll(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(ids(&got), ["2"]);
    src.ack(&got).await.unwrap();
}

#[tokio::test]
async fn jetstream_several_subjects_filter_or_are_refused() {
    let s = TestStream::new().await;
    let group = format!("g{}", suffix());
    let c = ctx(
        Kind::Nats,
        &[&s.subject("a"), &s.subject("b")],
        &group,
        &[("stream", &s.name)],
    );
    let src = JetStreamSource::new(c).unwrap();
    match src.connect().await {
        Ok(()) => {
            // nats-server 2.10+: only the two subjects.
            s.publish("c", "no").await;
            s.publish("b", "yes").await;
            let got = src.poll(10, Duration::from_secs(2)).await.unwrap();
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].data["subject"], s.subject("b"));
        }
        // Older servers cannot filter on several subjects: refused, not unfiltered.
        Err(SourceError::Config(m)) => assert!(m.contains("2.10"), "{m}"),
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn core_nats_queue_group_shares_the_messages() {
    let nc = client().await;
    let subject = format!("coreq{}", suffix());
    let c = ctx(
        Kind::NatsCore,
        &[&subject],
        "g",
        &[("queue_group", "workers")],
    );
    let a = CoreNatsSource::new(c.clone()).unwrap();
    let b = CoreNatsSource::new(c).unwrap();
    a.connect().await.unwrap();
    b.connect().await.unwrap();
    for i in 0..20 {
        nc.publish(subject.clone(), format!("{i}").into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_a = a.poll(100, Duration::from_millis(100)).await.unwrap().len();
    let got_b = b.poll(100, Duration::from_millis(100)).await.unwrap().len();
    assert_eq!(
        got_a + got_b,
        20,
        "each message to one member: {got_a} + {got_b}"
    );
}

/// Lists (and with NR_CLEAN=1 deletes) streams left by earlier runs: a maintenance aid.
#[tokio::test]
#[ignore]
async fn leftover_test_streams() {
    use futures_util::StreamExt;
    let js = jetstream::new(client().await);
    let mut names = js.stream_names();
    let mut left = Vec::new();
    while let Some(Ok(n)) = names.next().await {
        if n.starts_with("NR_") {
            left.push(n);
        }
    }
    eprintln!("leftover test streams: {left:?}");
    if std::env::var("NR_CLEAN").is_ok() {
        for n in &left {
            js.delete_stream(n).await.unwrap();
        }
    }
}

/// Throughput of poll + ack (run by hand: `--ignored --nocapture jetstream_throughput`).
#[tokio::test]
#[ignore]
async fn jetstream_throughput() {
    let s = TestStream::new().await;
    let n = 20_000;
    let started = Instant::now();
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            s.js.publish(s.subject("t"), format!("{{\"n\":{i}}}").into_bytes().into())
                .await
                .unwrap(),
        );
        // async-nats bounds the acks in flight: collect them before it blocks.
        if acks.len() == 500 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
    let published = started.elapsed();
    let mut c = ctx(Kind::Nats, &[&s.subject("t")], "bench", &[]);
    c.batch_size = 100;
    c.concurrency = 4;
    let src = JetStreamSource::new(c).unwrap();
    src.connect().await.unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let batch = src.poll(100, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty());
        got += batch.len();
        src.ack(&batch).await.unwrap();
    }
    let consumed = started.elapsed();
    eprintln!(
        "JetStream: published {n} in {published:?}; polled+acked in {consumed:?} = {:.0} records/s",
        n as f64 / consumed.as_secs_f64()
    );
}

/// TCP connections of this process's network namespace to `port` (run alone).
fn connections_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let needle = format!(":{port:04X} 01");
    tcp.lines().filter(|l| l.contains(&needle)).count()
}

/// Reconnecting does not leak connections (run alone: `--ignored reconnects_do_not_leak`).
#[tokio::test]
#[ignore]
async fn reconnects_do_not_leak() {
    let s = TestStream::new().await;
    let js = JetStreamSource::new(ctx(Kind::Nats, &[&s.subject("l")], "leak", &[])).unwrap();
    let core = CoreNatsSource::new(ctx(Kind::NatsCore, &[&s.subject("l")], "leak", &[])).unwrap();
    let mut counts = Vec::new();
    for round in 0..51 {
        js.connect().await.unwrap();
        core.connect().await.unwrap();
        let _ = js.poll(1, Duration::from_millis(1)).await.unwrap();
        let _ = core.poll(1, Duration::from_millis(1)).await.unwrap();
        if round == 0 || round == 50 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            counts.push(connections_to(4222));
        }
    }
    eprintln!("connections to 4222 after 1 and after 51 reconnects: {counts:?}");
    assert!(counts[1] <= counts[0], "{counts:?}");
}
