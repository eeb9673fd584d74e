//! Event notifications through the engine over both metadata backends: what each
//! write records in the outbox, field by field, and that the outbox is transactional and durable.

use crate::tests::{body, me, on_both_backends, open, Backend, Env};
use crate::*;
use serde_json::Value;
use std::collections::BTreeMap;

const FN_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:thumbs";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:000000000000:removed";

fn target(id: &str, arn: &str, events: &[&str], filter: KeyFilter) -> TargetConfig {
    TargetConfig {
        id: id.into(),
        arn: arn.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        filter,
    }
}

fn prefix(p: &str) -> KeyFilter {
    KeyFilter {
        prefix: Some(p.into()),
        suffix: None,
    }
}

/// Functions get created objects under `in/`, the queue removals, the bus everything.
fn config() -> NotificationConfig {
    NotificationConfig {
        functions: vec![target(
            "created",
            FN_ARN,
            &["s3:ObjectCreated:*"],
            prefix("in/"),
        )],
        queues: vec![target(
            "removed",
            QUEUE_ARN,
            &["s3:ObjectRemoved:*"],
            KeyFilter::default(),
        )],
        event_bridge: true,
    }
}

async fn put(o: &Objects, bucket: &str, key: &str, data: &[u8]) -> ObjectMeta {
    let opts = PutOptions {
        requester: me(),
        ..Default::default()
    };
    o.put_object(bucket, key, body(data), opts).await.unwrap()
}

async fn pending(o: &Objects) -> Vec<Outgoing> {
    o.notifications_pending(0, 1000).await.unwrap()
}

