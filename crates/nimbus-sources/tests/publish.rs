//! The target publishers against the real brokers on this machine (NATS with JetStream
//! 4222, RabbitMQ 5672 guest/guest, Redis 6379, Mosquitto 1883). Each test publishes 3
//! messages with a `traceparent` header through [`open_publisher`] and reads them back
//! with a plain client of the same crate. Names carry a random suffix and are deleted.

use futures_util::StreamExt;
use nimbus_events::external::ExternalTargets;
use nimbus_sources::targets::{open_publisher, PublishContext, Publisher, Target, TargetRunner};
use nimbus_sources::{Kind, SourceError, SqliteSourceStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379/0";
const MQTT: &str = "mqtt://127.0.0.1:1883";

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn target(kind: Kind, endpoint: &str, options: &[(&str, &str)]) -> Target {
    Target {
        name: format!("t-{}", suffix()),
        kind,
        endpoints: vec![endpoint.to_string()],
        secret: None,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        last_modified_s: 0,
    }
}

/// A user name and password.
type Login = (&'static str, &'static str);

/// A connected publisher (credentials from `login` when given).
async fn publisher(t: Target, login: Option<Login>) -> Arc<dyn Publisher> {
    let credentials = login.map(|(u, p)| nimbus_sources::Credentials {
        username: Some(u.into()),
        password: Some(p.into()),
    });
    let p = open_publisher(PublishContext {
        target: t,
        credentials,
    })
    .expect("open_publisher");
    p.connect().await.expect("connect");
    p
}

fn trace() -> Vec<(String, String)> {
    vec![("traceparent".to_string(), TRACE.to_string())]
}

/// Fails loudly when the service is not there (tests never skip silently).
async fn require(addr: &str, what: &str, how: &str) {
    if let Err(e) = tokio::net::TcpStream::connect(addr).await {
        panic!("{what} is not reachable at {addr} ({e}): start it ({how}) and run the tests again");
    }
}

// ---------------------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------------------

async fn nats_client() -> async_nats::Client {
    require("127.0.0.1:4222", "NATS", "nats-server -js").await;
    async_nats::connect(NATS).await.expect("nats connect")
}

/// A stream on `prefix.>`, deleted on drop.
struct TestStream {
    name: String,
    prefix: String,
    js: async_nats::jetstream::Context,
}

impl TestStream {
    async fn new() -> Self {
        let s = suffix();
        let (name, prefix) = (format!("PUB_{s}"), format!("pub{s}"));
        let js = async_nats::jetstream::new(nats_client().await);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .expect("cannot create a JetStream stream (is JetStream on? nats-server -js)");
        Self { name, prefix, js }
    }

    /// The stream's messages as (subject, body, traceparent), waiting up to 10 s for `n`.
    async fn read(&self, n: usize) -> Vec<(String, String, Option<String>)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = self.js.get_stream(&self.name).await.expect("stream");
        loop {
            let have = stream.info().await.expect("stream info").state.messages;
            if have as usize >= n {
                break;
            }
            assert!(Instant::now() < deadline, "only {have} of {n} messages");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = Vec::new();
        for seq in 1..=n as u64 {
            let m = stream.get_raw_message(seq).await.expect("message");
            out.push((
                m.subject.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.headers.get("traceparent").map(|v| v.as_str().to_string()),
            ));
        }
        out
    }
}

/// Deletes the stream (the test runtime must be multi-threaded: the client's connection
/// task runs there while this thread blocks).
impl Drop for TestStream {
    fn drop(&mut self) {
        let (js, name) = (self.js.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(js.delete_stream(&name)))
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publishes_are_on_the_stream_with_headers() {
    let s = TestStream::new().await;
    let subject = format!("{}.out", s.prefix);
    let p = publisher(target(Kind::Nats, NATS, &[("subject", &subject)]), None).await;
    for i in 0..3 {
        p.publish(format!("m{i}").as_bytes(), &trace())
            .await
            .expect("publish");
    }
    let got = s.read(3).await;
    assert_eq!(
        got.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    assert!(got
        .iter()
        .all(|m| m.0 == subject && m.2.as_deref() == Some(TRACE)));
    // The clean-up works (other tests rely on it).
    let (js, name) = (s.js.clone(), s.name.clone());
    drop(s);
    assert!(js.get_stream(&name).await.is_err(), "stream {name} deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_holds_is_missing() {
    let _client = nats_client().await;
    let subject = format!("nostream{}.out", suffix());
    let p = open_publisher(PublishContext {
        target: target(Kind::Nats, NATS, &[("subject", &subject)]),
        credentials: None,
    })
    .expect("open");
    // Said at connect ...
    let e = p.connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains(&subject), "{e}");
    // ... and by the publish itself when the stream goes away while connected.
    let s = TestStream::new().await;
    let subject = format!("{}.gone", s.prefix);
    let p = publisher(target(Kind::Nats, NATS, &[("subject", &subject)]), None).await;
    p.publish(b"there", &[]).await.expect("publish");
    drop(s);
    let e = p.publish(b"x", &[]).await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains(&subject), "{e}");
}

#[tokio::test]
async fn core_nats_publishes_reach_a_subscriber() {
    let client = nats_client().await;
    let subject = format!("core{}.out", suffix());
    let mut sub = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("flush");
    let p = publisher(target(Kind::NatsCore, NATS, &[("subject", &subject)]), None).await;
    for i in 0..3 {
        p.publish(format!("m{i}").as_bytes(), &trace())
            .await
            .expect("publish");
    }
    for i in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("message in time")
            .expect("subscription open");
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        let tp = m.headers.as_ref().and_then(|h| h.get("traceparent"));
        assert_eq!(tp.map(|v| v.as_str()), Some(TRACE));
    }
}

// ---------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------

async fn rabbit() -> (lapin::Connection, lapin::Channel) {
    require(
        "127.0.0.1:5672",
        "RabbitMQ",
        "systemctl start rabbitmq-server",
    )
    .await;
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ guest/guest login");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

#[tokio::test]
async fn rabbitmq_publishes_are_confirmed_and_routed_with_headers() {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    let (_conn, ch) = rabbit().await;
    let s = suffix();
    let (exchange, queue) = (
        format!("nimbus-test-pub-x-{s}"),
        format!("nimbus-test-pub-q-{s}"),
    );
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");

    let opts = [("exchange", exchange.as_str()), ("routing_key", "k")];
    let p = publisher(
        target(Kind::Rabbitmq, AMQP, &opts),
        Some(("guest", "guest")),
    )
    .await;
    for i in 0..3 {
        p.publish(format!("m{i}").as_bytes(), &trace())
            .await
            .expect("publish");
    }
    for i in 0..3 {
        let m = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a message in the queue");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(2));
        let tp = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("traceparent").cloned());
        match tp {
            Some(AMQPValue::LongString(v)) => assert_eq!(v.to_string(), TRACE),
            other => panic!("traceparent header: {other:?}"),
        }
    }

    // The same exchange with a key bound to nothing: returned, an error.
    let opts = [("exchange", exchange.as_str()), ("routing_key", "unbound")];
    let p = publisher(
        target(Kind::Rabbitmq, AMQP, &opts),
        Some(("guest", "guest")),
    )
    .await;
    let e = p.publish(b"x", &[]).await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains("unbound"), "{e}");

    // The default exchange routes by queue name.
    let opts = [("routing_key", queue.as_str())];
    let p = publisher(
        target(Kind::Rabbitmq, AMQP, &opts),
        Some(("guest", "guest")),
    )
    .await;
    p.publish(b"direct", &[])
        .await
        .expect("publish by queue name");
    let m = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the message");
    assert_eq!(m.delivery.data, b"direct");

    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");
}

#[tokio::test]
async fn rabbitmq_missing_exchange_is_missing_at_connect_and_publish() {
    use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
    let (_conn, ch) = rabbit().await;
    let exchange = format!("nimbus-test-pub-none-{}", suffix());
    let opts = [("exchange", exchange.as_str()), ("routing_key", "k")];
    let p = open_publisher(PublishContext {
        target: target(Kind::Rabbitmq, AMQP, &opts),
        credentials: Some(nimbus_sources::Credentials {
            username: Some("guest".into()),
            password: Some("guest".into()),
        }),
    })
    .expect("open");
    // Said at connect (a passive declare) ...
    let e = p.connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains(&exchange), "{e}");
    // ... and by a publish when the exchange goes away while connected.
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await
    .expect("declare");
    p.connect().await.expect("connect");
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete");
    let e = p.publish(b"x", &[]).await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains(&exchange), "{e}");
}

