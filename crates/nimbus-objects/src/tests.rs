//! Engine tests in a temporary data dir, each over both metadata backends (SQLite and
//! PostgreSQL, a fresh schema per test: see [`on_both_backends`]); the few that poke at the
//! SQLite file itself run on SQLite only.

use crate::*;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::convert::Infallible;

/// The tests' limits: small parts.
fn test_config(quota: Quota) -> ObjectsConfig {
    ObjectsConfig {
        min_part_bytes: 8,
        quota,
        ..Default::default()
    }
}

/// The SQLite store in `dir` (for the SQLite-only tests).
pub(crate) fn open(dir: &std::path::Path) -> Objects {
    Objects::open_sqlite(dir, test_config(Quota::default())).unwrap()
}

/// The metadata backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A test's store: a data dir (blobs, and SQLite's database) and, on PostgreSQL, a schema
/// of its own. Opening again gives a store over the same data, as a restart does.
pub(crate) struct Env {
    dir: tempfile::TempDir,
    db: Option<nimbus_pg::testing::TestDb>,
}

impl Env {
    pub(crate) fn new(b: Backend) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            db: (b == Backend::Postgres).then(|| nimbus_pg::testing::TestDb::new("objects")),
        }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The PostgreSQL pool (`None` on SQLite).
    pub(crate) fn pg(&self) -> Option<&nimbus_pg::Pg> {
        self.db.as_ref().map(|d| &d.pg)
    }

    /// A metadata store over the test's data, limited to `quota`.
    pub(crate) fn meta_with_quota(&self, quota: Quota) -> std::sync::Arc<dyn MetaStore> {
        match self.pg() {
            Some(pg) => std::sync::Arc::new(PgMetaStore::open(pg).unwrap().with_quota(quota)),
            None => std::sync::Arc::new(
                SqliteMetaStore::open(self.path())
                    .unwrap()
                    .with_quota(quota),
            ),
        }
    }

    pub(crate) fn meta(&self) -> std::sync::Arc<dyn MetaStore> {
        self.meta_with_quota(Quota::default())
    }

    pub(crate) fn open(&self) -> Objects {
        self.open_with_quota(Quota::default())
    }

    pub(crate) fn open_with_quota(&self, quota: Quota) -> Objects {
        let blobs = BlobStore::open(&self.path().join("objects")).unwrap();
        Objects::new(self.meta_with_quota(quota), blobs, test_config(quota)).unwrap()
    }
}

/// Runs each named `async fn NAME(b: Backend)` as two tests, `sqlite::NAME` and
/// `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::tests::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// The requester of the tests' writes.
pub(crate) fn me() -> Requester {
    Requester {
        request_id: "0123456789ABCDEF".into(),
        host_id: "aG9zdA==".into(),
        principal: "AKIDTEST".into(),
        source_ip: "192.0.2.7".into(),
    }
}

pub(crate) fn body(data: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    // Several chunks, as a network body arrives.
    let chunks: Vec<_> = data
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

async fn put(o: &Objects, bucket: &str, key: &str, data: &[u8]) -> ObjectMeta {
    o.put_object(bucket, key, body(data), PutOptions::default())
        .await
        .unwrap()
}

async fn read(o: &Objects, bucket: &str, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    let r = o
        .get_object(bucket, key, range, ReadConditions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut s = r.body;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("objects"))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name() != "tmp")
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum()
}

fn query(bucket: &str, prefix: &str, delimiter: Option<&str>, max: usize) -> ListQuery {
    ListQuery {
        bucket: bucket.into(),
        prefix: prefix.into(),
        delimiter: delimiter.map(str::to_string),
        max_keys: max,
        ..Default::default()
    }
}

