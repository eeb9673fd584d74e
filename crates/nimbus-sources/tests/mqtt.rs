//! The MQTT connector against the real Mosquitto at 127.0.0.1:1883, for MQTT 3.1.1 and 5.
//! Every test uses its own topics and client ids (random suffix) and ends its sessions.

use nimbus_sources::connectors::mqtt::MqttSource;
use nimbus_sources::{
    Context, Kind, MemoryCheckpoints, Record, Source, SourceError, SourceSpec, StartingPosition,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:1883";
const URL: &str = "mqtt://127.0.0.1:1883";

/// Fails loudly when Mosquitto is not there (never skips).
async fn require_broker() {
    if let Err(e) = tokio::net::TcpStream::connect(ADDR).await {
        panic!(
            "Mosquitto is not reachable at {ADDR} ({e}): start it (systemctl start mosquitto, or docker run -d -p 1883:1883 eclipse-mosquitto) and run the tests again"
        );
    }
}

fn unique(prefix: &str) -> String {
    format!("nimbus-test-{prefix}-{:08x}", rand::random::<u32>())
}

fn context(version: &str, group: &str, topics: &[String], batch: usize, conc: usize) -> Context {
    Context {
        mapping: uuid::Uuid::new_v4().to_string(),
        spec: SourceSpec {
            kind: Kind::Mqtt,
            endpoints: vec![URL.into()],
            topics: topics.to_vec(),
            group: Some(group.into()),
            secret: None,
            options: [("version".to_string(), version.to_string())]
                .into_iter()
                .collect(),
            starting_position: StartingPosition::Latest,
        },
        credentials: None,
        checkpoints: Arc::new(MemoryCheckpoints::default()),
        batch_size: batch,
        concurrency: conc,
    }
}

async fn source(version: &str, group: &str, topics: &[String]) -> MqttSource {
    let s = MqttSource::new(context(version, group, topics, 100, 4)).expect("new");
    s.connect().await.expect("connect");
    s
}

/// A second client that publishes QoS 1 messages; `acked` counts the broker's PUBACKs.
struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    async fn new() -> Self {
        require_broker().await;
        let mut o = MqttOptions::new(unique("pub"), "127.0.0.1", 1883);
        o.set_inflight(200).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let acked = Arc::new(AtomicUsize::new(0));
        let count = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("test publisher: {e}"),
                }
            }
        });
        Self {
            client,
            acked,
            task,
        }
    }

    async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("publish");
    }

    /// Waits until the broker acknowledged `n` messages in all.
    async fn settled(&self, n: usize) {
        let start = Instant::now();
        while self.acked.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "publishes not acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls until `n` records came or 5 s passed.
async fn poll_n(s: &MqttSource, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < Duration::from_secs(5) {
        out.extend(
            s.poll(n - out.len(), Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    out
}

async fn shapes_and_wildcards(version: &str) {
    let p = Publisher::new().await;
    let base = unique("shape");
    let filters = vec![format!("{base}/+/temp"), format!("{base}/bin/#")];
    let s = source(version, &unique("g"), &filters).await;
    p.publish(&format!("{base}/kitchen/temp"), br#"{"celsius":21.5}"#)
        .await;
    p.publish(&format!("{base}/bin/a/b"), &[0xff, 0x00, 0x01])
        .await;
    p.publish(&format!("{base}/kitchen/humidity"), b"{}").await;
    p.settled(3).await;
    let got = poll_n(&s, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let json = &got[0].data;
    assert_eq!(json["eventID"], got[0].id.as_str());
    assert_eq!(json["eventSource"], "nimbus:mqtt");
    assert_eq!(
        json["eventSourceARN"],
        format!("arn:nimbus:mqtt:us-east-1:000000000000:topic/{base}/+/temp")
    );
    assert_eq!(json["topic"], format!("{base}/kitchen/temp"));
    assert_eq!(json["qos"], 1);
    assert_eq!(json["retain"], false);
    assert_eq!(json["payload"]["celsius"], 21.5);
    assert_eq!(json["payloadEncoding"], "json");
    assert!(json["timestamp"].as_i64().unwrap_or(0) > 1_700_000_000_000);
    let bin = &got[1].data;
    assert_eq!(bin["payload"], "/wAB");
    assert_eq!(bin["payloadEncoding"], "base64");
    assert_eq!(
        bin["eventSourceARN"],
        format!("arn:nimbus:mqtt:us-east-1:000000000000:topic/{base}/bin/#")
    );
    assert_ne!(got[0].id, got[1].id);
    let event = s.event(&got);
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(2));
    s.ack(&got).await.expect("ack");
    assert!(
        s.poll(10, Duration::from_millis(300))
            .await
            .expect("poll")
            .is_empty(),
        "the humidity topic matches no filter"
    );
    s.remove().await.expect("remove");
}

#[tokio::test]
async fn v3_shapes_and_wildcards() {
    shapes_and_wildcards("3").await;
}

#[tokio::test]
async fn v5_shapes_and_wildcards() {
    shapes_and_wildcards("5").await;
}

async fn offline_messages_are_delivered(version: &str) {
    let p = Publisher::new().await;
    let topic = unique("offline");
    let group = unique("g");
    let s = source(version, &group, std::slice::from_ref(&topic)).await;
    drop(s); // Nimbus goes away; the session stays on the broker.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        p.publish(&topic, format!("{{\"n\":{i}}}").as_bytes()).await;
    }
    p.settled(3).await;
    let s = source(version, &group, std::slice::from_ref(&topic)).await;
    let got = poll_n(&s, 3).await;
    let ns: Vec<_> = got.iter().map(|r| r.data["payload"]["n"].clone()).collect();
    assert_eq!(ns, vec![0, 1, 2], "{got:?}");
    s.ack(&got).await.expect("ack");
    s.remove().await.expect("remove");
    // The session is gone: a new source with the same group gets nothing old.
    p.publish(&topic, b"{\"n\":9}").await;
    p.settled(4).await;
    let s = source(version, &group, std::slice::from_ref(&topic)).await;
    assert!(s
        .poll(10, Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    s.remove().await.expect("remove");
}

#[tokio::test]
async fn v3_offline_messages_are_delivered() {
    offline_messages_are_delivered("3").await;
}

#[tokio::test]
async fn v5_offline_messages_are_delivered() {
    offline_messages_are_delivered("5").await;
}

async fn unacked_messages_come_again(version: &str) {
    let p = Publisher::new().await;
    let topic = unique("unacked");
    let s = source(version, &unique("g"), std::slice::from_ref(&topic)).await;
    p.publish(&topic, b"{\"n\":1}").await;
    p.publish(&topic, b"{\"n\":2}").await;
    p.settled(2).await;
    let old = poll_n(&s, 2).await;
    assert_eq!(old.len(), 2);
    s.connect().await.expect("reconnect");
    let again = poll_n(&s, 2).await;
    let ns: Vec<_> = again
        .iter()
        .map(|r| r.data["payload"]["n"].clone())
        .collect();
    assert_eq!(ns, vec![1, 2], "{again:?}");
    assert!(
        again.iter().all(|r| !old.iter().any(|o| o.id == r.id)),
        "new eventIDs"
    );
    s.ack(&old).await.expect("stale ack is a no-op");
    s.reject(&again).await.expect("reject = ack");
    s.connect().await.expect("reconnect");
    assert!(
        s.poll(10, Duration::from_millis(300))
            .await
            .expect("poll")
            .is_empty(),
        "acked messages do not come again"
    );
    s.remove().await.expect("remove");
}

#[tokio::test]
async fn v3_unacked_messages_come_again() {
    unacked_messages_come_again("3").await;
}

#[tokio::test]
async fn v5_unacked_messages_come_again() {
    unacked_messages_come_again("5").await;
}

#[tokio::test]
async fn unreachable_brokers_are_unreachable() {
    for version in ["3", "5"] {
        let mut ctx = context(version, &unique("g"), &["t".to_string()], 10, 1);
        ctx.spec.endpoints = vec!["mqtt://127.0.0.1:1".into()];
        let e = MqttSource::new(ctx).unwrap().connect().await.unwrap_err();
        assert!(matches!(e, SourceError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }
    let mut ctx = context("7", "g", &["t".to_string()], 10, 1);
    ctx.spec.options.insert("version".into(), "7".into());
    assert!(matches!(MqttSource::new(ctx), Err(SourceError::Config(_))));
}

/// Unacked records one source holds at most: v5's Receive Maximum is batch × concurrency,
/// v3 has the broker's limit (mosquitto's max_inflight_messages, 20 by default).
async fn unacked_records_are_bounded(version: &str) -> usize {
    let p = Publisher::new().await;
    let topic = unique("bound");
    let s = MqttSource::new(context(
        version,
        &unique("g"),
        std::slice::from_ref(&topic),
        5,
        2,
    ))
    .expect("new");
    s.connect().await.expect("connect");
    for i in 0..60 {
        p.publish(&topic, format!("{i}").as_bytes()).await;
    }
    p.settled(60).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.extend(s.poll(100, Duration::from_millis(200)).await.expect("poll"));
    }
    let n = held.len();
    s.ack(&held).await.expect("ack");
    let more = poll_n(&s, 1).await;
    assert_eq!(more.len(), 1, "acking lets the flow go on");
    s.remove().await.expect("remove");
    n
}

#[tokio::test]
async fn v5_unacked_records_are_bounded_by_receive_maximum() {
    let n = unacked_records_are_bounded("5").await;
    assert_eq!(n, 10, "batch 5 × concurrency 2");
}

#[tokio::test]
async fn v3_unacked_records_are_bounded_by_the_broker() {
    let n = unacked_records_are_bounded("3").await;
    eprintln!("mqtt v3: {n} unacked records held without acking (broker limit)");
    assert!(n > 0 && n <= 60, "{n}");
}

/// The IoT case: 5,000 small QoS 1 messages published as fast as the broker keeps them,
/// one poll(100) loop with acks. Prints the rate; returns how many arrived.
///
/// Mosquitto drops what exceeds a client's inflight window + `max_queued_messages` (1000
/// by default; the window is 20 for v3, the Receive Maximum, batch × concurrency, for v5).
/// How far a burst runs ahead of the consumer is up to the scheduler (publisher, source
/// and this loop share one thread), so with `window` set the publisher stays at most that
/// many messages ahead of what arrived: the broker never has cause to drop, and a message
/// missing is the source's loss. Without it the burst is unbounded and the broker drops.
async fn throughput(version: &str, window: Option<usize>) -> usize {
    let p = Publisher::new().await;
    let topic = unique("iot");
    let s = source(version, &unique("g"), std::slice::from_ref(&topic)).await;
    const N: usize = 5_000;
    let arrived = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let client = p.client.clone();
        let topic = topic.clone();
        let arrived = arrived.clone();
        tokio::spawn(async move {
            for i in 0..N {
                while window.is_some_and(|w| i >= arrived.load(Ordering::SeqCst) + w) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let body = format!("{{\"device\":\"d{}\",\"t\":{i}}}", i % 50);
                client
                    .publish(&topic, QoS::AtLeastOnce, false, body.into_bytes())
                    .await
                    .expect("publish");
            }
        })
    };
    let start = Instant::now();
    let mut last = start;
    let (mut got, mut polls, mut largest) = (0usize, 0usize, 0usize);
    // Until everything came, or nothing came for 2 s.
    while got < N && last.elapsed() < Duration::from_secs(2) {
        let batch = s.poll(100, Duration::from_millis(500)).await.expect("poll");
        if batch.is_empty() {
            continue;
        }
        last = Instant::now();
        polls += 1;
        largest = largest.max(batch.len());
        got += batch.len();
        arrived.store(got, Ordering::SeqCst);
        s.ack(&batch).await.expect("ack");
    }
    let secs = (last - start).as_secs_f64().max(1e-6);
    publisher.await.expect("publisher");
    p.settled(N).await;
    eprintln!(
        "mqtt v{version}: {got}/{N} messages in {secs:.3} s = {:.0} msg/s, {polls} polls, mean batch {:.1}, largest {largest}",
        got as f64 / secs,
        got as f64 / polls.max(1) as f64
    );
    s.remove().await.expect("remove");
    got
}

#[tokio::test]
async fn v3_throughput_of_small_messages() {
    let got = throughput("3", None).await;
    assert!(got > 1000, "{got}");
}

#[tokio::test]
async fn v5_throughput_of_small_messages() {
    // 800 ahead at most: below the broker's 1000 queued + 400 in flight.
    assert_eq!(
        throughput("5", Some(800)).await,
        5_000,
        "every message arrived"
    );
}

#[tokio::test]
async fn v5_traceparent_user_property_becomes_the_trace() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    require_broker().await;
    let topic = unique("trace");
    let s = source("5", &unique("g"), std::slice::from_ref(&topic)).await;
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new(unique("pub5"), "127.0.0.1", 1883),
        10,
    );
    let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let props = PublishProperties {
        user_properties: vec![("traceparent".into(), trace.into())],
        ..Default::default()
    };
    client
        .publish_with_properties(
            topic.as_str(),
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            b"{}".to_vec(),
            props,
        )
        .await
        .expect("publish");
    let got = poll_n(&s, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].trace.as_deref(), Some(trace));
    s.ack(&got).await.expect("ack");
    s.remove().await.expect("remove");
    task.abort();
}

#[tokio::test]
async fn qos0_subscriptions_need_no_acks() {
    let p = Publisher::new().await;
    let topic = unique("qos0");
    let mut ctx = context("5", &unique("g"), std::slice::from_ref(&topic), 2, 1);
    ctx.spec.options.insert("qos".into(), "0".into());
    let s = MqttSource::new(ctx).expect("new");
    s.connect().await.expect("connect");
    for i in 0..30 {
        p.publish(&topic, format!("{i}").as_bytes()).await;
    }
    p.settled(30).await;
    // Credit is batch × concurrency + 16: the rest waits in the socket and the broker.
    let got = poll_n(&s, 30).await;
    assert_eq!(got.len(), 30, "taking records gives the credit back");
    assert!(got.iter().all(|r| r.data["qos"] == 0));
    s.ack(&got).await.expect("ack is a no-op");
    s.connect().await.expect("reconnect");
    assert!(
        s.poll(10, Duration::from_millis(300))
            .await
            .expect("poll")
            .is_empty(),
        "QoS 0 messages are not delivered again"
    );
    s.remove().await.expect("remove");
}

/// A poll dropped while it waits for a first record (the runner gave up on it) loses
/// nothing: what arrives later goes to the next poll, which returns it without waiting
/// for the rest of the batch.
#[tokio::test]
async fn a_dropped_poll_loses_no_record() {
    let p = Publisher::new().await;
    let topic = unique("cancel");
    let s = source("5", &unique("g"), std::slice::from_ref(&topic)).await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        s.poll(10, Duration::from_secs(2)),
    );
    assert!(dropped.await.is_err(), "nothing had arrived");
    p.publish(&topic, b"{\"kept\":true}").await;
    p.settled(1).await;
    let got = s.poll(10, Duration::from_secs(5)).await.expect("poll");
    assert_eq!(got.len(), 1, "the next poll returns the record");
    assert_eq!(got[0].data["payload"]["kept"], true);
    s.ack(&got).await.expect("ack");
    s.remove().await.expect("remove");
}