/// Takes (and marks done) everything recorded so far.
async fn drain(o: &Objects) -> Vec<Outgoing> {
    let rows = pending(o).await;
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    o.notifications_done(&seqs).await.unwrap();
    rows
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The one record of a function's or a queue's payload.
fn record(row: &Outgoing) -> Value {
    let v = json(&row.payload);
    let records = v["Records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    records[0].clone()
}

/// A bus row's `PutEvents` entry with its detail parsed.
fn bus_entry(row: &Outgoing) -> (Value, Value) {
    assert_eq!(row.target, Target::EventBridge);
    let entry = json(&row.payload);
    let detail = json(entry["Detail"].as_str().unwrap());
    (entry, detail)
}

async fn bucket_with_config(o: &Objects, name: &str) {
    o.create_bucket(name).await.unwrap();
    o.set_notification_config(name, config(), &me(), false)
        .await
        .unwrap();
    drain(o).await; // the queue's test event
}

async fn notifications_off_record_nothing(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("quiet").await.unwrap();
    assert_eq!(
        o.notification_config("quiet").await.unwrap(),
        NotificationConfig::default()
    );
    put(&o, "quiet", "in/a", b"x").await;
    o.set_tags("quiet", "in/a", BTreeMap::new(), &me())
        .await
        .unwrap();
    o.delete_object("quiet", "in/a", &me()).await.unwrap();
    assert!(pending(&o).await.is_empty());
    // Nothing matching is nothing recorded either, and no sequencer is used up.
    o.set_notification_config(
        "quiet",
        NotificationConfig {
            functions: vec![target("f", FN_ARN, &["s3:ObjectCreated:*"], prefix("in/"))],
            ..Default::default()
        },
        &me(),
        false,
    )
    .await
    .unwrap();
    put(&o, "quiet", "out/a", b"x").await;
    assert!(
        pending(&o).await.is_empty(),
        "a function gets no test event"
    );
    put(&o, "quiet", "in/a", b"x").await;
    let rows = pending(&o).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        record(&rows[0])["s3"]["object"]["sequencer"],
        "000000000000000001"
    );
}

async fn put_records_s3s_event_record_field_by_field(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "photos").await;
    let meta = put(&o, "photos", "in/red flower+1.jpg", b"hello world").await;
    let rows = drain(&o).await;
    assert_eq!(rows.len(), 2, "the function and the bus");
    assert_eq!(
        rows[0].target,
        Target::Function {
            arn: FN_ARN.into(),
            name: "thumbs".into(),
            qualifier: None
        }
    );
    assert_eq!(rows[0].bucket, "photos");
    assert!(rows[0].seq < rows[1].seq);
    let r = record(&rows[0]);
    assert_eq!(r["eventVersion"], "2.1");
    assert_eq!(r["eventSource"], "aws:s3");
    assert_eq!(r["awsRegion"], "us-east-1");
    assert_eq!(r["eventName"], "ObjectCreated:Put");
    let time = r["eventTime"].as_str().unwrap();
    assert_eq!(time.len(), "1970-01-01T00:00:00.000Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    assert_eq!(time, notify_time(meta.last_modified_ms));
    assert_eq!(r["userIdentity"]["principalId"], "AKIDTEST");
    assert_eq!(r["requestParameters"]["sourceIPAddress"], "192.0.2.7");
    assert_eq!(
        r["responseElements"]["x-amz-request-id"],
        "0123456789ABCDEF"
    );
    assert_eq!(r["responseElements"]["x-amz-id-2"], "aG9zdA==");
    let s3 = &r["s3"];
    assert_eq!(s3["s3SchemaVersion"], "1.0");
    assert_eq!(s3["configurationId"], "created");
    assert_eq!(s3["bucket"]["name"], "photos");
    assert_eq!(s3["bucket"]["ownerIdentity"]["principalId"], "000000000000");
    assert_eq!(s3["bucket"]["arn"], "arn:aws:s3:::photos");
    let obj = &s3["object"];
    assert_eq!(
        obj["key"], "in/red+flower%2B1.jpg",
        "form-URL-encoded but for /"
    );
    assert_eq!(obj["size"], 11);
    assert_eq!(obj["eTag"], "5eb63bbbe01eeed093cb22bb8f5acdc3", "no quotes");
    let seq = obj["sequencer"].as_str().unwrap();
    assert!(
        seq.len() == 18
            && seq
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    );
    assert!(obj.get("versionId").is_none());

    let (entry, d) = bus_entry(&rows[1]);
    assert_eq!(entry["Source"], "aws.s3");
    assert_eq!(entry["DetailType"], "Object Created");
    assert_eq!(
        entry["Resources"],
        serde_json::json!(["arn:aws:s3:::photos"])
    );
    assert_eq!(entry["EventBusName"], "default");
    assert_eq!(entry["Time"], time);
    assert_eq!(d["version"], "0");
    assert_eq!(d["bucket"]["name"], "photos");
    assert_eq!(d["object"]["key"], "in/red flower+1.jpg", "not encoded");
    assert_eq!(d["object"]["size"], 11);
    assert_eq!(d["object"]["etag"], "5eb63bbbe01eeed093cb22bb8f5acdc3");
    assert_eq!(d["object"]["sequencer"], seq);
    assert_eq!(d["request-id"], "0123456789ABCDEF");
    assert_eq!(d["requester"], "000000000000");
    assert_eq!(d["source-ip-address"], "192.0.2.7");
    assert_eq!(d["reason"], "PutObject");
    assert!(d.get("deletion-type").is_none());
}

fn notify_time(ms: i64) -> String {
    crate::notify::event_time(ms)
}

async fn copy_multipart_delete_and_tagging_records(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "bkt").await;
    put(&o, "bkt", "src", b"copy me").await;
    assert_eq!(drain(&o).await.len(), 1, "outside in/: only the bus");

    // CopyObject.
    o.copy_object(
        ("bkt", "src"),
        ("bkt", "in/copy"),
        ReadConditions::default(),
        None,
        WriteCondition::None,
        &me(),
    )
    .await
    .unwrap();
    let rows = drain(&o).await;
    let r = record(&rows[0]);
    assert_eq!(r["eventName"], "ObjectCreated:Copy");
    assert_eq!(r["s3"]["object"]["size"], 7);
    assert_eq!(bus_entry(&rows[1]).1["reason"], "CopyObject");

    // CompleteMultipartUpload: the ETag has its part count.
    let up = o
        .create_upload("bkt", "in/big", ObjectAttrs::default())
        .await
        .unwrap();
    let p1 = o
        .upload_part(
            "bkt",
            "in/big",
            &up.upload_id,
            1,
            body(b"0123456789"),
            None,
            None,
        )
        .await
        .unwrap();
    let p2 = o
        .upload_part("bkt", "in/big", &up.upload_id, 2, body(b"abc"), None, None)
        .await
        .unwrap();
    let done = o
        .complete_upload(
            "bkt",
            "in/big",
            &up.upload_id,
            vec![(1, p1.etag), (2, p2.etag)],
            WriteCondition::None,
            &me(),
        )
        .await
        .unwrap();
    let rows = drain(&o).await;
    let r = record(&rows[0]);
    assert_eq!(r["eventName"], "ObjectCreated:CompleteMultipartUpload");
    assert_eq!(r["s3"]["object"]["size"], 13);
    let etag = r["s3"]["object"]["eTag"].as_str().unwrap();
    assert!(etag.ends_with("-2"), "{etag}");
    assert_eq!(etag, done.etag);
    assert_eq!(bus_entry(&rows[1]).1["reason"], "CompleteMultipartUpload");

    // DeleteObject: the queue (every key) and the bus; no size or ETag.
    o.delete_object("bkt", "in/copy", &me()).await.unwrap();
    let rows = drain(&o).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].target,
        Target::Queue {
            arn: QUEUE_ARN.into(),
            name: "removed".into()
        }
    );
    let r = record(&rows[0]);
    assert_eq!(r["eventName"], "ObjectRemoved:Delete");
    assert_eq!(r["eventVersion"], "2.1");
    assert_eq!(r["s3"]["configurationId"], "removed");
    let obj = r["s3"]["object"].as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["key", "sequencer"]);
    let (entry, d) = bus_entry(&rows[1]);
    assert_eq!(entry["DetailType"], "Object Deleted");
    assert_eq!(d["reason"], "DeleteObject");
    assert_eq!(d["deletion-type"], "Permanently Deleted");
    assert!(d["object"].get("size").is_none());
    // Deleting a missing key records nothing.
    o.delete_object("bkt", "in/copy", &me()).await.unwrap();
    assert!(pending(&o).await.is_empty());

    // Tagging: only the bus here (no configuration names tagging events).
    let tags = BTreeMap::from([("k".to_string(), "v".to_string())]);
    o.set_tags("bkt", "in/big", tags, &me()).await.unwrap();
    o.delete_tags("bkt", "in/big", &me()).await.unwrap();
    let rows = drain(&o).await;
    assert_eq!(rows.len(), 2);
    let (entry, d) = bus_entry(&rows[0]);
    assert_eq!(entry["DetailType"], "Object Tags Added");
    assert_eq!(d["object"]["etag"], done.etag.as_str());
    assert!(d.get("reason").is_none());
    assert_eq!(bus_entry(&rows[1]).0["DetailType"], "Object Tags Deleted");
}