async fn put_get_head_delete_round_trip_with_attributes(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("photos").await.unwrap();
    assert!(matches!(
        o.create_bucket("photos").await,
        Err(ObjectError::BucketAlreadyOwnedByYou(_))
    ));
    let mut attrs = ObjectAttrs::default();
    attrs.headers.content_type = Some("image/png".into());
    attrs.user_meta.insert("owner".into(), "ann".into());
    let meta = o
        .put_object(
            "photos",
            "../a b.png",
            body(b"hello world"),
            PutOptions {
                attrs: attrs.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(meta.etag, "5eb63bbbe01eeed093cb22bb8f5acdc3", "hex MD5");
    let head = o
        .head_object("photos", "../a b.png", &ReadConditions::default())
        .await
        .unwrap();
    assert_eq!(head.attrs, attrs);
    assert_eq!(head.size, 11);
    assert_eq!(read(&o, "photos", "../a b.png", None).await, b"hello world");
    // The key never became a path: only hash-named files exist.
    assert!(!env.path().join("a b.png").exists());
    assert_eq!(blob_files(env.path()), 1);
    assert!(matches!(
        o.delete_bucket("photos").await,
        Err(ObjectError::BucketNotEmpty(_))
    ));
    o.delete_object("photos", "../a b.png", &me())
        .await
        .unwrap();
    o.delete_object("photos", "../a b.png", &me())
        .await
        .unwrap();
    assert!(matches!(
        o.head_object("photos", "../a b.png", &ReadConditions::default())
            .await,
        Err(ObjectError::NoSuchKey(_))
    ));
    assert_eq!(
        blob_files(env.path()),
        0,
        "the unreferenced blob is removed"
    );
    o.delete_bucket("photos").await.unwrap();
    assert!(matches!(
        o.put_object("photos", "k", body(b"x"), PutOptions::default())
            .await,
        Err(ObjectError::NoSuchBucket(_))
    ));
}

async fn ranges_and_digest_and_length_checks(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("b1b").await.unwrap();
    put(&o, "b1b", "k", b"0123456789").await;
    let r = |first, last| Some(ByteRange::From { first, last });
    assert_eq!(read(&o, "b1b", "k", r(2, Some(4))).await, b"234");
    assert_eq!(
        read(&o, "b1b", "k", Some(ByteRange::Suffix(3))).await,
        b"789"
    );
    assert!(matches!(
        o.get_object("b1b", "k", r(10, None), ReadConditions::default())
            .await
            .err(),
        Some(ObjectError::InvalidRange { size: 10 })
    ));
    let wrong_md5 = PutOptions {
        content_md5: Some([0; 16]),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("b1b", "k", body(b"other"), wrong_md5).await,
        Err(ObjectError::BadDigest)
    ));
    let short = PutOptions {
        declared_len: Some(100),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("b1b", "k", body(b"other"), short).await,
        Err(ObjectError::IncompleteBody {
            declared: 100,
            received: 5
        })
    ));
    let huge = PutOptions {
        declared_len: Some(6 << 30),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("b1b", "k", body(b"x"), huge).await,
        Err(ObjectError::EntityTooLarge { .. })
    ));
    assert_eq!(
        read(&o, "b1b", "k", None).await,
        b"0123456789",
        "failed writes change nothing"
    );
    assert_eq!(blob_files(env.path()), 1);
    assert_eq!(
        std::fs::read_dir(env.path().join("objects/tmp"))
            .unwrap()
            .count(),
        0
    );
}

async fn conditional_writes(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("cond").await.unwrap();
    let only_new = || PutOptions {
        condition: WriteCondition::IfAbsent,
        ..Default::default()
    };
    let first = o
        .put_object("cond", "k", body(b"one"), only_new())
        .await
        .unwrap();
    assert!(matches!(
        o.put_object("cond", "k", body(b"two"), only_new()).await,
        Err(ObjectError::PreconditionFailed)
    ));
    let if_match = |e: &str| PutOptions {
        condition: WriteCondition::IfMatch(format!("\"{e}\"")),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("cond", "k", body(b"two"), if_match("nope"))
            .await,
        Err(ObjectError::PreconditionFailed)
    ));
    o.put_object("cond", "k", body(b"two"), if_match(&first.etag))
        .await
        .unwrap();
    assert_eq!(read(&o, "cond", "k", None).await, b"two");
}

async fn copy_shares_the_blob_and_survives_the_source(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("src").await.unwrap();
    o.create_bucket("dst").await.unwrap();
    let src = put(&o, "src", "a", b"shared bytes").await;
    let copy = o
        .copy_object(
            ("src", "a"),
            ("dst", "b"),
            ReadConditions::default(),
            None,
            WriteCondition::None,
            &me(),
        )
        .await
        .unwrap();
    assert_eq!(copy.sha256, src.sha256);
    assert_eq!(copy.etag, src.etag);
    assert_eq!(blob_files(env.path()), 1, "a copy writes no bytes");
    o.delete_object("src", "a", &me()).await.unwrap();
    assert_eq!(read(&o, "dst", "b", None).await, b"shared bytes");
    o.delete_object("dst", "b", &me()).await.unwrap();
    assert_eq!(blob_files(env.path()), 0);
}

