//! What only the PostgreSQL store has to show: several nodes (each its own pool on one
//! schema) writing at once never pass a quota together, never both win a conditional
//! write, never share an event sequencer and never lose a blob reference; and listings
//! page exactly as SQLite's do (byte order, the same continuation tokens).
//! The behaviour both backends share is tested in `crate::tests` and its siblings.

use super::PgMetaStore;
use crate::store::Released;
use crate::tests::{body, me};
use crate::*;
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Another node's pool on the test's schema.
fn second_pool(db: &TestDb) -> Pg {
    Pg::connect(&PgConfig::new(&db.url)).unwrap()
}

/// Two nodes' stores on one database.
fn two_nodes(db: &TestDb, quota: Quota) -> [Arc<PgMetaStore>; 2] {
    [
        Arc::new(PgMetaStore::open(&db.pg).unwrap().with_quota(quota)),
        Arc::new(
            PgMetaStore::open(&second_pool(db))
                .unwrap()
                .with_quota(quota),
        ),
    ]
}

fn object(bucket: &str, key: &str, sha: &str, size: u64) -> ObjectMeta {
    ObjectMeta {
        bucket: bucket.into(),
        key: key.into(),
        sha256: sha.into(),
        size,
        etag: format!("etag-{sha}"),
        last_modified_ms: 1,
        attrs: ObjectAttrs::default(),
        parts: None,
        part_sizes: Vec::new(),
        checksum: None,
    }
}

fn sha(n: usize) -> String {
    format!("{n:064x}")
}

