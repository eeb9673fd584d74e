//! The Redis Streams connector against the real Redis at 127.0.0.1:6379. Every test uses
//! its own streams and groups (random suffix) and deletes its keys (and ACL users).

use nimbus_sources::connectors::redis::RedisSource;
use nimbus_sources::store::MemoryCheckpoints;
use nimbus_sources::{
    Context, Credentials, Kind, Record, Source, SourceError, SourceSpec, StartingPosition,
};
use redis::Commands;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REDIS: &str = "redis://127.0.0.1:6379";

/// A synchronous connection for setting up and checking; fails loudly without Redis.
fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(3)))
        .unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {url} ({e}): start it with `redis-server` \
                 (port 6379) before running these tests"
            )
        })
}

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn ctx(streams: &[&str], group: &str, options: &[(&str, &str)]) -> Context {
    Context {
        mapping: format!("map-{group}"),
        spec: SourceSpec {
            kind: Kind::Redis,
            endpoints: vec![REDIS.into()],
            topics: streams.iter().map(|t| t.to_string()).collect(),
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

/// Keys (and ACL users) deleted on drop, even when the test panics.
struct Cleanup {
    url: String,
    keys: Vec<String>,
    users: Vec<String>,
}

impl Cleanup {
    fn new(keys: &[&str]) -> Self {
        Self::on(REDIS, keys)
    }
    fn on(url: &str, keys: &[&str]) -> Self {
        let mut c = redis_conn(url);
        for k in keys {
            let _: () = c.del(*k).unwrap();
        }
        Self {
            url: url.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            users: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut c = redis_conn(&self.url);
        for k in &self.keys {
            let _: redis::RedisResult<()> = c.del(k);
        }
        for u in &self.users {
            let _: redis::RedisResult<redis::Value> =
                redis::cmd("ACL").arg("DELUSER").arg(u).query(&mut c);
        }
    }
}

fn xadd(c: &mut redis::Connection, stream: &str, fields: &[(&str, &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(c).unwrap()
}

fn pending_count(c: &mut redis::Connection, stream: &str, group: &str) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(c)
        .unwrap();
    match v {
        redis::Value::Array(a) => match a.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn records_batches_ack_and_empty_wait() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    let first = xadd(
        &mut c,
        &s,
        &[
            ("name", b"ada"),
            ("blob", &[0xff, 0x00]),
            ("traceparent", b"00-aa-bb-01"),
        ],
    );
    let mut all = vec![first.clone()];
    for i in 0..4 {
        all.push(xadd(&mut c, &s, &[("n", i.to_string().as_bytes())]));
    }
    let group = format!("g{}", suffix());
    let src = RedisSource::new(ctx(&[&s], &group, &[])).unwrap();
    src.connect().await.unwrap();
    assert_eq!(src.lag().await, Some(5));

    let a = src.poll(2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(ids(&a), all[..2]);
    let d = &a[0].data;
    assert_eq!(d["eventID"], first);
    assert_eq!(d["eventSource"], "nimbus:redis");
    assert_eq!(
        d["eventSourceARN"],
        format!("arn:nimbus:redis:us-east-1:000000000000:stream/{s}")
    );
    assert_eq!(d["stream"], s);
    assert_eq!(d["id"], first);
    assert_eq!(d["fields"]["name"], "ada");
    assert_eq!(d["binaryFields"]["blob"], "/wA=");
    let ms: i64 = first.split('-').next().unwrap().parse().unwrap();
    assert_eq!(d["timestamp"], ms);
    assert_eq!(a[0].produced_ms, ms);
    assert_eq!(a[0].trace.as_deref(), Some("00-aa-bb-01"));

    let started = Instant::now();
    let b = src.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ids(&b), all[2..]);
    assert!(started.elapsed() < Duration::from_secs(1));
    src.ack(&a).await.unwrap();
    src.ack(&b).await.unwrap();
    assert_eq!(pending_count(&mut c, &s, &group), 0, "acked: gone");

    let started = Instant::now();
    let none = src.poll(10, Duration::from_millis(500)).await.unwrap();
    let took = started.elapsed();
    assert!(none.is_empty());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "an empty poll waits about `wait`: {took:?}"
    );
    // A new entry wakes a blocked poll at once.
    let s2 = s.clone();
    let adder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = redis_conn(REDIS);
        xadd(&mut c, &s2, &[("late", b"1")])
    });
    let started = Instant::now();
    let late = src.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ids(&late), [adder.await.unwrap()]);
    assert!(started.elapsed() < Duration::from_secs(2));
    src.ack(&late).await.unwrap();
    assert_eq!(src.lag().await, Some(0));
}

#[tokio::test]
async fn unacked_entries_are_read_again_after_reconnect_and_rejects_dead_letter() {
    let s = format!("nr_s_{}", suffix());
    let dl = format!("nr_dl_{}", suffix());
    let _clean = Cleanup::new(&[&s, &dl]);
    let mut c = redis_conn(REDIS);
    let e1 = xadd(&mut c, &s, &[("k", b"one")]);
    let e2 = xadd(&mut c, &s, &[("k", b"two")]);
    let group = format!("g{}", suffix());
    let src = RedisSource::new(ctx(&[&s], &group, &[("dead_letter_stream", &dl)])).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got), [e1.clone(), e2.clone()]);

    src.connect().await.unwrap();
    src.ack(&got).await.unwrap(); // an older connection's records: ignored
    assert_eq!(pending_count(&mut c, &s, &group), 2);
    let again = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&again), [e1.clone(), e2.clone()], "own pending re-read");
    src.ack(&again[..1]).await.unwrap();
    src.reject(&again[1..]).await.unwrap();
    assert_eq!(pending_count(&mut c, &s, &group), 0, "reject acknowledges");
    let dead: redis::streams::StreamRangeReply = c.xrange_all(&dl).unwrap();
    assert_eq!(dead.ids.len(), 1);
    assert_eq!(
        dead.ids[0].get::<String>("k").as_deref(),
        Some("two"),
        "the entry's fields are copied to the dead-letter stream"
    );
    assert!(src
        .poll(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_killed_consumers_entries_are_claimed_or_reread() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    let e: Vec<String> = (0..3)
        .map(|i| xadd(&mut c, &s, &[("n", i.to_string().as_bytes())]))
        .collect();
    let group = format!("g{}", suffix());

    // Same consumer name: its own pending entries at connect.
    let a = RedisSource::new(ctx(&[&s], &group, &[("consumer", "a")])).unwrap();
    a.connect().await.unwrap();
    assert_eq!(a.poll(1, Duration::from_secs(1)).await.unwrap().len(), 1);
    drop(a); // kill -9
    let a2 = RedisSource::new(ctx(&[&s], &group, &[("consumer", "a")])).unwrap();
    a2.connect().await.unwrap();
    let got = a2.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got), [e[0].clone()], "own pending first");
    let got2 = a2.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got2), e[1..]);
    drop(a2); // kill -9 again, three entries pending for "a"

    // Another consumer name: XAUTOCLAIM once they are idle longer than claim_after_s.
    let b = RedisSource::new(ctx(
        &[&s],
        &group,
        &[("consumer", "b"), ("claim_after_s", "1")],
    ))
    .unwrap();
    b.connect().await.unwrap();
    let early = b.poll(10, Duration::from_millis(100)).await.unwrap();
    assert!(early.is_empty(), "not idle long enough yet: {early:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let claimed = b.poll(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(ids(&claimed), e, "claimed from the dead consumer");
    b.ack(&claimed).await.unwrap();
    assert_eq!(pending_count(&mut c, &s, &group), 0);
}