async fn listing_paginates_and_folds_common_prefixes(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("list").await.unwrap();
    let mut keys = Vec::new();
    for d in 0..3 {
        for f in 0..4 {
            keys.push(format!("photos/{d}/img{f}.jpg"));
        }
    }
    keys.extend([
        "photos/top.jpg".to_string(),
        "readme".into(),
        "photos0".into(),
    ]);
    for k in &keys {
        put(&o, "list", k, k.as_bytes()).await;
    }
    keys.sort();
    // Pages of 4 without a delimiter return every key once, in order.
    let mut seen = Vec::new();
    let mut q = query("list", "", None, 4);
    loop {
        let page = o.list_objects(q.clone()).await.unwrap();
        assert!(page.objects.len() <= 4);
        seen.extend(page.objects.into_iter().map(|m| m.key));
        match page.next_continuation {
            Some(t) => q.continuation = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, keys);
    // Delimiter: common prefixes count against max-keys and are skipped in one step.
    let page = o
        .list_objects(query("list", "photos/", Some("/"), 1000))
        .await
        .unwrap();
    assert_eq!(
        page.common_prefixes,
        ["photos/0/", "photos/1/", "photos/2/"]
    );
    assert_eq!(
        page.objects
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["photos/top.jpg"]
    );
    assert!(page.next_continuation.is_none());
    let p1 = o
        .list_objects(query("list", "photos/", Some("/"), 2))
        .await
        .unwrap();
    assert_eq!(p1.common_prefixes, ["photos/0/", "photos/1/"]);
    let mut q2 = query("list", "photos/", Some("/"), 2);
    q2.continuation = p1.next_continuation;
    let p2 = o.list_objects(q2).await.unwrap();
    assert_eq!(p2.common_prefixes, ["photos/2/"]);
    assert_eq!(p2.objects[0].key, "photos/top.jpg");
    assert!(p2.next_continuation.is_none());
    // start-after, and a prefix that is not a directory.
    let mut q3 = query("list", "photos", None, 1000);
    q3.start_after = Some("photos/2/img3.jpg".into());
    let p3 = o.list_objects(q3).await.unwrap();
    assert_eq!(
        p3.objects
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["photos/top.jpg", "photos0"]
    );
    let root = o
        .list_objects(query("list", "", Some("/"), 1000))
        .await
        .unwrap();
    assert_eq!(root.common_prefixes, ["photos/"]);
    assert_eq!(root.objects.len(), 2);
}

async fn multipart_upload_etag_parts_and_abort(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("mpu").await.unwrap();
    let mut attrs = ObjectAttrs::default();
    attrs.headers.content_type = Some("text/plain".into());
    let up = o.create_upload("mpu", "big", attrs.clone()).await.unwrap();
    let p1 = o
        .upload_part(
            "mpu",
            "big",
            &up.upload_id,
            1,
            body(b"aaaaaaaaaa"),
            None,
            None,
        )
        .await
        .unwrap();
    let p2 = o
        .upload_part("mpu", "big", &up.upload_id, 2, body(b"bbb"), None, None)
        .await
        .unwrap();
    let (_, listed, more) = o
        .list_parts("mpu", "big", &up.upload_id, 0, 1)
        .await
        .unwrap();
    assert_eq!((listed.len(), more), (1, true));
    let (uploads, _) = o.list_uploads("mpu", "b", 100).await.unwrap();
    assert_eq!(uploads.len(), 1);
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "big",
            &up.upload_id,
            vec![(2, p2.etag.clone()), (1, p1.etag.clone())],
            WriteCondition::None,
            &me(),
        )
        .await,
        Err(ObjectError::InvalidPartOrder)
    ));
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "big",
            &up.upload_id,
            vec![(1, "\"bad\"".into())],
            WriteCondition::None,
            &me(),
        )
        .await,
        Err(ObjectError::InvalidPart(_))
    ));
    let small = o
        .create_upload("mpu", "small", ObjectAttrs::default())
        .await
        .unwrap();
    let s1 = o
        .upload_part("mpu", "small", &small.upload_id, 1, body(b"x"), None, None)
        .await
        .unwrap();
    let s2 = o
        .upload_part("mpu", "small", &small.upload_id, 2, body(b"y"), None, None)
        .await
        .unwrap();
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "small",
            &small.upload_id,
            vec![(1, s1.etag), (2, s2.etag)],
            WriteCondition::None,
            &me(),
        )
        .await,
        Err(ObjectError::EntityTooSmall { part: 1, .. })
    ));
    o.abort_upload("mpu", "small", &small.upload_id)
        .await
        .unwrap();
    let obj = o
        .complete_upload(
            "mpu",
            "big",
            &up.upload_id,
            vec![(1, format!("\"{}\"", p1.etag)), (2, p2.etag.clone())],
            WriteCondition::None,
            &me(),
        )
        .await
        .unwrap();
    let mut md5s = Vec::new();
    md5s.extend(hex::decode(&p1.etag).unwrap());
    md5s.extend(hex::decode(&p2.etag).unwrap());
    use md5::Digest;
    assert_eq!(
        obj.etag,
        format!("{}-2", hex::encode(md5::Md5::digest(&md5s)))
    );
    assert_eq!(obj.attrs, attrs);
    assert_eq!(read(&o, "mpu", "big", None).await, b"aaaaaaaaaabbb");
    assert!(matches!(
        o.upload_part("mpu", "big", &up.upload_id, 3, body(b"z"), None, None)
            .await,
        Err(ObjectError::NoSuchUpload(_))
    ));
    assert_eq!(
        blob_files(env.path()),
        1,
        "parts are dropped once assembled"
    );
    o.delete_bucket("mpu").await.unwrap_err();
}

