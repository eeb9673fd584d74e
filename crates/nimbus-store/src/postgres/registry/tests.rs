//! Cross-node behaviour of [`PgStore`]: several stores, each with its own pool (as separate
//! nodes have), on one database. The single-store semantics are tested on both backends by
//! the backend-parameterised tests of `sqlite.rs`, `sqlite/layers.rs` and `sqlite/logs.rs`.

use super::PgStore;
use crate::{CodeInfo, LayerStore, LogEntry, LogQuery, LogStream, NewLayerVersion, Store};
use nimbus_core::{FunctionConfig, FunctionName, Runtime};
use nimbus_pg::testing::TestDb;
use nimbus_pg::{Pg, PgConfig};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn name(s: &str) -> FunctionName {
    FunctionName::parse(s).unwrap()
}

fn cfg() -> FunctionConfig {
    FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "i.h")
}

/// `n` stores on `db`, each with a pool of its own.
fn nodes(db: &TestDb, n: usize) -> Vec<Arc<PgStore>> {
    (0..n)
        .map(|_| {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgStore::open(&pg).unwrap())
        })
        .collect()
}

/// Runs `per_thread(node, thread)` on `threads` threads per node, collecting the results.
fn on_threads<T: Send + 'static>(
    nodes: &[Arc<PgStore>],
    threads: usize,
    per_thread: impl Fn(&PgStore, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let per_thread = Arc::new(per_thread);
    let handles: Vec<_> = nodes
        .iter()
        .flat_map(|node| (0..threads).map(move |t| (node.clone(), t)))
        .enumerate()
        .map(|(i, (node, _))| {
            let f = per_thread.clone();
            std::thread::spawn(move || f(&node, i))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn concurrent_publishes_on_two_nodes_get_unique_dense_numbers() {
    let db = TestDb::new("reg_publish");
    let nodes = nodes(&db, 2);
    let f = name("busy");
    nodes[0].deploy(&f, &cfg(), &CodeInfo::of(b"seed")).unwrap();
    const EACH: usize = 8;
    // Half the threads deploy new code (publishing), half update $LATEST and publish it.
    let got: Vec<Vec<u64>> = on_threads(&nodes, 3, move |s, t| {
        let f = name("busy");
        (0..EACH)
            .map(|i| {
                let code = CodeInfo::of(format!("code {t} {i}").as_bytes());
                let v = if t % 2 == 0 {
                    s.deploy(&f, &cfg(), &code).unwrap().version
                } else {
                    // Publishing $LATEST may find someone else's identical content already
                    // published: retry until this thread's own code goes out.
                    s.update_latest(&f, None, Some(&code), None).unwrap();
                    let v = s.publish(&f, None, Some(&code.sha256), None);
                    match v {
                        Ok(v) => v.version,
                        Err(e) if e.is_precondition_failed() => {
                            // Another thread changed $LATEST in between: deploy instead.
                            s.deploy(&f, &cfg(), &code).unwrap().version
                        }
                        Err(e) => panic!("{e}"),
                    }
                };
                v.parse().unwrap()
            })
            .collect()
    });
    let all: Vec<u64> = got.into_iter().flatten().collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "a version number was handed out twice: {all:?}"
    );
    let versions: Vec<u64> = nodes[1]
        .versions(&f)
        .unwrap()
        .iter()
        .skip(1)
        .map(|v| v.version.parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=(1 + 6 * EACH) as u64).collect();
    assert_eq!(versions, expected, "numbers are dense");
    // Every stored version carries the code it was published with, once.
    let shas: HashSet<String> = nodes[0]
        .versions(&f)
        .unwrap()
        .into_iter()
        .skip(1)
        .map(|v| v.code_sha256)
        .collect();
    assert_eq!(shas.len(), versions.len());
}

#[test]
fn concurrent_creates_of_one_function_let_exactly_one_win() {
    let db = TestDb::new("reg_create");
    let nodes = nodes(&db, 2);
    let results = on_threads(&nodes, 4, |s, t| {
        s.create(
            &name("race"),
            &cfg(),
            &CodeInfo::of(format!("{t}").as_bytes()),
            &BTreeMap::new(),
            true,
        )
        .map(|(latest, v)| (latest.code_sha256, v.unwrap().version))
    });
    let wins: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(wins.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.is_conflict()));
    let (sha, v) = wins[0];
    assert_eq!(v, "1");
    let latest = nodes[1].get(&name("race"), None).unwrap();
    assert_eq!(&latest.code_sha256, sha);
    assert_eq!(nodes[1].versions(&name("race")).unwrap().len(), 2);
}

#[test]
fn concurrent_tags_and_layer_publishes_lose_nothing() {
    let db = TestDb::new("reg_tags");
    let nodes = nodes(&db, 2);
    let f = name("tagged");
    nodes[0].deploy(&f, &cfg(), &CodeInfo::of(b"x")).unwrap();
    let layer_versions = on_threads(&nodes, 3, |s, t| {
        let f = name("tagged");
        let mut out = Vec::new();
        for i in 0..5 {
            let tags = BTreeMap::from([(format!("k{t}-{i}"), "v".to_string())]);
            s.tag(&f, &tags).unwrap();
            let new = NewLayerVersion {
                description: String::new(),
                license_info: String::new(),
                compatible_runtimes: vec![],
                compatible_architectures: vec![],
                code: CodeInfo::of(format!("layer {t} {i}").as_bytes()),
                unzipped_size: 1,
            };
            out.push(s.publish_layer_version("shared", &new).unwrap().version);
        }
        out
    });
    assert_eq!(nodes[1].meta(&f).unwrap().tags.len(), 6 * 5);
    let mut all: Vec<u64> = layer_versions.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=30).collect::<Vec<u64>>());
}