/// Runs `f(node, i)` for `i` in `0..n` on `n` threads, alternating the nodes.
fn race<T: Send + 'static>(
    nodes: &[Arc<PgMetaStore>; 2],
    n: usize,
    f: impl Fn(&PgMetaStore, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (node, f, barrier) = (nodes[i % 2].clone(), f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(&node, i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The usage rows and the reference counts agree with the rows they count.
fn assert_counts_consistent(pg: &Pg) {
    pg.with(async |c| {
        let usage = c
            .query(
                "SELECT u.bucket, u.objects, u.bytes, COUNT(o.key), COALESCE(SUM(o.size), 0)::BIGINT
                 FROM objects_bucket_usage u LEFT JOIN objects_objects o ON o.bucket = u.bucket
                 GROUP BY u.bucket, u.objects, u.bytes",
                &[],
            )
            .await?;
        for r in usage {
            let (b, objects, bytes, n, sum): (String, i64, i64, i64, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            assert_eq!((objects, bytes), (n, sum), "usage of bucket {b}");
        }
        let refs = c
            .query(
                "SELECT sha256, SUM(n)::BIGINT FROM (
                     SELECT sha256, COUNT(*) AS n FROM objects_objects GROUP BY sha256
                     UNION ALL
                     SELECT sha256, COUNT(*) AS n FROM objects_parts GROUP BY sha256
                 ) r GROUP BY sha256",
                &[],
            )
            .await?;
        let want: HashMap<String, i64> = refs.iter().map(|r| (r.get(0), r.get(1))).collect();
        let have: HashMap<String, i64> = c
            .query("SELECT sha256, refs FROM objects_blobs", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(have, want, "blob reference counts");
        Ok(())
    })
    .unwrap();
}

fn quota_tags(bytes: Option<u64>, objects: Option<u64>) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    if let Some(b) = bytes {
        tags.insert(QUOTA_BYTES_TAG.to_string(), b.to_string());
    }
    if let Some(o) = objects {
        tags.insert(QUOTA_OBJECTS_TAG.to_string(), o.to_string());
    }
    tags
}

/// Counts the results: (successes, quota refusals); anything else fails the test.
fn tally(results: Vec<Result<Released>>) -> (usize, usize) {
    let mut out = (0, 0);
    for r in results {
        match r {
            Ok(_) => out.0 += 1,
            Err(ObjectError::QuotaExceeded(_)) => out.1 += 1,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn two_nodes_never_pass_a_bucket_quota_together() {
    let db = TestDb::new("objquota");
    let nodes = two_nodes(&db, Quota::default());
    nodes[0].create_bucket("count", 0).unwrap();
    nodes[0].create_bucket("bytes", 0).unwrap();
    nodes[1]
        .set_bucket_tags("count", Some(&quota_tags(None, Some(7))))
        .unwrap();
    nodes[1]
        .set_bucket_tags("bytes", Some(&quota_tags(Some(95), None)))
        .unwrap();
    let results = race(&nodes, 24, |node, i| {
        let bucket = if i % 4 < 2 { "count" } else { "bytes" };
        node.put_object(
            &object(bucket, &format!("k{i}"), &sha(i % 5), 10),
            &WriteCondition::None,
            &Notes::none(),
        )
    });
    assert_eq!(
        tally(results),
        (7 + 9, 24 - 16),
        "exactly the room there was"
    );
    let listed = |b: &str| {
        nodes[0]
            .list_objects(&ListQuery {
                bucket: b.into(),
                max_keys: 1000,
                ..Default::default()
            })
            .unwrap()
            .objects
            .len()
    };
    assert_eq!((listed("count"), listed("bytes")), (7, 9));
    assert_counts_consistent(&db.pg);
}

#[test]
fn two_nodes_never_pass_the_store_quota_together() {
    let db = TestDb::new("objstorequota");
    let nodes = two_nodes(
        &db,
        Quota {
            max_bytes: Some(1 << 20),
            max_objects: Some(12),
        },
    );
    for b in ["one", "two", "three"] {
        nodes[0].create_bucket(b, 0).unwrap();
    }
    let results = race(&nodes, 30, |node, i| {
        let bucket = ["one", "two", "three"][i % 3];
        node.put_object(
            &object(bucket, &format!("k{i}"), &sha(i), 3),
            &WriteCondition::None,
            &Notes::none(),
        )
    });
    assert_eq!(tally(results), (12, 18));
    // Deletes on one node make room for writes on the other.
    let stored = ["one", "two", "three"]
        .into_iter()
        .flat_map(|b| {
            nodes[0]
                .list_objects(&ListQuery {
                    bucket: b.into(),
                    max_keys: 1000,
                    ..Default::default()
                })
                .unwrap()
                .objects
        })
        .collect::<Vec<_>>();
    assert_eq!(stored.len(), 12);
    nodes[0]
        .delete_object(&stored[0].bucket, &stored[0].key, &Notes::none())
        .unwrap();
    nodes[1]
        .put_object(
            &object("two", "late", &sha(99), 3),
            &WriteCondition::None,
            &Notes::none(),
        )
        .unwrap();
    assert!(matches!(
        nodes[0].put_object(
            &object("three", "later", &sha(98), 3),
            &WriteCondition::None,
            &Notes::none(),
        ),
        Err(ObjectError::QuotaExceeded(_))
    ));
    assert_counts_consistent(&db.pg);
}

#[test]
fn of_concurrent_conditional_puts_of_one_key_exactly_one_wins() {
    let db = TestDb::new("objcond");
    let nodes = two_nodes(&db, Quota::default());
    nodes[0].create_bucket("cond", 0).unwrap();
    let outcomes = |results: Vec<Result<Released>>| {
        let mut won = 0;
        for r in results {
            match r {
                Ok(_) => won += 1,
                Err(ObjectError::PreconditionFailed) => {}
                Err(e) => panic!("{e}"),
            }
        }
        won
    };
    // If-None-Match: *
    let results = race(&nodes, 16, |node, i| {
        node.put_object(
            &object("cond", "k", &sha(i), 1),
            &WriteCondition::IfAbsent,
            &Notes::none(),
        )
    });
    assert_eq!(outcomes(results), 1);
    let winner = nodes[1].object("cond", "k").unwrap();
    // If-Match on the etag everyone saw: one overwrite wins, the rest see a new etag.
    let seen = winner.etag.clone();
    let results = race(&nodes, 16, move |node, i| {
        node.put_object(
            &object("cond", "k", &sha(100 + i), 1),
            &WriteCondition::IfMatch(format!("\"{seen}\"")),
            &Notes::none(),
        )
    });
    assert_eq!(outcomes(results), 1);
    assert_ne!(nodes[0].object("cond", "k").unwrap().etag, winner.etag);
    assert_counts_consistent(&db.pg);
}

#[test]
fn reference_counts_survive_concurrent_overwrites_deletes_and_parts() {
    let db = TestDb::new("objrefs");
    let nodes = two_nodes(&db, Quota::default());
    for b in ["a", "b"] {
        nodes[0].create_bucket(b, 0).unwrap();
    }
    let released = race(&nodes, 8, |node, t| {
        let mut released = Vec::new();
        for round in 0..30 {
            let bucket = ["a", "b"][(t + round) % 2];
            let key = format!("k{}", (t * 7 + round) % 4);
            // Three blobs shared by every key, in changing orders.
            let blob = sha((t + round * 3) % 3);
            let r = if round % 5 == 4 {
                node.delete_object(bucket, &key, &Notes::none())
            } else {
                node.put_object(
                    &object(bucket, &key, &blob, 1),
                    &WriteCondition::None,
                    &Notes::none(),
                )
            };
            released.extend(r.unwrap());
            if round % 10 == 0 {
                let id = format!("up-{t}-{round}");
                node.create_upload(&Upload {
                    upload_id: id.clone(),
                    bucket: bucket.into(),
                    key: key.clone(),
                    created_ms: 0,
                    attrs: ObjectAttrs::default(),
                })
                .unwrap();
                let part = Part {
                    number: 1,
                    sha256: sha((t + 1) % 3),
                    size: 1,
                    etag: "p".into(),
                    last_modified_ms: 0,
                    checksum: None,
                };
                released.extend(node.put_part(&id, &part).unwrap());
                released.extend(node.abort_upload(bucket, &key, &id).unwrap());
            }
        }
        released
    });
    assert_counts_consistent(&db.pg);
    // A released blob is one nothing refers to now (unless a later write took it again).
    let referenced = nodes[0].referenced_blobs().unwrap();
    for sha in released.into_iter().flatten() {
        assert_eq!(
            nodes[1].blob_referenced(&sha).unwrap(),
            referenced.contains(&sha)
        );
    }
}

#[test]
fn an_upload_completed_on_two_nodes_at_once_completes_once() {
    let db = TestDb::new("objcomplete");
    let nodes = two_nodes(&db, Quota::default());
    nodes[0].create_bucket("multi", 0).unwrap();
    nodes[0]
        .create_upload(&Upload {
            upload_id: "u1".into(),
            bucket: "multi".into(),
            key: "k".into(),
            created_ms: 0,
            attrs: ObjectAttrs::default(),
        })
        .unwrap();
    let part = Part {
        number: 1,
        sha256: sha(1),
        size: 4,
        etag: "p".into(),
        last_modified_ms: 0,
        checksum: None,
    };
    nodes[1].put_part("u1", &part).unwrap();
    let results = race(&nodes, 8, |node, _| {
        let mut obj = object("multi", "k", &sha(1), 4);
        obj.parts = Some(1);
        obj.part_sizes = vec![4];
        node.complete_upload("u1", &obj, &WriteCondition::None, &Notes::none())
    });
    let mut won = 0;
    for r in results {
        match r {
            Ok(released) => {
                assert!(released.is_empty(), "the part's blob became the object's");
                won += 1;
            }
            Err(ObjectError::NoSuchUpload(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(nodes[0].object("multi", "k").unwrap().part_sizes, vec![4]);
    assert_counts_consistent(&db.pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sequencers_are_unique_across_nodes() {
    let db = TestDb::new("objseq");
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = |pg: &Pg, dir: &std::path::Path| {
        Objects::new(
            Arc::new(PgMetaStore::open(pg).unwrap()),
            BlobStore::open(&dir.join("objects")).unwrap(),
            ObjectsConfig::default(),
        )
        .unwrap()
    };
    let nodes = [node(&db.pg, d1.path()), node(&second_pool(&db), d2.path())];
    nodes[0].create_bucket("events").await.unwrap();
    nodes[0]
        .set_notification_config(
            "events",
            NotificationConfig {
                event_bridge: true,
                ..Default::default()
            },
            &me(),
            false,
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let o = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            o.put_object(
                "events",
                &format!("k{}", i % 5),
                body(format!("bytes {i}").as_bytes()),
                PutOptions::default(),
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = nodes[1].notifications_pending(0, 1000).await.unwrap();
    assert_eq!(rows.len(), 40);
    let mut seen = HashSet::new();
    for row in &rows {
        let entry: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        let detail: serde_json::Value =
            serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
        let sequencer = detail["object"]["sequencer"].as_str().unwrap().to_string();
        assert!(
            seen.insert(sequencer.clone()),
            "sequencer {sequencer} twice"
        );
    }
    // Recorded in sequence order: outbox order is sequencer order.
    let in_order: Vec<String> = rows
        .iter()
        .map(|row| {
            let entry: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
            let detail: serde_json::Value =
                serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
            detail["object"]["sequencer"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = in_order.clone();
    sorted.sort();
    assert_eq!(in_order, sorted);
}

/// Keys whose byte order differs from most collations' order: case, punctuation, accents,
/// CJK and astral-plane characters, the delimiter around the prefixes.
const TRICKY_KEYS: &[&str] = &[
    "a",
    "A",
    "a b",
    "a-b",
    "a.b",
    "a/b",
    "a/b/c",
    "a/b-c",
    "a/bc",
    "a0",
    "a_b",
    "ab",
    "B",
    "b",
    "z",
    "~",
    "é",
    "é/x",
    "e\u{301}",
    "ü/1",
    "ü/2/3",
    "日本/語",
    "日本/語/x",
    "日本語",
    "😀/1",
    "😀",
    "\u{7f}",
    "x/\u{ffff}",
    "x/\u{10000}",
    "x/y",
];

/// Every page of `q`, following the continuation tokens.
fn all_pages(meta: &dyn MetaStore, mut q: ListQuery) -> Vec<ListPage> {
    let mut pages = Vec::new();
    loop {
        let page = meta.list_objects(&q).unwrap();
        let next = page.next_continuation.clone();
        pages.push(page);
        match next {
            Some(t) => q.continuation = Some(t),
            None => return pages,
        }
    }
}

#[test]
fn listings_and_their_tokens_are_the_same_as_sqlites() {
    let db = TestDb::new("objlist");
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteMetaStore::open(dir.path()).unwrap();
    let pg = PgMetaStore::open(&db.pg).unwrap();
    let stores: [&dyn MetaStore; 2] = [&sqlite, &pg];
    for store in stores {
        for b in ["b-1", "b.1", "b1", "b0", "b-0"] {
            store.create_bucket(b, 0).unwrap();
        }
        for (i, key) in TRICKY_KEYS.iter().enumerate() {
            store
                .put_object(
                    &object("b1", key, &sha(i), i as u64),
                    &WriteCondition::None,
                    &Notes::none(),
                )
                .unwrap();
        }
    }
    assert_eq!(sqlite.list_buckets().unwrap(), pg.list_buckets().unwrap());
    let mut compared = 0;
    for prefix in ["", "a", "a/", "a/b", "é", "日本", "x/", "😀", "nothing"] {
        for delimiter in [None, Some("/"), Some("b"), Some("/b")] {
            for max_keys in [1, 2, 3, 7, 1000] {
                for start_after in [None, Some("a/b"), Some("é"), Some("\u{ffff}")] {
                    let q = ListQuery {
                        bucket: "b1".into(),
                        prefix: prefix.into(),
                        delimiter: delimiter.map(str::to_string),
                        start_after: start_after.map(str::to_string),
                        continuation: None,
                        max_keys,
                    };
                    let a = all_pages(&sqlite, q.clone());
                    let b = all_pages(&pg, q.clone());
                    assert_eq!(a.len(), b.len(), "{q:?}");
                    for (x, y) in a.iter().zip(&b) {
                        let keys = |p: &ListPage| {
                            p.objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()
                        };
                        assert_eq!(keys(x), keys(y), "{q:?}");
                        assert_eq!(x.common_prefixes, y.common_prefixes, "{q:?}");
                        assert_eq!(x.next_continuation, y.next_continuation, "{q:?}");
                        assert_eq!(x.last, y.last, "{q:?}");
                        assert_eq!(x.objects, y.objects, "{q:?}");
                    }
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 9 * 4 * 5 * 4);
    // The whole bucket in one page is in byte order.
    let all = pg
        .list_objects(&ListQuery {
            bucket: "b1".into(),
            max_keys: 1000,
            ..Default::default()
        })
        .unwrap();
    let mut want: Vec<&str> = TRICKY_KEYS.to_vec();
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let got: Vec<&str> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(got, want);
    // Uploads list in byte order too.
    for store in stores {
        for (i, key) in ["é", "e", "E", "日本/1", "a/b", "a-b"].iter().enumerate() {
            store
                .create_upload(&Upload {
                    upload_id: format!("u{i}"),
                    bucket: "b1".into(),
                    key: key.to_string(),
                    created_ms: i as i64,
                    attrs: ObjectAttrs::default(),
                })
                .unwrap();
        }
    }
    for prefix in ["", "a", "日本", "e"] {
        assert_eq!(
            sqlite.list_uploads("b1", prefix, 3).unwrap(),
            pg.list_uploads("b1", prefix, 3).unwrap(),
            "{prefix}"
        );
    }
}

/// The SQLite test of the same name inserts through SQLite's own transaction; here the
/// rows go in with one statement.
#[test]
fn listing_a_hundred_thousand_keys() {
    let db = TestDb::new("objmany");
    let meta = PgMetaStore::open(&db.pg).unwrap();
    meta.create_bucket("many", 0).unwrap();
    db.pg
        .with(async |c| {
            c.batch_execute(
                "INSERT INTO objects_objects
                    (bucket, key, sha256, size, etag, last_modified_ms, attrs)
                 SELECT 'many',
                        convert_to('d' || (i % 10) || '/k' || lpad(i::text, 6, '0'), 'UTF8'),
                        repeat('0', 64), 1, 'e', 0, '{}'
                 FROM generate_series(0, 99999) AS i",
            )
            .await?;
            Ok(())
        })
        .unwrap();
    let q = |prefix: &str, delimiter: Option<&str>| ListQuery {
        bucket: "many".into(),
        prefix: prefix.into(),
        delimiter: delimiter.map(str::to_string),
        max_keys: 1000,
        ..Default::default()
    };
    let mut deep = q("d7/", None);
    deep.start_after = Some("d7/k050007".into());
    let page = meta.list_objects(&deep).unwrap();
    assert_eq!(page.objects.len(), 1000);
    assert_eq!(page.objects[0].key, "d7/k050017");
    assert!(page.next_continuation.is_some());
    let root = meta.list_objects(&q("", Some("/"))).unwrap();
    assert_eq!(root.common_prefixes.len(), 10);
    assert!(root.objects.is_empty());
}