async fn abandoned_uploads_expire(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("exp").await.unwrap();
    let up = o
        .create_upload("exp", "k", ObjectAttrs::default())
        .await
        .unwrap();
    o.upload_part("exp", "k", &up.upload_id, 1, body(b"part"), None, None)
        .await
        .unwrap();
    assert_eq!(o.expire_uploads(up.created_ms + 1000).await.unwrap(), 0);
    let later = up.created_ms + o.config().upload_expiry.as_millis() as i64 + 1;
    assert_eq!(o.expire_uploads(later).await.unwrap(), 1);
    assert!(o.list_uploads("exp", "", 10).await.unwrap().0.is_empty());
    assert_eq!(blob_files(env.path()), 0);
    o.delete_bucket("exp").await.unwrap();
}

async fn tags_replace(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("tags").await.unwrap();
    put(&o, "tags", "k", b"x").await;
    let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    o.set_tags("tags", "k", tags.clone(), &me()).await.unwrap();
    let head = o
        .head_object("tags", "k", &ReadConditions::default())
        .await
        .unwrap();
    assert_eq!(head.attrs.tags, tags);
    assert!(matches!(
        o.set_tags("tags", "missing", tags, &me()).await,
        Err(ObjectError::NoSuchKey(_))
    ));
}

/// A crash after a blob was written but before its row committed leaves a file no row
/// refers to; a crash mid-write leaves a temp file. Reopening removes both and keeps every
/// committed object.
async fn reopening_sweeps_what_a_crash_left_and_keeps_acknowledged_objects(b: Backend) {
    let env = Env::new(b);
    let sha = {
        let o = env.open();
        o.create_bucket("crash").await.unwrap();
        put(&o, "crash", "kept", b"acknowledged").await.sha256
    };
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(env.path().join("objects/ab")).unwrap();
    std::fs::write(
        env.path().join("objects/ab").join(&orphan),
        b"never committed",
    )
    .unwrap();
    std::fs::write(env.path().join("objects/tmp/partial"), b"half a wri").unwrap();
    let o = env.open();
    assert!(!env.path().join("objects/ab").join(&orphan).exists());
    assert!(!env.path().join("objects/tmp/partial").exists());
    assert!(env
        .path()
        .join("objects")
        .join(&sha[..2])
        .join(&sha)
        .exists());
    assert_eq!(read(&o, "crash", "kept", None).await, b"acknowledged");
}

