//! Object bytes shared by the nodes of a cluster: two blob stores (two nodes' data
//! directories), each on a pool of its own, over one PostgreSQL schema holding the
//! metadata and the shared blobs.

use super::*;
use crate::{Objects, ObjectsConfig, PgMetaStore, PutOptions, ReadConditions, WriteCondition};
use nimbus_blobs::PgBlobs;
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use std::convert::Infallible;

/// Makes every shared blob look last used `by` earlier (as if that time had passed).
fn age(db: &TestDb, by: Duration) {
    let ms = by.as_millis() as i64;
    db.pg
        .with(async |c| {
            c.execute(
                "UPDATE blobs_blobs SET touched_ms = touched_ms - $1",
                &[&ms],
            )
            .await?;
            Ok(())
        })
        .unwrap();
}

/// One node: its own data directory and pool.
struct Node {
    dir: tempfile::TempDir,
    pg: Pg,
}

impl Node {
    fn new(db: &TestDb) -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
            pg: Pg::connect(&PgConfig::new(&db.url)).unwrap(),
        }
    }

    fn blobs(&self) -> BlobStore {
        BlobStore::open(&self.dir.path().join("objects"))
            .unwrap()
            .with_shared(Arc::new(PgBlobs::open(&self.pg).unwrap()))
    }

    fn objects(&self) -> Objects {
        let meta = PgMetaStore::open(&self.pg).unwrap();
        let cfg = ObjectsConfig {
            min_part_bytes: 8,
            ..Default::default()
        };
        Objects::new(Arc::new(meta), self.blobs(), cfg).unwrap()
    }

    fn has_local(&self, sha: &str) -> bool {
        self.dir
            .path()
            .join("objects")
            .join(&sha[..2])
            .join(sha)
            .is_file()
    }
}

/// `len` bytes that do not repeat (xorshift).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn body(b: &[u8]) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> {
    let chunks: Vec<_> = b
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

fn shared_count(db: &TestDb) -> i64 {
    db.pg
        .with(async |c| {
            Ok(c.query_one(
                "SELECT count(*) FROM blobs_blobs WHERE namespace = 'objects'",
                &[],
            )
            .await?
            .get::<_, i64>(0))
        })
        .unwrap()
}

async fn read(o: &Objects, bucket: &str, key: &str) -> Vec<u8> {
    let r = o
        .get_object(bucket, key, None, ReadConditions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut s = r.body;
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_placed_on_one_node_open_on_another() {
    let db = TestDb::new("objects_blobs_two_nodes");
    let (a, b) = (Node::new(&db), Node::new(&db));
    let (on_a, on_b) = (a.blobs(), b.blobs());
    let bytes = data(2 * nimbus_blobs::CHUNK_BYTES + 999, 1);
    let staged = on_a.stage(body(&bytes), u64::MAX).await.unwrap();
    let sha = staged.digests.sha256.clone();
    let pin = on_a.place(staged).unwrap();
    assert!(!b.has_local(&sha));
    let bytes_on_b = tokio::task::spawn_blocking(move || {
        let mut f = on_b.open_file(&sha).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).unwrap();
        (out, on_b.open_file(&"0".repeat(64)).unwrap_err().kind())
    })
    .await
    .unwrap();
    assert!(bytes_on_b.0 == bytes, "node B read other bytes");
    assert_eq!(bytes_on_b.1, std::io::ErrorKind::NotFound);
    assert!(
        b.has_local(&hex::encode(Sha256::digest(&bytes))),
        "cached on B"
    );
    drop(pin);
    // Nothing left in either node's tmp/.
    for n in [&a, &b] {
        let tmp = n.dir.path().join("objects/tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_through_one_node_are_read_through_another() {
    let db = TestDb::new("objects_two_nodes");
    let (a, b) = (Node::new(&db), Node::new(&db));
    let (oa, ob) = (a.objects(), b.objects());
    oa.create_bucket("shared").await.unwrap();
    let big = data(3 * nimbus_blobs::CHUNK_BYTES + 5, 2);
    let put = oa
        .put_object("shared", "big", body(&big), PutOptions::default())
        .await
        .unwrap();
    assert!(read(&ob, "shared", "big").await == big);
    assert!(b.has_local(&put.sha256));

    // A copy made on B of bytes B never had (a fresh node C), read on A.
    let c = Node::new(&db);
    let oc = c.objects();
    oa.put_object("shared", "small", body(b"hello"), PutOptions::default())
        .await
        .unwrap();
    oc.copy_object(
        ("shared", "small"),
        ("shared", "copy"),
        ReadConditions::default(),
        None,
        WriteCondition::None,
        &crate::Requester::default(),
    )
    .await
    .unwrap();
    assert_eq!(read(&oa, "shared", "copy").await, b"hello");

    // Multipart: parts through A and B, completed through C, read through B.
    let up = oa
        .create_upload("shared", "mpu", Default::default())
        .await
        .unwrap();
    let p1 = oa
        .upload_part(
            "shared",
            "mpu",
            &up.upload_id,
            1,
            body(b"first part "),
            None,
            None,
        )
        .await
        .unwrap();
    let p2 = ob
        .upload_part(
            "shared",
            "mpu",
            &up.upload_id,
            2,
            body(b"second part"),
            None,
            None,
        )
        .await
        .unwrap();
    oc.complete_upload(
        "shared",
        "mpu",
        &up.upload_id,
        vec![(1, p1.etag), (2, p2.etag)],
        WriteCondition::None,
        &crate::Requester::default(),
    )
    .await
    .unwrap();
    assert_eq!(read(&ob, "shared", "mpu").await, b"first part second part");
    // big, small (and its copy), two parts, the completed object.
    assert_eq!(shared_count(&db), 5);

    // Deleted through B: the shared bytes stay for the grace period, then a sweep removes
    // them (and the released parts); what rows still name stays.
    ob.delete_object("shared", "big", &crate::Requester::default())
        .await
        .unwrap();
    assert!(!b.has_local(&put.sha256));
    assert_eq!(shared_count(&db), 5);
    age(&db, 2 * nimbus_blobs::DEFAULT_GRACE);
    let swept = oa.sweep_shared_blobs().await.unwrap();
    assert_eq!(swept.deleted, 3, "{swept:?}");
    assert_eq!(shared_count(&db), 2);
    for (key, want) in [
        ("copy", &b"hello"[..]),
        ("small", b"hello"),
        ("mpu", b"first part second part"),
    ] {
        let d = Node::new(&db);
        assert_eq!(read(&d.objects(), "shared", key).await, want, "{key}");
    }
    // The deleted object is gone through every node.
    assert!(matches!(
        oa.get_object("shared", "big", None, ReadConditions::default())
            .await,
        Err(crate::ObjectError::NoSuchKey(_))
    ));
}