async fn tagging_events_reach_configured_targets(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("tagged").await.unwrap();
    let cfg = NotificationConfig {
        functions: vec![target(
            "tags",
            FN_ARN,
            &["s3:ObjectTagging:*"],
            KeyFilter::default(),
        )],
        ..Default::default()
    };
    o.set_notification_config("tagged", cfg, &me(), false)
        .await
        .unwrap();
    let meta = put(&o, "tagged", "k", b"x").await;
    assert!(pending(&o).await.is_empty(), "a put is not a tagging event");
    o.set_tags("tagged", "k", BTreeMap::new(), &me())
        .await
        .unwrap();
    o.delete_tags("tagged", "k", &me()).await.unwrap();
    assert!(matches!(
        o.set_tags("tagged", "missing", BTreeMap::new(), &me())
            .await,
        Err(ObjectError::NoSuchKey(_))
    ));
    let rows = drain(&o).await;
    assert_eq!(rows.len(), 2);
    let put_tags = record(&rows[0]);
    assert_eq!(put_tags["eventName"], "ObjectTagging:Put");
    assert_eq!(put_tags["eventVersion"], "2.3");
    assert_eq!(put_tags["s3"]["object"]["eTag"], meta.etag.as_str());
    assert!(put_tags["s3"]["object"].get("size").is_none());
    assert_eq!(record(&rows[1])["eventName"], "ObjectTagging:Delete");
}