/// Two nodes append while a reader on a third follows the lines with its cursor: it sees
/// every line exactly once, in `seq` order, although lines commit on two nodes at once.
#[test]
fn a_log_reader_following_its_cursor_misses_no_line_of_concurrent_writers() {
    let db = TestDb::new("reg_logs");
    let mut all = nodes(&db, 3);
    let reader = all.pop().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let follow = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = reader
                    .query_logs(
                        None,
                        &LogQuery {
                            after,
                            limit: 50,
                            ..LogQuery::default()
                        },
                    )
                    .unwrap();
                assert!(page.entries.windows(2).all(|w| w[0].seq < w[1].seq));
                seen.extend(page.entries.into_iter().map(|e| (e.seq, e.line)));
                after = page.next;
                if finished && seen.len() >= 4 * 30 * 5 {
                    break;
                }
                if finished {
                    // One more pass after the writers stopped picks up the rest.
                    let rest = reader
                        .query_logs(
                            None,
                            &LogQuery {
                                after,
                                limit: 10_000,
                                ..LogQuery::default()
                            },
                        )
                        .unwrap();
                    seen.extend(rest.entries.into_iter().map(|e| (e.seq, e.line)));
                    break;
                }
            }
            seen
        })
    };
    on_threads(&all, 2, |s, t| {
        for batch in 0..30 {
            let entries: Vec<LogEntry> = (0..5)
                .map(|i| {
                    LogEntry::now(
                        &name(&format!("f{}", t % 3)),
                        None,
                        LogStream::Stdout,
                        format!("{t}/{batch}/{i}"),
                    )
                })
                .collect();
            s.append_logs(&entries).unwrap();
        }
    });
    done.store(true, Ordering::SeqCst);
    let seen = follow.join().unwrap();
    let lines: HashSet<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines.len(), seen.len(), "a line was read twice");
    assert_eq!(seen.len(), 4 * 30 * 5, "the reader missed lines");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    // Within a batch, lines keep their order.
    let f0 = all[0].logs(&name("f0"), 0, usize::MAX).unwrap();
    assert!(f0.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn concurrent_first_deploys_create_the_function_once() {
    let db = TestDb::new("reg_deploy");
    let nodes = nodes(&db, 2);
    let results = on_threads(&nodes, 3, |s, t| {
        let d = s
            .deploy(
                &name("fresh"),
                &cfg(),
                &CodeInfo::of(format!("{t}").as_bytes()),
            )
            .unwrap();
        (d.created, d.version.parse::<u64>().unwrap())
    });
    assert_eq!(results.iter().filter(|(created, _)| *created).count(), 1);
    let mut versions: Vec<u64> = results.iter().map(|(_, v)| *v).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=6).collect::<Vec<u64>>());
}

#[test]
fn log_usage_reports_the_table_and_a_quiet_store_needs_no_vacuum() {
    let db = TestDb::new("reg_usage");
    let s = &nodes(&db, 1)[0];
    let f = name("f");
    s.append_logs(&[LogEntry::now(&f, Some("r"), LogStream::Stdout, "hello")])
        .unwrap();
    let u = s.log_usage();
    assert_eq!(u.lines, 1);
    assert!(u.stored_bytes > 0 && u.file_bytes > 0, "{u:?}");
    assert_eq!(u.limit_bytes, crate::LogLimits::default().total_bytes);
    assert_eq!(s.maintain_logs().unwrap(), 0);
    // A second node sees the same usage (it is in the database, not in a process).
    let other = &nodes(&db, 1)[0];
    assert_eq!(other.log_usage().lines, 1);
}

/// A flood of lines through a store bounded at 1 MiB: pruning deletes as fast as lines
/// come, and the maintenance the server runs every 2 s vacuums the pruned rows so their
/// space is reused. Autovacuum wakes once a minute, so without it the table holds every
/// pruned row until then (this flood takes a few seconds): over 10 MiB here.
#[test]
fn maintenance_vacuums_pruned_lines_so_a_flood_stays_within_the_bound() {
    let db = TestDb::new("reg_vacuum");
    let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
    let limits = crate::LogLimits {
        total_bytes: 1 << 20,
        ..crate::LogLimits::default()
    };
    let s = PgStore::open(&pg).unwrap().with_log_limits(limits).unwrap();
    // Autovacuum must not do the work this test is about.
    pg.with(async |c| {
        c.batch_execute("ALTER TABLE logs_lines SET (autovacuum_enabled = false)")
            .await?;
        Ok(())
    })
    .unwrap();
    let f = name("flood");
    let line = "x".repeat(1000);
    let mut vacuumed = false;
    let mut peak = 0;
    for batch in 0..120 {
        let entries: Vec<LogEntry> = (0..100)
            .map(|_| LogEntry::now(&f, Some("r"), LogStream::Stdout, &line))
            .collect();
        s.append_logs(&entries).unwrap();
        if batch % 4 == 3 {
            let debt = s.vacuum_debt.load(Ordering::Relaxed);
            s.maintain_logs().unwrap();
            vacuumed |= debt >= (1 << 20) / 8 && s.vacuum_debt.load(Ordering::Relaxed) < debt;
        }
        peak = peak.max(s.log_usage().file_bytes);
    }
    let u = s.log_usage();
    eprintln!("12 MB of lines through a 1 MiB store: table peak {peak} bytes, {u:?}");
    assert!(vacuumed, "the maintenance never vacuumed");
    assert!(u.stored_bytes <= 1 << 20, "{u:?}");
    // 12 MB of lines went through; the table's pages, its index and the rows not yet
    // vacuumed (at most 4 batches: 400 kB) stay within a few times the bound.
    assert!(peak <= 4 << 20, "the table grew to {peak} bytes: {u:?}");
}