#[tokio::test]
async fn touch_keeps_entries_from_being_claimed() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    xadd(&mut c, &s, &[("k", b"slow")]);
    let group = format!("g{}", suffix());
    let opts = |name| vec![("consumer", name), ("claim_after_s", "1")];
    let a = RedisSource::new(ctx(&[&s], &group, &opts("a"))).unwrap();
    let b = RedisSource::new(ctx(&[&s], &group, &opts("b"))).unwrap();
    a.connect().await.unwrap();
    b.connect().await.unwrap();
    let held = a.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 1);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.touch(&held).await.unwrap();
        let stolen = b.poll(10, Duration::from_millis(10)).await.unwrap();
        assert!(stolen.is_empty(), "touched: not idle, not claimed");
    }
    // Its own in-flight entry is not handed out again by a's own XAUTOCLAIM either.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(a
        .poll(10, Duration::from_millis(10))
        .await
        .unwrap()
        .is_empty());
    a.ack(&held).await.unwrap();
}

#[tokio::test]
async fn several_streams_prefix_the_event_id() {
    let s1 = format!("nr_s1_{}", suffix());
    let s2 = format!("nr_s2_{}", suffix());
    let _clean = Cleanup::new(&[&s1, &s2]);
    let mut c = redis_conn(REDIS);
    let a = xadd(&mut c, &s1, &[("k", b"1")]);
    let b = xadd(&mut c, &s2, &[("k", b"2")]);
    let group = format!("g{}", suffix());
    let src = RedisSource::new(ctx(&[&s1, &s2], &group, &[])).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(1)).await.unwrap();
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, [format!("{s1}/{a}"), format!("{s2}/{b}")]);
    assert!(got.iter().all(|r| r.data["eventID"] == r.id));
    src.ack(&got).await.unwrap();
    assert_eq!(pending_count(&mut c, &s1, &group), 0);
    assert_eq!(pending_count(&mut c, &s2, &group), 0);
}