async fn sequencers_increase_per_key_across_events_and_restarts(b: Backend) {
    let env = Env::new(b);
    let mut seen = Vec::new();
    {
        let o = env.open();
        bucket_with_config(&o, "seq").await;
        for _ in 0..3 {
            put(&o, "seq", "in/k", b"x").await;
        }
        o.delete_object("seq", "in/k", &me()).await.unwrap();
        for row in drain(&o).await {
            if row.target == Target::EventBridge {
                seen.push(bus_entry(&row).1["object"]["sequencer"].clone());
            }
        }
    }
    let o = env.open();
    put(&o, "seq", "in/k", b"y").await;
    for row in drain(&o).await {
        if row.target == Target::EventBridge {
            seen.push(bus_entry(&row).1["object"]["sequencer"].clone());
        }
    }
    let seqs: Vec<&str> = seen.iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(seqs.len(), 5);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

async fn a_failed_write_records_nothing(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "cond").await;
    put(&o, "cond", "in/k", b"first").await;
    drain(&o).await;
    let only_new = PutOptions {
        condition: WriteCondition::IfAbsent,
        requester: me(),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("cond", "in/k", body(b"second"), only_new)
            .await,
        Err(ObjectError::PreconditionFailed)
    ));
    let if_match = PutOptions {
        condition: WriteCondition::IfMatch("\"nope\"".into()),
        requester: me(),
        ..Default::default()
    };
    assert!(o
        .put_object("cond", "in/k", body(b"third"), if_match)
        .await
        .is_err());
    let up = o
        .create_upload("cond", "in/k", ObjectAttrs::default())
        .await
        .unwrap();
    let p = o
        .upload_part("cond", "in/k", &up.upload_id, 1, body(b"part"), None, None)
        .await
        .unwrap();
    assert!(matches!(
        o.complete_upload(
            "cond",
            "in/k",
            &up.upload_id,
            vec![(1, p.etag)],
            WriteCondition::IfAbsent,
            &me()
        )
        .await,
        Err(ObjectError::PreconditionFailed)
    ));
    assert!(pending(&o).await.is_empty());
}

async fn the_outbox_survives_reopening_until_marked_done(b: Backend) {
    let env = Env::new(b);
    let before = {
        let o = env.open();
        bucket_with_config(&o, "durable").await;
        put(&o, "durable", "in/a", b"x").await;
        put(&o, "durable", "in/b", b"y").await;
        pending(&o).await
    };
    assert_eq!(before.len(), 4);
    let o = env.open();
    let after = pending(&o).await;
    assert_eq!(after, before, "the same rows, messages and order");
    // Paging by sequence number.
    let page = o.notifications_pending(before[1].seq, 1).await.unwrap();
    assert_eq!(page, vec![before[2].clone()]);
    o.notifications_done(&[before[0].seq, before[1].seq])
        .await
        .unwrap();
    o.notifications_done(&[before[0].seq]).await.unwrap();
    assert_eq!(pending(&o).await, before[2..].to_vec());
    let seqs: Vec<u64> = before.iter().map(|r| r.seq).collect();
    o.notifications_done(&seqs).await.unwrap();
    drop(o);
    let o = env.open();
    assert!(pending(&o).await.is_empty());
    // Sequence numbers are never reused, even after the newest rows were removed.
    put(&o, "durable", "in/c", b"z").await;
    let rows = pending(&o).await;
    assert!(rows[0].seq > before[3].seq);
    // The configuration survived too.
    assert_eq!(
        o.notification_config("durable").await.unwrap().functions[0].id,
        "created"
    );
}

