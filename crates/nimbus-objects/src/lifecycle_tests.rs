//! CORS and lifecycle configurations through the engine over both metadata backends, and
//! the lifecycle sweep: what it deletes and aborts, and what it records.

use crate::lifecycle::due_after_days;
use crate::tests::{body, me, on_both_backends, open, Backend, Env};
use crate::*;
use serde_json::Value;

fn cors() -> CorsConfig {
    CorsConfig {
        rules: vec![CorsRule {
            id: Some("web".into()),
            allowed_origins: vec!["https://app.example.com".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }],
    }
}

fn rule(
    id: &str,
    filter: LifecycleFilter,
    exp: Option<Expiration>,
    abort: Option<u32>,
) -> LifecycleRule {
    LifecycleRule {
        id: id.into(),
        enabled: true,
        filter,
        expiration: exp,
        abort_upload_days: abort,
    }
}

fn prefix(p: &str) -> LifecycleFilter {
    LifecycleFilter {
        prefix: Some(p.into()),
        ..Default::default()
    }
}

async fn put(o: &Objects, bucket: &str, key: &str, data: &[u8]) -> ObjectMeta {
    o.put_object(bucket, key, body(data), PutOptions::default())
        .await
        .unwrap()
}

fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("objects"))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name() != "tmp")
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum()
}

async fn keys(o: &Objects, bucket: &str) -> Vec<String> {
    let page = o
        .list_objects(ListQuery {
            bucket: bucket.into(),
            max_keys: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    page.objects.into_iter().map(|o| o.key).collect()
}

async fn configurations_round_trip_and_go_with_the_bucket(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("cfg").await.unwrap();
    assert!(matches!(
        o.cors_config("cfg").await,
        Err(ObjectError::NoSuchCorsConfiguration(_))
    ));
    assert!(matches!(
        o.lifecycle_config("cfg").await,
        Err(ObjectError::NoSuchLifecycleConfiguration(_))
    ));
    assert!(matches!(
        o.cors_config("nope").await,
        Err(ObjectError::NoSuchBucket(_))
    ));
    assert!(o.cors_rules("nope").await.unwrap().is_none());
    o.set_cors_config("cfg", cors()).await.unwrap();
    assert_eq!(o.cors_config("cfg").await.unwrap(), cors());
    let lc = LifecycleConfig {
        rules: vec![rule("", prefix("tmp/"), Some(Expiration::Days(3)), Some(1))],
    };
    let stored = o.set_lifecycle_config("cfg", lc).await.unwrap();
    assert!(!stored.rules[0].id.is_empty(), "an ID is generated");
    assert_eq!(o.lifecycle_config("cfg").await.unwrap(), stored);
    // Invalid configurations are refused and leave the stored one.
    let bad = LifecycleConfig {
        rules: vec![rule("x", prefix(""), Some(Expiration::Days(0)), None)],
    };
    assert!(matches!(
        o.set_lifecycle_config("cfg", bad).await,
        Err(ObjectError::InvalidArgument(_))
    ));
    assert_eq!(o.lifecycle_config("cfg").await.unwrap(), stored);
    // Both survive reopening.
    drop(o);
    let o = env.open();
    assert_eq!(o.cors_config("cfg").await.unwrap(), cors());
    assert_eq!(o.lifecycle_config("cfg").await.unwrap(), stored);
    o.delete_cors_config("cfg").await.unwrap();
    o.delete_cors_config("cfg").await.unwrap();
    assert!(o.cors_rules("cfg").await.unwrap().is_none());
    // Deleting the bucket removes its configurations.
    o.delete_bucket("cfg").await.unwrap();
    o.create_bucket("cfg").await.unwrap();
    assert!(matches!(
        o.lifecycle_config("cfg").await,
        Err(ObjectError::NoSuchLifecycleConfiguration(_))
    ));
}

#[tokio::test]
async fn a_data_dir_from_before_bucket_configurations_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("objects.db")).unwrap();
        for m in &crate::store::sqlite::schema::MIGRATIONS[..2] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO buckets (name, created_ms) VALUES ('old', 1)",
            [],
        )
        .unwrap();
    }
    let o = open(dir.path());
    assert_eq!(o.list_buckets().await.unwrap()[0].name, "old");
    o.set_cors_config("old", cors()).await.unwrap();
    assert_eq!(o.cors_config("old").await.unwrap(), cors());
}