#[tokio::test]
async fn rabbitmq_wrong_password_is_auth_and_says_no_password() {
    let _ = rabbit().await;
    let t = target(Kind::Rabbitmq, AMQP, &[("routing_key", "x")]);
    let p = open_publisher(PublishContext {
        target: t,
        credentials: Some(nimbus_sources::Credentials {
            username: Some("guest".into()),
            password: Some("s3cret-wrong".into()),
        }),
    })
    .expect("open");
    let e = p.connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Auth(_)), "{e:?}");
    assert!(!e.to_string().contains("s3cret-wrong"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_publishes_are_stream_entries() {
    use redis::Commands;
    require("127.0.0.1:6379", "Redis", "systemctl start redis-server").await;
    let stream = format!("nimbus-test-pub-{}", suffix());
    let opts = [("stream", stream.as_str()), ("maxlen", "1000")];
    let p = publisher(target(Kind::Redis, REDIS, &opts), None).await;
    for i in 0..3 {
        p.publish(format!("m{i}").as_bytes(), &trace())
            .await
            .expect("publish");
    }
    let mut c = redis::Client::open(REDIS)
        .and_then(|c| c.get_connection())
        .expect("redis");
    let entries: redis::streams::StreamRangeReply = c.xrange_all(&stream).expect("XRANGE");
    let _: redis::RedisResult<()> = c.del(&stream);
    assert_eq!(entries.ids.len(), 3);
    for (i, e) in entries.ids.iter().enumerate() {
        assert_eq!(
            e.get::<String>("body").as_deref(),
            Some(format!("m{i}").as_str())
        );
        assert_eq!(e.get::<String>("traceparent").as_deref(), Some(TRACE));
    }
}

// ---------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------

/// Subscribes (QoS 1) to `topic` with a v5 client and collects (payload, traceparent).
async fn mqtt_subscriber(
    topic: &str,
) -> (
    rumqttc::v5::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<u8>, Option<String>)>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{mqttbytes::QoS, AsyncClient, Event, MqttOptions};
    require("127.0.0.1:1883", "Mosquitto", "systemctl start mosquitto").await;
    let o = MqttOptions::new(format!("nimbus-test-sub-{}", suffix()), "127.0.0.1", 1883);
    let (client, mut eventloop) = AsyncClient::new(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subbed_tx, subbed) = tokio::sync::oneshot::channel();
    let mut subbed_tx = Some(subbed_tx);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(t) = subbed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let tp = p.properties.as_ref().and_then(|pr| {
                        pr.user_properties
                            .iter()
                            .find(|(k, _)| k == "traceparent")
                            .map(|(_, v)| v.clone())
                    });
                    let _ = tx.send((p.payload.to_vec(), tp));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subbed)
        .await
        .expect("SUBACK in time")
        .expect("SUBACK");
    (client, rx)
}