/// 100,000 keys: pages deep into the bucket and delimiter folding stay correct (each page
/// starts with a seek on the `(bucket, key)` primary key; the benchmark is in docs/s3.md).
#[tokio::test]
async fn listing_a_hundred_thousand_keys() {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMetaStore::open(dir.path()).unwrap();
    meta.create_bucket("many", 0).unwrap();
    let sha = "0".repeat(64);
    meta.write(|tx| {
        for i in 0..100_000u32 {
            let obj = ObjectMeta {
                bucket: "many".into(),
                key: format!("d{}/k{i:06}", i % 10),
                sha256: sha.clone(),
                size: 1,
                etag: "e".into(),
                last_modified_ms: 0,
                attrs: ObjectAttrs::default(),
                parts: None,
                part_sizes: Vec::new(),
                checksum: None,
            };
            crate::store::sqlite::upsert_object(
                tx,
                &obj,
                &WriteCondition::None,
                &Notes::none(),
                &Quota::default(),
            )?;
        }
        Ok(())
    })
    .unwrap();
    let mut q = query("many", "d7/", None, 1000);
    q.start_after = Some("d7/k050007".into());
    let page = meta.list_objects(&q).unwrap();
    assert_eq!(page.objects.len(), 1000);
    assert_eq!(page.objects[0].key, "d7/k050017");
    assert!(page.next_continuation.is_some());
    let root = meta
        .list_objects(&query("many", "", Some("/"), 1000))
        .unwrap();
    assert_eq!(root.common_prefixes.len(), 10);
    assert!(root.objects.is_empty());
}

async fn bytes_of(r: ObjectRead) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = r.body;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

async fn upload_part_copy_ranges_and_reading_parts_back(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("pcopy").await.unwrap();
    let src: Vec<u8> = (0..100u8).collect();
    put(&o, "pcopy", "src", &src).await;
    let up = o
        .create_upload("pcopy", "dst", ObjectAttrs::default())
        .await
        .unwrap();
    let dst = ("pcopy", "dst", up.upload_id.as_str());
    let none = ReadConditions::default;
    let p1 = o
        .upload_part_copy(("pcopy", "src"), none(), Some((10, 29)), dst, 1)
        .await
        .unwrap();
    assert_eq!(p1.size, 20);
    assert_eq!(
        p1.etag,
        hex::encode(<md5::Md5 as md5::Digest>::digest(&src[10..30]))
    );
    let p2 = o
        .upload_part_copy(("pcopy", "src"), none(), None, dst, 2)
        .await
        .unwrap();
    assert_eq!(p2.size, 100);
    for bad in [(0, 100), (50, 200)] {
        assert!(matches!(
            o.upload_part_copy(("pcopy", "src"), none(), Some(bad), dst, 3).await,
            Err(ObjectError::InvalidArgument(m)) if m.contains("size: 100")
        ));
    }
    let stale = ReadConditions {
        if_match: Some("\"nope\"".into()),
        ..Default::default()
    };
    assert!(matches!(
        o.upload_part_copy(("pcopy", "src"), stale, None, dst, 3)
            .await,
        Err(ObjectError::PreconditionFailed)
    ));
    assert!(matches!(
        o.upload_part_copy(("pcopy", "missing"), none(), None, dst, 3)
            .await,
        Err(ObjectError::NoSuchKey(_))
    ));
    assert!(matches!(
        o.upload_part_copy(("pcopy", "src"), none(), None, ("pcopy", "dst", "nope"), 3)
            .await,
        Err(ObjectError::NoSuchUpload(_))
    ));
    assert!(matches!(
        o.upload_part_copy(("pcopy", "src"), none(), None, dst, 0)
            .await,
        Err(ObjectError::InvalidArgument(_))
    ));
    let obj = o
        .complete_upload(
            "pcopy",
            "dst",
            &up.upload_id,
            vec![(1, p1.etag), (2, p2.etag)],
            WriteCondition::None,
            &me(),
        )
        .await
        .unwrap();
    assert_eq!(
        (obj.parts, obj.part_sizes.clone()),
        (Some(2), vec![20, 100])
    );
    // Read back part by part (from the store, not the value returned above).
    let part = o.get_object_part("pcopy", "dst", 2, none()).await.unwrap();
    assert_eq!(part.range, Some((20, 100)));
    assert_eq!(part.meta.part_sizes, vec![20, 100]);
    assert_eq!(bytes_of(part).await, src);
    let part = o.get_object_part("pcopy", "dst", 1, none()).await.unwrap();
    assert_eq!(bytes_of(part).await, &src[10..30]);
    assert!(matches!(
        o.get_object_part("pcopy", "dst", 3, none()).await,
        Err(ObjectError::InvalidPartNumber { part: 3, count: 2 })
    ));
    // A single-part object is its own part 1, whole.
    let whole = o.get_object_part("pcopy", "src", 1, none()).await.unwrap();
    assert_eq!(whole.range, None);
    assert_eq!(bytes_of(whole).await, src);
    assert!(matches!(
        o.get_object_part("pcopy", "src", 2, none()).await,
        Err(ObjectError::InvalidPartNumber { part: 2, count: 1 })
    ));
    // The part sizes survive a reopen.
    drop(o);
    let o = env.open();
    let meta = o
        .head_object("pcopy", "dst", &ReadConditions::default())
        .await
        .unwrap();
    assert_eq!(meta.part_span(2).unwrap(), (20, 100));
}