#[tokio::test]
async fn latest_starts_after_existing_entries() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    xadd(&mut c, &s, &[("old", b"1")]);
    let group = format!("g{}", suffix());
    let mut cx = ctx(&[&s], &group, &[]);
    cx.spec.starting_position = StartingPosition::Latest;
    let src = RedisSource::new(cx).unwrap();
    src.connect().await.unwrap();
    let new = xadd(&mut c, &s, &[("new", b"1")]);
    let got = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got), [new]);
    src.ack(&got).await.unwrap();
}

#[tokio::test]
async fn missing_stream_create_option_and_remove() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    let src = RedisSource::new(ctx(&[&s], "g", &[])).unwrap();
    match src.connect().await {
        Err(SourceError::Missing(m)) => assert!(m.contains(&s) && m.contains("create"), "{m}"),
        other => panic!("expected Missing, got {other:?}"),
    }
    let mut cx = ctx(&[&s], "unused", &[("create", "true")]);
    cx.spec.group = None;
    cx.mapping = format!("{}-0000", suffix());
    let group = cx.group();
    let src = RedisSource::new(cx).unwrap();
    src.connect().await.unwrap();
    let kind: String = redis::cmd("TYPE").arg(&s).query(&mut c).unwrap();
    assert_eq!(kind, "stream", "created with MKSTREAM");
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&s)
        .query(&mut c)
        .unwrap();
    assert!(format!("{groups:?}").contains(&group));
    src.remove().await.unwrap();
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&s)
        .query(&mut c)
        .unwrap();
    assert!(
        !format!("{groups:?}").contains(&group),
        "derived group destroyed"
    );

    let _: () = c.set(&s, "a string").unwrap();
    let src = RedisSource::new(ctx(&[&s], "g", &[])).unwrap();
    assert!(matches!(src.connect().await, Err(SourceError::Config(_))));
}

#[tokio::test]
async fn unreachable_wrong_password_and_db_number() {
    let _ = redis_conn(REDIS);
    let mut cx = ctx(&["x"], "g", &[]);
    cx.spec.endpoints = vec!["redis://127.0.0.1:1".into()];
    let src = RedisSource::new(cx).unwrap();
    assert!(
        matches!(src.connect().await, Err(SourceError::Unreachable { .. })),
        "a closed port is Unreachable"
    );

    // A test user with a password (deleted on drop).
    let user = format!("nr_user_{}", suffix());
    let s = format!("nr_s_{}", suffix());
    let mut clean = Cleanup::on("redis://127.0.0.1:6379/3", &[&s]);
    clean.users.push(user.clone());
    let mut c = redis_conn(REDIS);
    let _: redis::Value = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">right-pass")
        .arg("~*")
        .arg("+@all")
        .query(&mut c)
        .unwrap();
    let mut db3 = redis_conn("redis://127.0.0.1:6379/3");
    let id = xadd(&mut db3, &s, &[("db", b"3")]);

    let mut cx = ctx(&[&s], "g", &[]);
    cx.spec.endpoints = vec!["redis://127.0.0.1:6379/3".into()];
    cx.credentials = Some(Credentials {
        username: Some(user.clone()),
        password: Some("wrong-pass".into()),
    });
    let src = RedisSource::new(cx.clone()).unwrap();
    match src.connect().await {
        Err(SourceError::Auth(m)) => assert!(m.contains(&user) && !m.contains("wrong-pass"), "{m}"),
        other => panic!("expected Auth, got {other:?}"),
    }
    cx.credentials = Some(Credentials {
        username: Some(user.clone()),
        password: Some("right-pass".into()),
    });
    let src = RedisSource::new(cx.clone()).unwrap();
    src.connect().await.unwrap();
    let got = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got), [id], "the URL's db number is honoured");
    src.ack(&got).await.unwrap();

    cx.spec.endpoints = vec!["redis://127.0.0.1:6379/0".into()];
    let src = RedisSource::new(cx).unwrap();
    assert!(
        matches!(src.connect().await, Err(SourceError::Missing(_))),
        "db 0 does not hold the stream"
    );
}