async fn mqtt_round_trip(version: &str, qos: &str) {
    let topic = format!("nimbus-test/pub/{}", suffix());
    let (_sub, mut rx) = mqtt_subscriber(&topic).await;
    let opts = [
        ("topic", topic.as_str()),
        ("version", version),
        ("qos", qos),
    ];
    let p = publisher(target(Kind::Mqtt, MQTT, &opts), None).await;
    for i in 0..3 {
        p.publish(format!("m{i}").as_bytes(), &trace())
            .await
            .expect("publish");
    }
    for i in 0..3 {
        let (body, tp) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("message in time")
            .expect("subscriber alive");
        assert_eq!(body, format!("m{i}").as_bytes());
        let want = (version == "5").then_some(TRACE);
        assert_eq!(tp.as_deref(), want, "v{version}: user property");
    }
}

#[tokio::test]
async fn mqtt_v5_qos1_publishes_carry_user_properties() {
    mqtt_round_trip("5", "1").await;
}

#[tokio::test]
async fn mqtt_v3_qos1_publishes_arrive() {
    mqtt_round_trip("3", "1").await;
}

#[tokio::test]
async fn mqtt_v5_qos0_publishes_arrive() {
    mqtt_round_trip("5", "0").await;
}

// ---------------------------------------------------------------------------------------
// Unreachable, and the whole runner
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_port_is_unreachable_for_every_kind() {
    let cases = [
        (Kind::Nats, "nats://127.0.0.1:1", ("subject", "a")),
        (Kind::NatsCore, "nats://127.0.0.1:1", ("subject", "a")),
        (
            Kind::Rabbitmq,
            "amqp://127.0.0.1:1/%2f",
            ("routing_key", "a"),
        ),
        (Kind::Redis, "redis://127.0.0.1:1/0", ("stream", "a")),
        (Kind::Mqtt, "mqtt://127.0.0.1:1", ("topic", "a")),
    ];
    for (kind, endpoint, opt) in cases {
        let p = open_publisher(PublishContext {
            target: target(kind, endpoint, &[opt]),
            credentials: None,
        })
        .expect("open");
        let e = p.connect().await.unwrap_err();
        assert!(
            matches!(e, SourceError::Unreachable { .. }),
            "{kind}: {e:?}"
        );
        assert!(p.publish(b"x", &[]).await.is_err(), "{kind}: not connected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_runner_delivers_to_jetstream() {
    use nimbus_sources::targets::TargetStore;
    let s = TestStream::new().await;
    let subject = format!("{}.runner", s.prefix);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteSourceStore::open(dir.path()).expect("store"));
    let t = target(Kind::Nats, NATS, &[("subject", &subject)]);
    store.put_target(&t).expect("put_target");
    let runner = TargetRunner::new(store.clone(), Arc::new(|_| Ok(None)));
    let task = runner.spawn();
    for i in 0..3 {
        let tp = (i == 1).then_some(TRACE);
        runner
            .enqueue(&t.name, &format!("{{\"n\":{i}}}"), tp)
            .expect("enqueue");
    }
    let got = s.read(3).await;
    assert_eq!(
        got.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]
    );
    assert_eq!(got[1].2.as_deref(), Some(TRACE));
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.depth(&t.name).expect("depth") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.depth(&t.name).expect("depth"), 0, "outbox emptied");
    assert_eq!(runner.status(&t.name).delivered, 3);
    runner.stop();
    task.abort();
}