async fn checksums_are_verified_before_the_write_and_stored(b: Backend) {
    use base64::Engine as _;
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("sums").await.unwrap();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let sha = |d: &[u8]| b64(&<sha2::Sha256 as sha2::Digest>::digest(d));
    let opts = |expected: String| PutOptions {
        checksum: Some(ChecksumRequest {
            algorithm: ChecksumAlgorithm::Sha256,
            expected: Some(expected),
        }),
        ..Default::default()
    };
    assert!(matches!(
        o.put_object("sums", "k", body(b"data"), opts(sha(b"other")))
            .await,
        Err(ObjectError::BadChecksum("SHA256"))
    ));
    assert!(matches!(
        o.head_object("sums", "k", &ReadConditions::default()).await,
        Err(ObjectError::NoSuchKey(_))
    ));
    let meta = o
        .put_object("sums", "k", body(b"data"), opts(sha(b"data")))
        .await
        .unwrap();
    let stored = Checksum {
        algorithm: ChecksumAlgorithm::Sha256,
        value: sha(b"data"),
        composite: false,
    };
    assert_eq!(meta.checksum.as_ref(), Some(&stored));
    drop(o);
    let o = env.open();
    let meta = o
        .head_object("sums", "k", &ReadConditions::default())
        .await
        .unwrap();
    assert_eq!(meta.checksum, Some(stored.clone()));
    // A copy keeps it.
    let copy = o
        .copy_object(
            ("sums", "k"),
            ("sums", "k2"),
            ReadConditions::default(),
            None,
            WriteCondition::None,
            &me(),
        )
        .await
        .unwrap();
    assert_eq!(copy.checksum, Some(stored));
}

fn quota_tags(bytes: Option<&str>, objects: Option<&str>) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([("team".to_string(), "core".to_string())]);
    if let Some(b) = bytes {
        tags.insert(QUOTA_BYTES_TAG.into(), b.into());
    }
    if let Some(o) = objects {
        tags.insert(QUOTA_OBJECTS_TAG.into(), o.into());
    }
    tags
}

