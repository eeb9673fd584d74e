//! The gauges `/metrics` reads at each scrape from what the server owns: instances by
//! state, stem cells (and the count of their failed refills, which the pool keeps), the
//! account's unreserved concurrency, provisioned utilisation, the async backlog per
//! function, queue depths and ages, and the databases' sizes on disk.
//! Counters and histograms are recorded where things happen; these are states, read when
//! asked (a deleted function or queue leaves no series behind).

use nimbus_events::engine::AsyncEngine;
use nimbus_gateway::Pools;
use nimbus_metrics::{GaugeFamily, MetricUnit, Metrics};
use nimbus_store::QueueStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tracing::debug;

/// Registers every scrape-time gauge of the server with `metrics`.
pub(crate) fn register(
    metrics: &Arc<Metrics>,
    pools: &Arc<Pools>,
    events: &Arc<AsyncEngine>,
    queues: Arc<dyn QueueStore>,
    data_dir: PathBuf,
) {
    let p: Weak<Pools> = Arc::downgrade(pools);
    let m = Arc::downgrade(metrics);
    metrics.add_scrape_source(move || match (p.upgrade(), m.upgrade()) {
        (Some(p), Some(m)) => pool_gauges(&p, &m),
        _ => Vec::new(),
    });
    let e = Arc::downgrade(events);
    let m = Arc::downgrade(metrics);
    metrics.add_scrape_source(move || match (e.upgrade(), m.upgrade()) {
        (Some(e), Some(m)) => backlog_gauges(&e, &m),
        _ => Vec::new(),
    });
    metrics.add_scrape_source(move || queue_gauges(queues.as_ref(), crate::unix_ms()));
    metrics.add_scrape_source(move || vec![database_sizes(&data_dir)]);
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn pool_gauges(pools: &Pools, metrics: &Metrics) -> Vec<GaugeFamily> {
    let s = pools.instance_states();
    let mut instances = GaugeFamily::new(
        "nimbus_instances",
        "Function instances by state (initializing: cold starts in progress; idle: warm or provisioned, waiting for work)",
    );
    for (state, n) in [
        ("initializing", s.initializing),
        ("idle", s.idle),
        ("busy", s.busy),
    ] {
        instances.add(labels(&[("state", state)]), n as f64);
    }

    let stem = pools.executor().process().stem_stats();
    let mut cells = GaugeFamily::new(
        "nimbus_stem_cells",
        "Prewarmed runtimes (stem cells) by runtime and state (idle: ready to become an instance)",
    );
    let mut refill_failures = GaugeFamily::new(
        "nimbus_stem_cell_refill_failures",
        "Stem cells that could not be started, by runtime",
    )
    .counter();
    for p in &stem.pools {
        refill_failures.add(labels(&[("runtime", p.runtime)]), p.refill_failures as f64);
        cells.add(
            labels(&[("runtime", p.runtime), ("state", "idle")]),
            p.idle as f64,
        );
        cells.add(
            labels(&[("runtime", p.runtime), ("state", "starting")]),
            f64::from(p.starting),
        );
    }

    let a = pools.account_stats();
    let mut unreserved = GaugeFamily::new(
        "nimbus_unreserved_concurrency_remaining",
        "Invocations the account's unreserved pool can still start now (account limit - reservations - unreserved running)",
    );
    unreserved.add(
        Vec::new(),
        f64::from(
            a.limit
                .saturating_sub(a.reserved)
                .saturating_sub(a.unreserved_running),
        ),
    );

    let mut utilisation = GaugeFamily::new(
        "nimbus_provisioned_utilization",
        "Busy share of a version's initialised provisioned instances (0 to 1)",
    );
    let mut allocated = GaugeFamily::new(
        "nimbus_provisioned_instances",
        "Initialised provisioned instances of a version",
    );
    for (function, version) in pools.provisioned_versions() {
        let Some(st) = pools.provisioned_status(&function, &version) else {
            continue;
        };
        let l = vec![
            ("function", metrics.function_label(&function)),
            ("version", version.clone()),
        ];
        let busy = st.allocated.saturating_sub(st.available);
        let share = if st.allocated == 0 {
            0.0
        } else {
            f64::from(busy) / f64::from(st.allocated)
        };
        utilisation.add(l.clone(), share);
        allocated.add(l, f64::from(st.allocated));
    }
    vec![
        instances,
        cells,
        refill_failures,
        unreserved,
        utilisation,
        allocated,
    ]
}

fn backlog_gauges(events: &AsyncEngine, metrics: &Metrics) -> Vec<GaugeFamily> {
    let mut backlog = GaugeFamily::new(
        "nimbus_async_backlog",
        "Unfinished asynchronous events (pending or running) per function",
    );
    match events.queue().backlog() {
        Ok(u) => {
            for (function, n) in u.owners {
                backlog.add(
                    vec![("function", metrics.function_label(&function))],
                    n as f64,
                );
            }
        }
        Err(e) => debug!(error = %e, "cannot read the async backlog for /metrics"),
    }
    vec![backlog]
}

fn queue_gauges(queues: &dyn QueueStore, now_ms: i64) -> Vec<GaugeFamily> {
    let mut messages = GaugeFamily::new(
        "nimbus_queue_messages",
        "Messages of a built-in queue by state (visible, in_flight: received and not deleted, delayed)",
    );
    let mut oldest = GaugeFamily::new(
        "nimbus_queue_oldest_message_age",
        "Age of a built-in queue's oldest message (0 when empty)",
    )
    .with_unit(MetricUnit::Seconds);
    match queues.all_stats(now_ms) {
        Ok(all) => {
            for d in all {
                let q = d.queue.as_str();
                for (state, n) in [
                    ("visible", d.stats.visible),
                    ("in_flight", d.stats.in_flight),
                    ("delayed", d.stats.delayed),
                ] {
                    messages.add(labels(&[("queue", q), ("state", state)]), n as f64);
                }
                let age = d.oldest_sent_ms.map_or(0, |t| (now_ms - t).max(0));
                oldest.add(labels(&[("queue", q)]), age as f64 / 1000.0);
            }
        }
        Err(e) => debug!(error = %e, "cannot read the queues for /metrics"),
    }
    vec![messages, oldest]
}

/// Each SQLite database of the data dir with its write-ahead log, by name (`registry`,
/// `events`, …), and with `--database`, each component's tables in PostgreSQL (by the same
/// names: `nimbus_metrics::database_sizes`).
fn database_sizes(dir: &Path) -> GaugeFamily {
    let mut sizes = GaugeFamily::new(
        "nimbus_database_size",
        "Size on disk of each store's database: an embedded database with its write-ahead log, or a PostgreSQL component's tables with their indexes",
    )
    .with_unit(MetricUnit::Bytes);
    let mut found: Vec<(String, u64)> = nimbus_metrics::database_sizes();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(db) = name.strip_suffix(".db") else {
            continue;
        };
        let file = |suffix: &str| {
            std::fs::metadata(dir.join(format!("{name}{suffix}")))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        found.push((db.to_string(), file("") + file("-wal")));
    }
    found.sort();
    for (db, bytes) in found {
        sizes.add(vec![("database", db)], bytes as f64);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_sizes_count_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.db"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.path().join("events.db-wal"), vec![0u8; 20]).unwrap();
        std::fs::write(dir.path().join("bus.db"), vec![0u8; 7]).unwrap();
        std::fs::write(dir.path().join("credentials"), b"x").unwrap();
        let f = database_sizes(dir.path());
        assert_eq!(
            f.samples,
            vec![
                (vec![("database", "bus".to_string())], 7.0),
                (vec![("database", "events".to_string())], 120.0),
            ]
        );
    }
}