/// Publishes per second, one confirmed message at a time as the target runner sends them
/// (run by hand: `--ignored --nocapture publish_throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn publish_throughput() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    let n = 2_000;
    let s = TestStream::new().await;
    let subject = format!("{}.bench", s.prefix);
    let (_conn, ch) = rabbit().await;
    let queue = format!("nimbus-test-pub-bench-{}", suffix());
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .expect("queue");
    let stream = format!("nimbus-test-pub-bench-{}", suffix());
    let topic = format!("nimbus-test/bench/{}", suffix());
    let cases: Vec<(&str, Target, Option<Login>)> = vec![
        (
            "nats",
            target(Kind::Nats, NATS, &[("subject", &subject)]),
            None,
        ),
        (
            "nats-core",
            target(Kind::NatsCore, NATS, &[("subject", &subject)]),
            None,
        ),
        (
            "rabbitmq",
            target(Kind::Rabbitmq, AMQP, &[("routing_key", &queue)]),
            Some(("guest", "guest")),
        ),
        (
            "redis",
            target(Kind::Redis, REDIS, &[("stream", &stream)]),
            None,
        ),
        (
            "mqtt v5 qos1",
            target(Kind::Mqtt, MQTT, &[("topic", &topic)]),
            None,
        ),
    ];
    for (label, t, login) in cases {
        let p = publisher(t, login).await;
        let started = Instant::now();
        for i in 0..n {
            p.publish(format!("{{\"n\":{i}}}").as_bytes(), &trace())
                .await
                .expect("publish");
        }
        let took = started.elapsed();
        eprintln!(
            "{label}: {n} in {took:?} = {:.0} msg/s",
            n as f64 / took.as_secs_f64()
        );
    }
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete queue");
    let mut c = redis::Client::open(REDIS)
        .and_then(|c| c.get_connection())
        .expect("redis");
    let _: redis::RedisResult<()> = redis::Commands::del(&mut c, &stream);
}
