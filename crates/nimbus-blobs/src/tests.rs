use super::*;
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

/// `len` bytes that do not repeat per chunk (xorshift), so a misplaced chunk is noticed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn count(pg: &Pg, sql: &str) -> i64 {
    pg.with(async |c| Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0)))
        .unwrap()
}

fn tables_count(pg: &Pg) -> (i64, i64, i64) {
    (
        count(pg, "SELECT count(*) FROM blobs_blobs"),
        count(pg, "SELECT count(*) FROM blobs_uploads"),
        count(pg, "SELECT count(*) FROM blobs_chunks"),
    )
}

/// Yields `data`, calling `hook` once after the first chunk has been handed out.
struct Gated<'a> {
    data: &'a [u8],
    pos: usize,
    hook: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl Read for Gated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= CHUNK_BYTES {
            if let Some(h) = self.hook.take() {
                h();
            }
        }
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Makes every blob and upload look last used `by` earlier (as if that time had passed).
fn age(pg: &Pg, by: Duration) {
    let ms = by.as_millis() as i64;
    pg.with(async |c| {
        c.execute(
            "UPDATE blobs_blobs SET touched_ms = touched_ms - $1",
            &[&ms],
        )
        .await?;
        c.execute(
            "UPDATE blobs_uploads SET touched_ms = touched_ms - $1",
            &[&ms],
        )
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_multi_chunk_blob_round_trips() {
    let db = TestDb::new("blobs_round_trip");
    let blobs = PgBlobs::open(&db.pg).unwrap();
    let data = bytes(3 * CHUNK_BYTES + 12_345, 7);
    let h = sha(&data);
    assert_eq!(
        blobs
            .put_reader(Namespace::Code, &h, &mut &data[..])
            .unwrap(),
        Put::Stored
    );
    assert_eq!(tables_count(&db.pg), (1, 0, 4));
    let max_chunk = count(
        &db.pg,
        "SELECT max(octet_length(bytes))::bigint FROM blobs_chunks",
    );
    assert_eq!(
        max_chunk, CHUNK_BYTES as i64,
        "never more than a chunk per row"
    );

    // Idempotent: the second put reads nothing and writes nothing.
    let mut never = Gated {
        data: &[],
        pos: 0,
        hook: None,
    };
    assert_eq!(
        blobs.put_reader(Namespace::Code, &h, &mut never).unwrap(),
        Put::Existed
    );
    assert_eq!(tables_count(&db.pg), (1, 0, 4));
    assert!(blobs.exists(Namespace::Code, &h).unwrap());
    assert!(!blobs.exists(Namespace::Objects, &h).unwrap());
    let listed = blobs.list(Namespace::Code).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].sha256.as_str(), listed[0].size),
        (h.as_str(), data.len() as u64)
    );

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let n = blobs
        .fetch(Namespace::Code, &h.to_uppercase(), dir.path(), &dest)
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "fetched bytes differ"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temp file left"
    );

    // From a file, another namespace; the empty blob has no chunks.
    let src = dir.path().join("small");
    std::fs::write(&src, b"hello").unwrap();
    assert_eq!(
        blobs
            .put_file(Namespace::Objects, &sha(b"hello"), &src)
            .unwrap(),
        Put::Stored
    );
    assert_eq!(
        blobs
            .put_reader(Namespace::Objects, &sha(b""), &mut &b""[..])
            .unwrap(),
        Put::Stored
    );
    let empty = dir.path().join("empty");
    assert_eq!(
        blobs
            .fetch(Namespace::Objects, &sha(b""), dir.path(), &empty)
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read(&empty).unwrap(), b"");

    let missing = "0".repeat(64);
    let e = blobs
        .fetch(Namespace::Code, &missing, dir.path(), &dir.path().join("x"))
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(!dir.path().join("x").exists());
}

#[test]
fn two_nodes_uploading_one_hash_end_with_one_blob() {
    let db = TestDb::new("blobs_race");
    let a = PgBlobs::open(&db.pg).unwrap();
    let other = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let b = PgBlobs::open(&other).unwrap();
    let data = Arc::new(bytes(3 * CHUNK_BYTES, 11));
    let h = sha(&data);
    // Both are past their "is it stored?" check and mid-upload before either finishes.
    let barrier = Arc::new(Barrier::new(2));
    let puts: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let (data, h, barrier) = (data.clone(), h.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut r = Gated {
                    data: &data,
                    pos: 0,
                    hook: Some(Box::new(move || {
                        barrier.wait();
                    })),
                };
                store.put_reader(Namespace::Objects, &h, &mut r).unwrap()
            })
        })
        .collect();
    let mut outcomes: Vec<Put> = puts.into_iter().map(|t| t.join().unwrap()).collect();
    outcomes.sort_by_key(|p| *p == Put::Existed);
    assert_eq!(outcomes, [Put::Stored, Put::Existed]);
    // One blob, the winner's chunks only, no upload left behind.
    assert_eq!(tables_count(&db.pg), (1, 0, 3));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b");
    b.fetch(Namespace::Objects, &h, dir.path(), &dest).unwrap();
    assert!(std::fs::read(&dest).unwrap() == *data);
}

