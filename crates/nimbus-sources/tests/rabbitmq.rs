//! The RabbitMQ connector against the real broker at 127.0.0.1:5672 (guest/guest).
//! Every test uses its own queues and exchanges (random suffix) and deletes them.

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use nimbus_sources::connectors::rabbitmq::RabbitSource;
use nimbus_sources::{
    Context, Credentials, Kind, MemoryCheckpoints, Record, Source, SourceError, SourceSpec,
    StartingPosition,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:5672";
const URL: &str = "amqp://127.0.0.1:5672/%2f";
const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Fails loudly when RabbitMQ is not there (never skips).
async fn broker() -> (Connection, Channel) {
    let conn = match Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => panic!(
            "RabbitMQ is not reachable at {ADDR} with guest/guest ({e}): start it (systemctl start rabbitmq-server, or docker run -d -p 5672:5672 rabbitmq:3) and run the tests again"
        ),
    };
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

fn unique(prefix: &str) -> String {
    format!("nimbus-test-{prefix}-{:08x}", rand::random::<u32>())
}

fn context(queue: &str, options: &[(&str, &str)], password: &str) -> Context {
    Context {
        mapping: uuid::Uuid::new_v4().to_string(),
        spec: SourceSpec {
            kind: Kind::Rabbitmq,
            endpoints: vec![URL.into()],
            topics: vec![queue.into()],
            group: None,
            secret: Some("rabbit".into()),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            starting_position: StartingPosition::Latest,
        },
        credentials: Some(Credentials {
            username: Some("guest".into()),
            password: Some(password.into()),
        }),
        checkpoints: Arc::new(MemoryCheckpoints::default()),
        batch_size: 10,
        concurrency: 2,
    }
}

async fn source(queue: &str) -> RabbitSource {
    let s = RabbitSource::new(context(queue, &[], "guest")).expect("new");
    s.connect().await.expect("connect");
    s
}

async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("declare queue");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
}

async fn delete(ch: &Channel, queue: &str) {
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

/// Ready messages in `queue` (a fresh channel: a passive declare of a missing queue
/// closes its channel).
async fn ready(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        )
        .await
        .ok()?;
    Some(q.message_count())
}