async fn the_sweep_expires_exactly_the_matching_objects_and_aborts_old_uploads(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("lcb").await.unwrap();
    o.create_bucket("other").await.unwrap();
    let a = put(&o, "lcb", "tmp/a", b"a").await;
    put(&o, "lcb", "tmp/b", b"b").await;
    put(&o, "lcb", "keep/c", b"c").await;
    put(&o, "lcb", "keep/d", b"d").await;
    put(&o, "other", "tmp/a", b"other").await;
    o.set_tags(
        "lcb",
        "keep/d",
        [("expire".to_string(), "yes".to_string())].into(),
        &me(),
    )
    .await
    .unwrap();
    let up_tmp = o
        .create_upload("lcb", "tmp/u", ObjectAttrs::default())
        .await
        .unwrap();
    o.upload_part(
        "lcb",
        "tmp/u",
        &up_tmp.upload_id,
        1,
        body(b"part"),
        None,
        None,
    )
    .await
    .unwrap();
    let up_keep = o
        .create_upload("lcb", "keep/u", ObjectAttrs::default())
        .await
        .unwrap();
    let tagged = LifecycleFilter {
        tags: vec![("expire".into(), "yes".into())],
        ..Default::default()
    };
    let mut disabled = rule("off", prefix(""), Some(Expiration::Days(1)), None);
    disabled.enabled = false;
    o.set_lifecycle_config(
        "lcb",
        LifecycleConfig {
            rules: vec![
                rule("tmp", prefix("tmp/"), Some(Expiration::Days(1)), Some(3)),
                rule("tagged", tagged, Some(Expiration::Days(2)), None),
                disabled,
            ],
        },
    )
    .await
    .unwrap();
    let t = a.last_modified_ms;
    // Not before the first midnight a day after the write.
    let day1 = due_after_days(t, 1);
    assert_eq!(day1 % 86_400_000, 0);
    assert!(day1 >= t + 86_400_000);
    let c = o.apply_lifecycle(day1 - 1).await.unwrap();
    assert_eq!(c, LifecycleCounts::default());
    let files = blob_files(env.path());
    let c = o.apply_lifecycle(day1 + 1000).await.unwrap();
    assert_eq!(c.expired, 2);
    assert_eq!(c.aborted, 0);
    assert_eq!(keys(&o, "lcb").await, ["keep/c", "keep/d"]);
    assert_eq!(
        keys(&o, "other").await,
        ["tmp/a"],
        "other buckets are untouched"
    );
    assert_eq!(blob_files(env.path()), files - 2, "blobs are released");
    let c = o
        .apply_lifecycle(due_after_days(t, 2) + 1000)
        .await
        .unwrap();
    assert_eq!(c.expired, 1);
    assert_eq!(keys(&o, "lcb").await, ["keep/c"]);
    let c = o
        .apply_lifecycle(due_after_days(up_tmp.created_ms, 3) + 1000)
        .await
        .unwrap();
    assert_eq!(
        c,
        LifecycleCounts {
            expired: 0,
            aborted: 1
        }
    );
    let (left, _) = o.list_uploads("lcb", "", 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].upload_id, up_keep.upload_id);
    // A Date rule expires everything it matches from that date on.
    let date = due_after_days(t, 10);
    o.set_lifecycle_config(
        "lcb",
        LifecycleConfig {
            rules: vec![rule("date", prefix(""), Some(Expiration::Date(date)), None)],
        },
    )
    .await
    .unwrap();
    assert_eq!(o.apply_lifecycle(date - 1).await.unwrap().expired, 0);
    assert_eq!(o.apply_lifecycle(date).await.unwrap().expired, 1);
    assert!(keys(&o, "lcb").await.is_empty());
}