async fn setting_a_configuration_sends_queues_a_test_event(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("cfg").await.unwrap();
    let mut cfg = config();
    // A second configuration for the same queue: still one test event.
    cfg.queues.push(target(
        "",
        QUEUE_ARN,
        &["s3:ObjectCreated:Copy"],
        prefix("copies/"),
    ));
    let stored = o
        .set_notification_config("cfg", cfg, &me(), false)
        .await
        .unwrap();
    assert!(
        !stored.queues[1].id.is_empty(),
        "the missing id was generated"
    );
    assert_eq!(o.notification_config("cfg").await.unwrap(), stored);
    let rows = drain(&o).await;
    assert_eq!(rows.len(), 1, "queues only: no function or bus test event");
    assert_eq!(
        rows[0].target,
        Target::Queue {
            arn: QUEUE_ARN.into(),
            name: "removed".into()
        }
    );
    let t = json(&rows[0].payload);
    let mut fields: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["Bucket", "Event", "HostId", "RequestId", "Service", "Time"]
    );
    assert_eq!(t["Service"], "Amazon S3");
    assert_eq!(t["Event"], "s3:TestEvent");
    assert_eq!(t["Bucket"], "cfg");
    assert_eq!(t["RequestId"], "0123456789ABCDEF");
    assert_eq!(t["HostId"], "aG9zdA==");
    assert!(t["Time"].as_str().unwrap().ends_with('Z'));

    // An invalid configuration changes nothing and records nothing.
    let mut bad = config();
    bad.functions[0].events = vec!["s3:ObjectCreated:Nope".into()];
    assert!(matches!(
        o.set_notification_config("cfg", bad, &me(), false).await,
        Err(ObjectError::InvalidArgument(_))
    ));
    assert_eq!(o.notification_config("cfg").await.unwrap(), stored);
    assert!(pending(&o).await.is_empty());

    // An empty configuration turns notifications off.
    o.set_notification_config("cfg", NotificationConfig::default(), &me(), false)
        .await
        .unwrap();
    assert_eq!(
        o.notification_config("cfg").await.unwrap(),
        NotificationConfig::default()
    );
    put(&o, "cfg", "in/a", b"x").await;
    assert!(pending(&o).await.is_empty());
    assert!(matches!(
        o.notification_config("nope").await,
        Err(ObjectError::NoSuchBucket(_))
    ));
    assert!(matches!(
        o.set_notification_config("nope", config(), &me(), false)
            .await,
        Err(ObjectError::NoSuchBucket(_))
    ));
}

async fn a_deleted_bucket_takes_its_configuration_along(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "gone").await;
    o.delete_bucket("gone").await.unwrap();
    o.create_bucket("gone").await.unwrap();
    assert_eq!(
        o.notification_config("gone").await.unwrap(),
        NotificationConfig::default()
    );
    put(&o, "gone", "in/a", b"x").await;
    assert!(pending(&o).await.is_empty());
}

async fn the_consumer_is_woken_by_a_recorded_write(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "woken").await;
    let waiter = {
        let o = o.clone();
        tokio::spawn(async move { o.notifications_wait().await })
    };
    put(&o, "woken", "in/a", b"x").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    // A wake-up given while nobody waited is kept for the next wait.
    put(&o, "woken", "in/b", b"x").await;
    tokio::time::timeout(std::time::Duration::from_secs(5), o.notifications_wait())
        .await
        .expect("the stored wake-up");
}

#[tokio::test]
async fn a_data_dir_from_before_notifications_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        // objects.db as the first schema version left it, with a bucket and an object row.
        let conn = rusqlite::Connection::open(dir.path().join("objects.db")).unwrap();
        conn.execute_batch(crate::store::sqlite::schema::MIGRATIONS[0])
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO buckets (name, created_ms) VALUES ('old', 1)",
            [],
        )
        .unwrap();
    }
    let o = open(dir.path());
    assert_eq!(o.list_buckets().await.unwrap()[0].name, "old");
    o.set_notification_config("old", config(), &me(), false)
        .await
        .unwrap();
    drain(&o).await;
    put(&o, "old", "in/a", b"x").await;
    assert_eq!(pending(&o).await.len(), 2);
}

/// The platform's functions and queues, as a server would answer.
struct Known;

impl Destinations for Known {
    fn check(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Function { name, .. } if name == "thumbs" => Ok(()),
            Target::Queue { name, .. } if name == "removed" => Ok(()),
            Target::EventBridge => Ok(()),
            _ => Err("it does not exist".into()),
        }
    }
}

async fn destinations_are_checked_unless_skipped(b: Backend) {
    let env = Env::new(b);
    let o = env.open().with_destinations(std::sync::Arc::new(Known));
    o.create_bucket("dest").await.unwrap();
    o.set_notification_config("dest", config(), &me(), false)
        .await
        .unwrap();
    let mut missing = config();
    missing.queues[0].arn = "arn:aws:sqs:us-east-1:000000000000:nowhere".into();
    let e = o
        .set_notification_config("dest", missing.clone(), &me(), false)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Unable to validate the following destination configurations: \
         arn:aws:sqs:us-east-1:000000000000:nowhere: it does not exist"
    );
    assert!(matches!(e, ObjectError::InvalidArgument(_)));
    assert_eq!(
        o.notification_config("dest").await.unwrap().queues[0].arn,
        QUEUE_ARN,
        "the refused configuration was not stored"
    );
    // x-amz-skip-destination-validation: stored as given.
    o.set_notification_config("dest", missing, &me(), true)
        .await
        .unwrap();
}