/// Polls until `n` records came or 5 s passed.
async fn poll_n(s: &RabbitSource, n: usize) -> Vec<Record> {
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

#[tokio::test]
async fn records_have_lambdas_shape_and_batches_stop_at_max() {
    let (conn, ch) = broker().await;
    let queue = unique("shape");
    declare(&ch, &queue, FieldTable::default()).await;
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(TRACE.into()));
    headers.insert("n".into(), AMQPValue::LongInt(7));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_headers(headers)
        .with_delivery_mode(2);
    publish(&ch, "", &queue, br#"{"n":0}"#, props.clone()).await;
    // The same messageId again: the second record falls back to generation-tag.
    publish(&ch, "", &queue, br#"{"n":1}"#, props).await;
    for i in 2..5 {
        let body = format!(r#"{{"n":{i}}}"#);
        publish(&ch, "", &queue, body.as_bytes(), BasicProperties::default()).await;
    }

    let s = source(&queue).await;
    let first = s.poll(3, Duration::from_secs(2)).await.expect("poll");
    assert_eq!(first.len(), 3, "a poll returns at most max records");
    let r = &first[0];
    assert_eq!(r.id, "m-1");
    assert_eq!(r.data["eventID"], "m-1");
    assert_eq!(r.data["eventSource"], "aws:rmq");
    assert_eq!(r.produced_ms, 1_700_000_000_000);
    assert_eq!(r.trace.as_deref(), Some(TRACE));
    let bp = &r.data["basicProperties"];
    assert_eq!(bp["contentType"], "application/json");
    assert_eq!(bp["messageId"], "m-1");
    assert_eq!(bp["deliveryMode"], 2);
    assert_eq!(bp["headers"]["n"], 7);
    assert_eq!(
        bp["headers"]["traceparent"]["bytes"]
            .as_array()
            .map(Vec::len),
        Some(TRACE.len())
    );
    assert_eq!(bp["timestamp"], "Nov 14, 2023, 10:13:20 PM");
    assert_eq!(bp["bodySize"], 7);
    assert_eq!(bp["correlationId"], Value::Null);
    assert_eq!(r.data["redelivered"], false);
    assert_eq!(r.data["data"], "eyJuIjowfQ==");
    assert_ne!(
        first[1].id, "m-1",
        "eventIDs are unique among records in flight"
    );
    assert!(first[1].id.contains('-'), "{}", first[1].id);
    assert_eq!(first[1].data["eventID"], first[1].id.as_str());
    assert!(
        first[2].produced_ms > 1_700_000_000_000,
        "receipt time without a timestamp"
    );

    let event = s.event(&first);
    assert_eq!(event["eventSource"], "aws:rmq");
    assert_eq!(
        event["eventSourceArn"],
        "arn:nimbus:rabbitmq:us-east-1:000000000000:broker/127.0.0.1"
    );
    let key = format!("{queue}::/");
    assert_eq!(
        event["rmqMessagesByQueue"][&key].as_array().map(Vec::len),
        Some(3)
    );

    let rest = poll_n(&s, 2).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(s.lag().await, Some(0), "everything is delivered");
    s.ack(&first).await.expect("ack");
    s.ack(&rest).await.expect("ack");
    // Once the connection is gone nothing is requeued: the acks removed the messages.
    s.remove().await.expect("remove");
    assert_eq!(ready(&conn, &queue).await, Some(0));
    delete(&ch, &queue).await;
}

#[tokio::test]
async fn prefetch_bounds_unacked_records() {
    let (conn, ch) = broker().await;
    let queue = unique("prefetch");
    declare(&ch, &queue, FieldTable::default()).await;
    for i in 0..50 {
        publish(
            &ch,
            "",
            &queue,
            format!("{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
    let s = source(&queue).await; // batch_size 10 × concurrency 2 = prefetch 20
    let mut held = Vec::new();
    for _ in 0..5 {
        held.extend(s.poll(100, Duration::from_millis(300)).await.expect("poll"));
    }
    assert_eq!(
        held.len(),
        20,
        "at most batch_size × concurrency unacked records"
    );
    s.ack(&held[..10]).await.expect("ack");
    let more = poll_n(&s, 10).await;
    assert_eq!(more.len(), 10, "acking lets the flow go on");
    assert_eq!(ready(&conn, &queue).await, Some(20));
    s.remove().await.expect("remove");
    delete(&ch, &queue).await;
}

#[tokio::test]
async fn unacked_records_are_redelivered_after_a_reconnect() {
    let (conn, ch) = broker().await;
    let queue = unique("redeliver");
    declare(&ch, &queue, FieldTable::default()).await;
    publish(&ch, "", &queue, b"a", BasicProperties::default()).await;
    publish(&ch, "", &queue, b"b", BasicProperties::default()).await;
    let s = source(&queue).await;
    let old = poll_n(&s, 2).await;
    assert_eq!(old.len(), 2);
    assert_eq!(old[0].data["redelivered"], false);

    s.connect().await.expect("reconnect");
    let again = poll_n(&s, 2).await;
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|r| r.data["redelivered"] == true),
        "{again:?}"
    );
    let bodies: Vec<_> = again.iter().map(|r| r.data["data"].clone()).collect();
    assert_eq!(bodies, vec![Value::from("YQ=="), Value::from("Yg==")]);
    // Records of the old connection are ignored (their tags would kill the new channel).
    s.ack(&old).await.expect("stale ack is a no-op");
    s.reject(&old).await.expect("stale reject is a no-op");
    s.ack(&again).await.expect("ack");
    assert!(s
        .poll(10, Duration::from_millis(200))
        .await
        .expect("channel alive")
        .is_empty());
    s.remove().await.expect("remove");
    assert_eq!(ready(&conn, &queue).await, Some(0));
    delete(&ch, &queue).await;
}

#[tokio::test]
async fn rejected_records_go_to_the_dead_letter_queue() {
    let (conn, ch) = broker().await;
    let queue = unique("dlx-src");
    let dlx = unique("dlx");
    let dlq = unique("dlq");
    ch.exchange_declare(
        dlx.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("dlx");
    declare(&ch, &dlq, FieldTable::default()).await;
    ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind dlq");
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    declare(&ch, &queue, args).await;
    publish(&ch, "", &queue, b"poison", BasicProperties::default()).await;

    let s = source(&queue).await;
    let got = poll_n(&s, 1).await;
    assert_eq!(got.len(), 1);
    s.reject(&got).await.expect("reject");
    let start = Instant::now();
    let dead = loop {
        if let Some(d) = ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nothing reached the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.delivery.data, b"poison");
    s.remove().await.expect("remove");
    assert_eq!(ready(&conn, &queue).await, Some(0), "not requeued");
    delete(&ch, &queue).await;
    delete(&ch, &dlq).await;
    let _ = ch
        .exchange_delete(dlx.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

#[tokio::test]
async fn exchange_mode_declares_and_binds_the_queue() {
    let (conn, ch) = broker().await;
    let exchange = unique("orders");
    let queue = unique("bound");
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    let ctx = context(
        &queue,
        &[("exchange", exchange.as_str()), ("routing_key", "orders.*")],
        "guest",
    );
    let s = RabbitSource::new(ctx).expect("new");
    s.connect().await.expect("connect declares and binds");
    assert_eq!(
        ready(&conn, &queue).await,
        Some(0),
        "the queue was declared"
    );
    publish(
        &ch,
        &exchange,
        "orders.new",
        b"1",
        BasicProperties::default(),
    )
    .await;
    publish(
        &ch,
        &exchange,
        "invoices.new",
        b"2",
        BasicProperties::default(),
    )
    .await;
    let got = poll_n(&s, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data["data"], "MQ==");
    assert!(s
        .poll(10, Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    s.ack(&got).await.expect("ack");
    // A second connect finds the queue and binding in place.
    s.connect().await.expect("reconnect");
    s.remove().await.expect("remove deletes the declared queue");
    assert_eq!(ready(&conn, &queue).await, None, "the queue is gone");
    // A missing exchange is `Missing`.
    let ctx = context(
        &queue,
        &[("exchange", "nimbus-test-no-such-exchange")],
        "guest",
    );
    let e = RabbitSource::new(ctx).unwrap().connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(
        e.to_string().contains("nimbus-test-no-such-exchange"),
        "{e}"
    );
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

#[tokio::test]
async fn connect_errors_say_what_to_fix() {
    let _ = broker().await;
    let queue = unique("missing");
    let e = RabbitSource::new(context(&queue, &[], "guest"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(
        e.to_string().contains(&queue) && e.to_string().contains("create it"),
        "{e}"
    );

    let e = RabbitSource::new(context(&queue, &[], "wrong-s3cret"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::Auth(_)), "{e:?}");
    assert!(!e.to_string().contains("wrong-s3cret"), "{e}");

    let mut ctx = context(&queue, &[], "guest");
    ctx.spec.endpoints = vec!["amqp://127.0.0.1:1/%2f".into()];
    let start = Instant::now();
    let e = RabbitSource::new(ctx).unwrap().connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(11));

    let mut ctx = context(&queue, &[], "guest");
    ctx.spec
        .options
        .insert("vhost".into(), "nimbus-no-such-vhost".into());
    let e = RabbitSource::new(ctx).unwrap().connect().await.unwrap_err();
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
    assert!(e.to_string().contains("nimbus-no-such-vhost"), "{e}");
}

/// A poll dropped while it waits for a first record (the runner gave up on it) loses
/// nothing: what arrives later goes to the next poll, which returns it without waiting
/// for the rest of the batch.
#[tokio::test]
async fn a_dropped_poll_loses_no_record() {
    let (_conn, ch) = broker().await;
    let queue = unique("cancel");
    declare(&ch, &queue, FieldTable::default()).await;
    let s = source(&queue).await;
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        s.poll(10, Duration::from_secs(2)),
    );
    assert!(dropped.await.is_err(), "nothing had arrived");
    publish(&ch, "", &queue, b"kept", BasicProperties::default()).await;
    let got = s.poll(10, Duration::from_secs(5)).await.expect("poll");
    assert_eq!(got.len(), 1, "the next poll returns the record");
    assert_eq!(got[0].data["data"], "a2VwdA==");
    s.ack(&got).await.expect("ack");
    s.remove().await.expect("remove");
    delete(&ch, &queue).await;
}

#[tokio::test]
async fn a_deleted_queue_is_an_error_then_missing() {
    let (_conn, ch) = broker().await;
    let queue = unique("deleted");
    declare(&ch, &queue, FieldTable::default()).await;
    let s = source(&queue).await;
    delete(&ch, &queue).await;
    let e = s
        .poll(10, Duration::from_secs(2))
        .await
        .expect_err("the broker cancelled the consumer");
    assert!(e.is_transient(), "{e:?}");
    let e = s.connect().await.expect_err("the queue is gone");
    assert!(matches!(e, SourceError::Missing(_)), "{e:?}");
}