#[test]
fn a_reader_never_sees_an_incomplete_blob() {
    let db = TestDb::new("blobs_partial");
    let writer = PgBlobs::open(&db.pg).unwrap();
    let other = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let reader = PgBlobs::open(&other).unwrap();
    let data = Arc::new(bytes(2 * CHUNK_BYTES + 1, 3));
    let h = sha(&data);
    let (started_tx, started) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let upload = {
        let (data, h) = (data.clone(), h.clone());
        std::thread::spawn(move || {
            let mut r = Gated {
                data: &data,
                pos: 0,
                hook: Some(Box::new(move || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })),
            };
            writer.put_reader(Namespace::Code, &h, &mut r).unwrap()
        })
    };
    started.recv().unwrap();
    // The first chunk is in the database; the blob is not there for anyone.
    assert_eq!(tables_count(&db.pg), (0, 1, 1));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b");
    assert!(!reader.exists(Namespace::Code, &h).unwrap());
    assert!(!reader.touch(Namespace::Code, &h).unwrap());
    assert!(reader.list(Namespace::Code).unwrap().is_empty());
    assert!(reader
        .fetch(Namespace::Code, &h, dir.path(), &dest)
        .unwrap_err()
        .is_not_found());
    assert!(!dest.exists());
    // A collector does not take an upload in progress.
    let swept = reader
        .delete_unreferenced(Namespace::Code, Duration::from_secs(60), &|_| false)
        .unwrap();
    assert_eq!(swept, Swept::default());

    go.send(()).unwrap();
    assert_eq!(upload.join().unwrap(), Put::Stored);
    reader
        .fetch(Namespace::Code, &h, dir.path(), &dest)
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == *data);
}

#[test]
fn bytes_that_do_not_match_their_hash_are_refused() {
    let db = TestDb::new("blobs_mismatch");
    let blobs = PgBlobs::open(&db.pg).unwrap();
    let data = bytes(CHUNK_BYTES + 10, 5);
    let wrong = sha(b"something else");
    let e = blobs
        .put_reader(Namespace::Objects, &wrong, &mut &data[..])
        .unwrap_err();
    assert!(matches!(e, BlobsError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&sha(&data)), "{e}");
    assert_eq!(tables_count(&db.pg), (0, 0, 0), "nothing kept");
    assert!(!blobs.exists(Namespace::Objects, &wrong).unwrap());

    for bad in ["../etc/passwd", "", &"g".repeat(64)] {
        assert!(matches!(
            blobs.put_reader(Namespace::Code, bad, &mut &b"x"[..]),
            Err(BlobsError::InvalidHash(_))
        ));
    }

    // A damaged shared copy is refused by the fetch, and nothing reaches the destination.
    let h = sha(&data);
    blobs
        .put_reader(Namespace::Objects, &h, &mut &data[..])
        .unwrap();
    db.pg
        .with(async |c| {
            c.execute(
                "UPDATE blobs_chunks SET bytes = 'damaged'::bytea WHERE seq = 1",
                &[],
            )
            .await?;
            Ok(())
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b");
    let e = blobs
        .fetch(Namespace::Objects, &h, dir.path(), &dest)
        .unwrap_err();
    assert!(matches!(e, BlobsError::HashMismatch { .. }), "{e}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file left"
    );
}

#[test]
fn collection_keeps_young_and_referenced_blobs() {
    let db = TestDb::new("blobs_gc");
    let blobs = PgBlobs::open(&db.pg).unwrap();
    let put = |ns, b: &[u8]| {
        blobs.put_reader(ns, &sha(b), &mut &b[..]).unwrap();
        sha(b)
    };
    let old = put(Namespace::Objects, b"old and unreferenced");
    let referenced = put(Namespace::Objects, b"old and referenced");
    let touched = put(Namespace::Objects, b"old, touched again");
    let reput = put(Namespace::Objects, b"old, put again");
    // The same bytes in the other namespace are another blob, its collector's alone.
    let code = put(Namespace::Code, b"old and unreferenced");
    assert_eq!(old, code);
    let grace = DEFAULT_GRACE;
    age(&db.pg, 2 * grace);
    let young = put(Namespace::Objects, b"young and unreferenced");
    assert!(blobs.touch(Namespace::Objects, &touched).unwrap());
    assert_eq!(put(Namespace::Objects, b"old, put again"), reput);
    // A node that died mid-upload long ago, and one uploading right now.
    db.pg
        .with(async |c| {
            c.batch_execute(
                "INSERT INTO blobs_uploads (namespace, sha256, started_ms, touched_ms)
                     VALUES ('objects', 'dead', 0, 0), ('objects', 'alive', 0,
                     (extract(epoch from clock_timestamp()) * 1000)::bigint),
                     ('code', 'dead', 0, 0);
                 INSERT INTO blobs_chunks (upload, seq, bytes)
                     SELECT upload, 0, 'x'::bytea FROM blobs_uploads;",
            )
            .await?;
            Ok(())
        })
        .unwrap();

    assert!(!blobs
        .delete_if_idle(Namespace::Objects, &young, grace)
        .unwrap());
    let keep = referenced.clone();
    let swept = blobs
        .delete_unreferenced(Namespace::Objects, grace, &move |s| s == keep)
        .unwrap();
    assert_eq!(
        swept,
        Swept {
            deleted: 1,
            deleted_bytes: b"old and unreferenced".len() as u64,
            abandoned_uploads: 1,
        }
    );
    let mut left: Vec<String> = blobs
        .list(Namespace::Objects)
        .unwrap()
        .into_iter()
        .map(|b| b.sha256)
        .collect();
    left.sort();
    let mut want = vec![referenced, touched, reput, young];
    want.sort();
    assert_eq!(left, want);
    assert!(blobs.exists(Namespace::Code, &code).unwrap());
    // The deleted blob's chunk and the dead upload's went; the rest stayed.
    assert_eq!(count(&db.pg, "SELECT count(*) FROM blobs_uploads"), 2);
    assert_eq!(count(&db.pg, "SELECT count(*) FROM blobs_chunks"), 5 + 2);

    // Past the grace, an unreferenced blob goes by itself too.
    assert!(blobs.delete_if_idle(Namespace::Code, &code, grace).unwrap());
    assert!(!blobs.exists(Namespace::Code, &code).unwrap());
}