async fn bucket_quotas_from_tags_count_overwrites_deletes_and_completions(b: Backend) {
    let env = Env::new(b);
    let o = env.open();
    o.create_bucket("quota").await.unwrap();
    assert!(matches!(
        o.bucket_tags("quota").await,
        Err(ObjectError::NoSuchTagSet(_))
    ));
    assert!(matches!(
        o.set_bucket_tags("quota", Some(quota_tags(Some("-1"), None)))
            .await,
        Err(ObjectError::InvalidTag(_))
    ));
    o.set_bucket_tags("quota", Some(quota_tags(Some("10"), Some("2"))))
        .await
        .unwrap();
    assert_eq!(o.bucket_tags("quota").await.unwrap()["team"], "core");
    put(&o, "quota", "a", b"12345").await;
    // Over the byte quota: refused, nothing written.
    let exceeded = |r: Result<ObjectMeta>| matches!(r, Err(ObjectError::QuotaExceeded(_)));
    let p = |k: &'static str, d: &'static [u8]| {
        o.put_object("quota", k, body(d), PutOptions::default())
    };
    assert!(exceeded(p("b", b"123456").await));
    assert!(matches!(
        o.head_object("quota", "b", &ReadConditions::default())
            .await,
        Err(ObjectError::NoSuchKey(_))
    ));
    // An overwrite counts only its growth; a smaller one always passes.
    put(&o, "quota", "a", b"1234567890").await;
    assert!(exceeded(p("a", b"12345678901").await));
    put(&o, "quota", "a", b"1").await;
    put(&o, "quota", "b", b"1").await;
    // Two objects: the third is refused, also as a copy and a multipart completion.
    assert!(exceeded(p("c", b"").await));
    assert!(exceeded(
        o.copy_object(
            ("quota", "a"),
            ("quota", "c"),
            ReadConditions::default(),
            None,
            WriteCondition::None,
            &me(),
        )
        .await
    ));
    let up = o
        .create_upload("quota", "c", ObjectAttrs::default())
        .await
        .unwrap();
    let part = o
        .upload_part("quota", "c", &up.upload_id, 1, body(b"x"), None, None)
        .await
        .unwrap();
    let complete = |o: &Objects| {
        let (id, etag) = (up.upload_id.clone(), part.etag.clone());
        let o = o.clone();
        async move {
            o.complete_upload(
                "quota",
                "c",
                &id,
                vec![(1, etag)],
                WriteCondition::None,
                &me(),
            )
            .await
        }
    };
    assert!(exceeded(complete(&o).await));
    // A delete makes room; the upload is still there to complete.
    o.delete_object("quota", "b", &me()).await.unwrap();
    complete(&o).await.unwrap();
    // Without the tags, no quota.
    o.set_bucket_tags("quota", None).await.unwrap();
    put(&o, "quota", "d", b"0123456789abcdef").await;
}

async fn the_store_quota_holds_under_concurrent_puts(b: Backend) {
    let env = Env::new(b);
    let o = env.open_with_quota(Quota {
        max_bytes: None,
        max_objects: Some(10),
    });
    o.create_bucket("one-bucket").await.unwrap();
    o.create_bucket("two-bucket").await.unwrap();
    put(&o, "one-bucket", "first", b"x").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            let bucket = if i % 2 == 0 {
                "one-bucket"
            } else {
                "two-bucket"
            };
            o.put_object(
                bucket,
                &format!("k{i}"),
                body(b"data"),
                PutOptions::default(),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ObjectError::QuotaExceeded(m)) => assert!(m.contains("object store"), "{m}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 9, "exactly the room left");
    let listed = |b: &'static str| {
        let o = o.clone();
        async move {
            o.list_objects(ListQuery {
                bucket: b.into(),
                max_keys: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .objects
            .len()
        }
    };
    assert_eq!(listed("one-bucket").await + listed("two-bucket").await, 10);
    // The counts survive a restart (they are rows, not memory).
    drop(o);
    let o = env.open_with_quota(Quota {
        max_bytes: Some(1 << 20),
        max_objects: Some(10),
    });
    assert!(matches!(
        o.put_object("two-bucket", "more", body(b"x"), PutOptions::default())
            .await,
        Err(ObjectError::QuotaExceeded(_))
    ));
    o.delete_object("one-bucket", "first", &me()).await.unwrap();
    o.put_object("two-bucket", "more", body(b"x"), PutOptions::default())
        .await
        .unwrap();
}

on_both_backends!(
    put_get_head_delete_round_trip_with_attributes,
    ranges_and_digest_and_length_checks,
    conditional_writes,
    copy_shares_the_blob_and_survives_the_source,
    listing_paginates_and_folds_common_prefixes,
    multipart_upload_etag_parts_and_abort,
    abandoned_uploads_expire,
    tags_replace,
    reopening_sweeps_what_a_crash_left_and_keeps_acknowledged_objects,
    upload_part_copy_ranges_and_reading_parts_back,
    checksums_are_verified_before_the_write_and_stored,
    bucket_quotas_from_tags_count_overwrites_deletes_and_completions,
    the_store_quota_holds_under_concurrent_puts,
);