async fn replacing_managed_function_configs_keeps_every_other_configuration(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    bucket_with_config(&o, "mixed").await; // `created` (function) and `removed` (queue)
    let other = "arn:aws:lambda:us-east-1:000000000000:function:resize";
    let managed =
        |id: &str, arn: &str, p: &str| target(id, arn, &["s3:ObjectCreated:Put"], prefix(p));
    let set = |prefix: &'static str, configs: Vec<TargetConfig>| {
        let o = o.clone();
        async move { o.replace_function_configs("mixed", prefix, configs).await }
    };
    set(
        "nimbus:resize:",
        vec![managed("nimbus:resize:1", other, "raw/")],
    )
    .await
    .unwrap();
    let c = set(
        "nimbus:thumbs:",
        vec![
            managed("nimbus:thumbs:1", FN_ARN, "a/"),
            managed("nimbus:thumbs:2", FN_ARN, "b/"),
        ],
    )
    .await
    .unwrap();
    let ids = |c: &NotificationConfig| c.functions.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&c),
        [
            "created",
            "nimbus:resize:1",
            "nimbus:thumbs:1",
            "nimbus:thumbs:2"
        ]
    );
    assert_eq!(c.queues, config().queues);
    assert!(c.event_bridge);
    // A redeploy replaces exactly its own; the stored configuration is what was returned.
    let c = set(
        "nimbus:thumbs:",
        vec![managed("nimbus:thumbs:1", FN_ARN, "c/")],
    )
    .await
    .unwrap();
    assert_eq!(ids(&c), ["created", "nimbus:resize:1", "nimbus:thumbs:1"]);
    assert_eq!(c.functions[2].filter, prefix("c/"));
    assert_eq!(o.notification_config("mixed").await.unwrap(), c);
    // The stored configuration is the one events are matched against.
    put(&o, "mixed", "c/x", b"1").await;
    let rows = drain(&o).await;
    let ids_of: Vec<_> = rows
        .iter()
        .filter(|r| r.target != Target::EventBridge)
        .map(|r| record(r)["s3"]["configurationId"].clone())
        .collect();
    assert_eq!(ids_of, ["nimbus:thumbs:1"]);
    // Nothing: its configurations are gone, the others stay; no queue test event either.
    let c = set("nimbus:thumbs:", vec![]).await.unwrap();
    assert_eq!(ids(&c), ["created", "nimbus:resize:1"]);
    assert!(pending(&o).await.is_empty(), "no test event");

    // Refused: an overlap with a kept configuration, an id outside the prefix, a bucket
    // that does not exist. Nothing changes.
    let e = set(
        "nimbus:thumbs:",
        vec![managed("nimbus:thumbs:1", FN_ARN, "in/x")],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, ObjectError::InvalidArgument(ref m) if m.contains("overlapping")),
        "{e}"
    );
    let e = set("nimbus:thumbs:", vec![managed("other", FN_ARN, "d/")])
        .await
        .unwrap_err();
    assert!(matches!(e, ObjectError::InvalidArgument(_)), "{e}");
    let e = o
        .replace_function_configs("missing", "nimbus:thumbs:", vec![])
        .await
        .unwrap_err();
    assert!(matches!(e, ObjectError::NoSuchBucket(_)), "{e}");
    assert_eq!(
        ids(&o.notification_config("mixed").await.unwrap()),
        ["created", "nimbus:resize:1"]
    );
}

on_both_backends!(
    notifications_off_record_nothing,
    put_records_s3s_event_record_field_by_field,
    copy_multipart_delete_and_tagging_records,
    tagging_events_reach_configured_targets,
    sequencers_increase_per_key_across_events_and_restarts,
    a_failed_write_records_nothing,
    the_outbox_survives_reopening_until_marked_done,
    setting_a_configuration_sends_queues_a_test_event,
    a_deleted_bucket_takes_its_configuration_along,
    the_consumer_is_woken_by_a_recorded_write,
    destinations_are_checked_unless_skipped,
    replacing_managed_function_configs_keeps_every_other_configuration,
);
