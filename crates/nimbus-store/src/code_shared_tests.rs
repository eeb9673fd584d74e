//! Code packages shared by the nodes of a cluster: two [`CodeStore`]s with roots of their
//! own (two nodes' data directories) and one shared store in PostgreSQL, each node on a
//! pool of its own.

use super::*;
use nimbus_blobs::PgBlobs;
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use zip::write::SimpleFileOptions;

fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, mode, content) in entries {
        w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
            .unwrap();
        w.write_all(content).unwrap();
    }
    w.finish().unwrap().into_inner()
}

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

const HOUR: Duration = Duration::from_secs(3600);

/// A node: its own data directory and pool, the cluster's database.
fn node(db: &TestDb) -> (tempfile::TempDir, CodeStore) {
    let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let shared: Arc<dyn SharedBlobs> = Arc::new(PgBlobs::open(&pg).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let store = CodeStore::open(&tmp.path().join("code"))
        .unwrap()
        .with_shared(shared);
    (tmp, store)
}

/// Every file under `dir` with its mode and bytes, by relative path.
fn files(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, mode, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn shared_blobs(db: &TestDb) -> i64 {
    db.pg
        .with(async |c| {
            Ok(c.query_one(
                "SELECT count(*) FROM blobs_blobs WHERE namespace = 'code'",
                &[],
            )
            .await?
            .get::<_, i64>(0))
        })
        .unwrap()
}

#[test]
fn a_package_put_on_one_node_is_unpacked_on_another() {
    let db = TestDb::new("code_two_nodes");
    let (_ta, a) = node(&db);
    let (_tb, b) = node(&db);
    let zip = zip_of(&[
        ("index.js", 0o644, b"exports.handler = async () => 'hi'"),
        ("bootstrap", 0o755, b"#!/bin/sh\n"),
        ("lib/data.bin", 0o600, &[7u8; 5000]),
    ]);
    let pinned = a.put(&zip).unwrap();
    let sha = pinned.info.sha256.clone();
    drop(pinned);
    assert!(
        !b.blob_path(&sha).exists(),
        "node B starts without the package"
    );

    // Anything that needs the package fetches it on B.
    let on_b = b.dir(&sha).unwrap();
    assert_eq!(files(&on_b), files(&a.dir(&sha).unwrap()));
    assert_eq!(files(&on_b).len(), 3);
    assert!(b.blob_path(&sha).is_file());
    assert_eq!(b.zip_bytes(&sha).unwrap(), zip);
    assert_eq!(
        b.unzipped_size(&sha).unwrap(),
        a.unzipped_size(&sha).unwrap()
    );

    // A layer put on A merges into a /opt tree on B; `contains` fetches too.
    let layer = a
        .put_zip(&zip_of(&[("python/mod.py", 0o644, b"X = 1")]))
        .unwrap()
        .sha256;
    assert!(b.contains(&layer));
    let opt = b.opt_dir(std::slice::from_ref(&layer)).unwrap();
    assert_eq!(fs::read(opt.join("python/mod.py")).unwrap(), b"X = 1");

    // A package no node ever had is not found, everywhere.
    let missing = "ab".repeat(32);
    assert!(b.dir(&missing).unwrap_err().is_not_found());
    assert!(b.zip_bytes(&missing).unwrap_err().is_not_found());
    assert!(!b.contains(&missing));

    // B's local collection is a cache eviction: the package comes back from the shared store.
    let none = || Ok(LiveCode::default());
    let report = b.collect(none).unwrap();
    assert_eq!((report.removed_blobs, report.removed_shared), (2, 0));
    assert!(!b.blob_path(&sha).exists());
    assert_eq!(files(&b.dir(&sha).unwrap()), files(&a.dir(&sha).unwrap()));

    // An invalid package never reaches the shared store.
    assert!(a.put_zip(b"not a zip").is_err());
    assert_eq!(shared_blobs(&db), 2);
}

#[test]
fn the_shared_store_keeps_referenced_pinned_and_young_packages() {
    let db = TestDb::new("code_shared_gc");
    let (_ta, a) = node(&db);
    let (_tb, b) = node(&db);
    let zip = |n: u8| zip_of(&[("f", 0o644, &[n; 100])]);
    let referenced = a.put_zip(&zip(1)).unwrap().sha256;
    let unreferenced = a.put_zip(&zip(2)).unwrap().sha256;
    let running_on_b = a.put_zip(&zip(3)).unwrap().sha256;
    let pinned_on_b = a.put_zip(&zip(4)).unwrap().sha256;
    let _pin = b.pin(&pinned_on_b).unwrap();
    age(&db, 2 * HOUR);
    // Deployed again on A just now (the registry row not committed yet): young again.
    let redeployed = a.put_zip(&zip(2)).unwrap().sha256;
    assert_eq!(redeployed, unreferenced);
    let fresh = a.put_zip(&zip(5)).unwrap().sha256;

    let live = || {
        Ok(LiveCode {
            referenced: [referenced.clone()].into(),
            running: [running_on_b.clone()].into(),
        })
    };
    let report = b.collect(live).unwrap();
    assert_eq!(report.removed_shared, 0, "{report:?}");
    assert_eq!(shared_blobs(&db), 5);

    // Past the grace with no row naming them, the redeployed and fresh packages go, from
    // every node's point of view; B's running and pinned ones stay.
    age(&db, 2 * HOUR);
    let report = b.collect(live).unwrap();
    assert_eq!(report.removed_shared, 2, "{report:?}");
    assert_eq!(shared_blobs(&db), 3);
    let (_tc, c) = node(&db);
    for gone in [&unreferenced, &fresh] {
        assert!(c.dir(gone).unwrap_err().is_not_found(), "{gone}");
    }
    for kept in [&referenced, &running_on_b, &pinned_on_b] {
        c.dir(kept).unwrap();
    }
}