#[tokio::test]
async fn a_dropped_poll_loses_nothing() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    let group = format!("g{}", suffix());
    let mut cx = ctx(&[&s], &group, &[]);
    cx.spec.starting_position = StartingPosition::Latest;
    let src = RedisSource::new(cx).unwrap();
    let _: () = c.del(&s).unwrap();
    xadd(&mut c, &s, &[("before", b"1")]);
    src.connect().await.unwrap();
    // The runner drops a poll while its XREADGROUP blocks; an entry then arrives and the
    // server hands it to that abandoned read.
    let cut = tokio::time::timeout(
        Duration::from_millis(200),
        src.poll(10, Duration::from_secs(2)),
    );
    assert!(cut.await.is_err());
    let id = xadd(&mut c, &s, &[("during", b"1")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = src.poll(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(ids(&got), [id], "re-read from the pending list");
    src.ack(&got).await.unwrap();
    assert_eq!(pending_count(&mut c, &s, &group), 0);
}

/// Throughput of poll + ack (run by hand: `--ignored --nocapture redis_throughput`).
#[tokio::test]
#[ignore]
async fn redis_throughput() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let mut c = redis_conn(REDIS);
    let n = 20_000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD").arg(&s).arg("*").arg("n").arg(i).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let group = format!("g{}", suffix());
    let src = RedisSource::new(ctx(&[&s], &group, &[])).unwrap();
    src.connect().await.unwrap();
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let batch = src.poll(100, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty());
        got += batch.len();
        src.ack(&batch).await.unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "Redis: polled+acked {n} in {took:?} = {:.0} records/s",
        n as f64 / took.as_secs_f64()
    );
}

/// Reconnecting does not leak connections (run alone: `--ignored reconnects_do_not_leak`).
#[tokio::test]
#[ignore]
async fn reconnects_do_not_leak() {
    let s = format!("nr_s_{}", suffix());
    let _clean = Cleanup::new(&[&s]);
    let count = || {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        tcp.lines().filter(|l| l.contains(":18EB 01")).count()
    };
    let src = RedisSource::new(ctx(&[&s], "leak", &[("create", "true")])).unwrap();
    let mut counts = Vec::new();
    for round in 0..51 {
        src.connect().await.unwrap();
        let _ = src.poll(1, Duration::from_millis(1)).await.unwrap();
        if round == 0 || round == 50 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            counts.push(count());
        }
    }
    eprintln!("connections to 6379 after 1 and after 51 reconnects: {counts:?}");
    assert!(counts[1] <= counts[0], "{counts:?}");
}

/// A private redis-server with a password and an append-only file on a free port, killed
/// on drop: for the bare-password and the restart tests.
struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        s.run().await;
        s
    }

    async fn run(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--requirepass", "bare-secret", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn bare_password_and_a_server_restart() {
    let mut server = PrivateRedis::start().await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let mut cx = ctx(&["s"], "g", &[("create", "true")]);
    cx.spec.endpoints = vec![url.clone()];
    let src = RedisSource::new(cx.clone()).unwrap();
    match src.connect().await {
        Err(SourceError::Auth(_)) => {}
        other => panic!("no password where one is required: expected Auth, got {other:?}"),
    }
    cx.credentials = Some(Credentials::from_secret(b"bare-secret"));
    let src = RedisSource::new(cx).unwrap();
    src.connect().await.unwrap();
    let mut c = redis_conn(&format!("redis://:bare-secret@127.0.0.1:{}", server.port));
    let id = xadd(&mut c, "s", &[("k", b"v")]);
    let got = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&got), std::slice::from_ref(&id));

    server.stop();
    let err = src
        .poll(10, Duration::from_millis(300))
        .await
        .expect_err("a poll without a server fails");
    assert!(err.is_transient(), "{err}");
    match src.connect().await {
        Err(SourceError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    server.run().await;
    src.connect().await.unwrap();
    let again = src.poll(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        ids(&again),
        [id],
        "not acked before the restart: read again"
    );
    src.ack(&again).await.unwrap();
}