async fn a_rewritten_object_is_judged_by_its_new_time(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("lcb").await.unwrap();
    let first = put(&o, "lcb", "k", b"1").await;
    o.set_lifecycle_config(
        "lcb",
        LifecycleConfig {
            rules: vec![rule("all", prefix(""), Some(Expiration::Days(5)), None)],
        },
    )
    .await
    .unwrap();
    // Due for the first write, but a write at that time is new.
    let due = due_after_days(first.last_modified_ms, 5);
    let store = env.meta();
    let mut newer = first.clone();
    newer.last_modified_ms = due - 1;
    crate::store::MetaStore::put_object(&*store, &newer, &WriteCondition::None, &Notes::none())
        .unwrap();
    assert_eq!(o.apply_lifecycle(due).await.unwrap().expired, 0);
    assert_eq!(keys(&o, "lcb").await, ["k"]);
}

async fn expirations_record_lifecycle_notifications(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("lcb").await.unwrap();
    let queue = "arn:aws:sqs:us-east-1:000000000000:expired";
    let removed = "arn:aws:sqs:us-east-1:000000000000:removed";
    let target = |id: &str, arn: &str, event: &str| TargetConfig {
        id: id.into(),
        arn: arn.into(),
        events: vec![event.into()],
        filter: KeyFilter::default(),
    };
    o.set_notification_config(
        "lcb",
        NotificationConfig {
            functions: vec![],
            queues: vec![
                target("expired", queue, "s3:LifecycleExpiration:*"),
                target("removed", removed, "s3:ObjectRemoved:*"),
            ],
            event_bridge: true,
        },
        &me(),
        false,
    )
    .await
    .unwrap();
    let obj = put(&o, "lcb", "old report.txt", b"x").await;
    let rows = o.notifications_pending(0, 100).await.unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    o.notifications_done(&seqs).await.unwrap();
    o.set_lifecycle_config(
        "lcb",
        LifecycleConfig {
            rules: vec![rule("all", prefix(""), Some(Expiration::Days(1)), None)],
        },
    )
    .await
    .unwrap();
    let now = due_after_days(obj.last_modified_ms, 1);
    assert_eq!(o.apply_lifecycle(now).await.unwrap().expired, 1);
    let rows = o.notifications_pending(0, 100).await.unwrap();
    assert_eq!(
        rows.len(),
        2,
        "the lifecycle queue and the bus, not ObjectRemoved"
    );
    let q = rows
        .iter()
        .find(|r| matches!(&r.target, Target::Queue { .. }))
        .unwrap();
    assert_eq!(q.target.arn(), queue);
    let v: Value = serde_json::from_str(&q.payload).unwrap();
    let rec = &v["Records"][0];
    assert_eq!(rec["eventName"], "LifecycleExpiration:Delete");
    assert_eq!(rec["s3"]["configurationId"], "expired");
    assert_eq!(rec["s3"]["object"]["key"], "old+report.txt");
    assert!(rec["s3"]["object"].get("eTag").is_none());
    assert_eq!(rec["userIdentity"]["principalId"], "AmazonS3");
    let bus = rows
        .iter()
        .find(|r| r.target == Target::EventBridge)
        .unwrap();
    let entry: Value = serde_json::from_str(&bus.payload).unwrap();
    assert_eq!(entry["DetailType"], "Object Deleted");
    let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["reason"], "Lifecycle Expiration");
    assert_eq!(detail["deletion-type"], "Permanently Deleted");
}

on_both_backends!(
    configurations_round_trip_and_go_with_the_bucket,
    the_sweep_expires_exactly_the_matching_objects_and_aborts_old_uploads,
    a_rewritten_object_is_judged_by_its_new_time,
    expirations_record_lifecycle_notifications,
);
