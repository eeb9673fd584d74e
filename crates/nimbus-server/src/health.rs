//! The health checker: a background task that runs every check every
//! [`HealthConfig::interval`] and publishes the report the gateway serves at `/v1/health`
//! and `/v1/ready` (`nimbus_gateway::health`). Checks: free space of the data dir's file
//! system, a write+fsync probe there (where every database lives) with each database's
//! slowest commit of the last minute, the sandbox, the executor's memory, stem cells (and
//! their refills failing), the heartbeats of the dispatcher, scheduler and queue pollers,
//! and how full the durable backlogs are.

use nimbus_events::engine::AsyncEngine;
use nimbus_events::heartbeat::Heartbeat;
use nimbus_events::mapping::MappingRunner;
use nimbus_events::scheduler::Scheduler;
use nimbus_gateway::{HealthCheck, HealthMonitor, HealthReport, HealthStatus, Pools};
use nimbus_metrics::RecentWrites;
use nimbus_runtime::StemStats;
use nimbus_store::BacklogUsage;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Thresholds of the checks (`--min-free-disk-mb`, `--low-free-disk-mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Below this many free bytes the data dir's disk is `failing`.
    pub min_free_disk: u64,
    /// Below this many free bytes, or a tenth of the file system when that is less, the
    /// disk is `degraded`.
    pub low_free_disk: u64,
    /// How often the checks run.
    pub interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            min_free_disk: 100 << 20,
            low_free_disk: 1 << 30,
            interval: Duration::from_secs(2),
        }
    }
}

/// A write+fsync (the probe's, or a database's commit) slower than this makes `stores`
/// degraded.
const SLOW_FSYNC: Duration = Duration::from_secs(1);
/// A stem cell refill that failed this recently makes `stem_cells` degraded.
const RECENT_STEM_FAILURE: Duration = Duration::from_secs(60);
/// A backlog fuller than this (of its limit) is degraded.
const BACKLOG_NEAR_FULL: f64 = 0.9;
/// The databases in the data dir, which the probe stands for.
const DATABASES: &str = "registry, events, queues, bus, logs, secrets";

/// What the checker looks at.
pub(crate) struct Checker {
    pub cfg: HealthConfig,
    pub data_dir: PathBuf,
    pub isolation: Value,
    pub pools: Arc<Pools>,
    pub events: Arc<AsyncEngine>,
    pub scheduler: Arc<Scheduler>,
    pub mappings: Arc<MappingRunner>,
    pub monitor: Arc<HealthMonitor>,
    /// This node in its cluster (the `cluster` check, cluster mode only).
    pub node: Arc<crate::cluster::Node>,
}

impl Checker {
    /// Checks every interval until aborted; logs each change of the overall status.
    pub async fn run(self) {
        let mut last = HealthStatus::Ok;
        loop {
            let report = self.check().await;
            let status = report
                .checks
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(HealthStatus::Ok);
            if status != last {
                let reasons: Vec<String> = report
                    .checks
                    .iter()
                    .filter(|c| c.status != HealthStatus::Ok)
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect();
                match status {
                    HealthStatus::Ok => info!("health: ok again"),
                    s => warn!(status = ?s, reasons = %reasons.join("; "), "health changed"),
                }
                last = status;
            }
            self.monitor.publish(report);
            tokio::time::sleep(self.cfg.interval).await;
        }
    }

    #[tracing::instrument(name = "health_check", skip_all)]
    async fn check(&self) -> HealthReport {
        let dir = self.data_dir.clone();
        let cfg = self.cfg;
        let (disk, stores) = tokio::task::spawn_blocking(move || {
            let stores = with_commits(probe(&dir), &nimbus_metrics::recent_store_writes());
            (disk(&dir, cfg), stores)
        })
        .await
        .unwrap_or_else(|e| {
            let failed = |name| {
                HealthCheck::new(
                    name,
                    HealthStatus::Failing,
                    format!("the check panicked: {e}"),
                    Value::Null,
                )
            };
            (failed("disk"), failed("stores"))
        });
        let (q, m) = (self.events.queue().clone(), self.mappings.store().clone());
        let (async_backlog, queue_backlog) =
            tokio::task::spawn_blocking(move || (q.backlog(), m.backlog()))
                .await
                .map_or_else(
                    |e| {
                        let err = format!("the check panicked: {e}");
                        (Err(err.clone()), Err(err))
                    },
                    |(a, b)| (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string())),
                );
        let checks = vec![
            disk,
            stores,
            isolation(&self.isolation),
            executor(&self.pools),
            stem_cells(&self.pools.executor().process().stem_stats()),
            heartbeat(
                "dispatcher",
                "async event dispatcher",
                self.events.heartbeat(),
            ),
            heartbeat("scheduler", "schedule rules", self.scheduler.heartbeat()),
            heartbeat(
                "pollers",
                "queue pollers' supervisor",
                self.mappings.heartbeat(),
            ),
            backlog(
                "async_backlog",
                "unfinished async events",
                "--max-async-events/--max-async-bytes",
                async_backlog,
            ),
            backlog(
                "queue_backlog",
                "queue messages",
                "--max-queue-messages/--max-queue-bytes",
                queue_backlog,
            ),
        ];
        let mut checks = checks;
        if let Some(changes) = &self.node.changes {
            let superseded = self
                .node
                .membership
                .as_ref()
                .is_some_and(|m| m.superseded());
            checks.push(cluster(self.node.id.as_str(), superseded, changes.health()));
        }
        HealthReport {
            checks,
            checked_ms: crate::unix_ms(),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Free space of the data dir's file system.
fn disk(dir: &Path, cfg: HealthConfig) -> HealthCheck {
    let st = match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => st,
        Err(e) => {
            return HealthCheck::new(
                "disk",
                HealthStatus::Failing,
                format!("cannot read the free space of {}: {e}", dir.display()),
                Value::Null,
            )
        }
    };
    let frag = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frag;
    let free = st.blocks_available() as u64 * frag;
    let low = cfg.low_free_disk.min(total / 10);
    let value = json!({
        "free_bytes": free,
        "total_bytes": total,
        "failing_below_bytes": cfg.min_free_disk,
        "degraded_below_bytes": low,
    });
    let (status, detail) = if free < cfg.min_free_disk {
        (
            HealthStatus::Failing,
            format!(
                "disk of the data dir {} almost full: {} free of {}, below --min-free-disk-mb {}",
                dir.display(),
                mib(free),
                mib(total),
                cfg.min_free_disk >> 20
            ),
        )
    } else if free < low {
        (
            HealthStatus::Degraded,
            format!(
                "disk of the data dir {} low: {} free of {} (below {})",
                dir.display(),
                mib(free),
                mib(total),
                mib(low)
            ),
        )
    } else {
        (
            HealthStatus::Ok,
            format!("{} free of {}", mib(free), mib(total)),
        )
    };
    HealthCheck::new("disk", status, detail, value)
}

/// A tiny write+fsync where the databases live: writable, and how long an fsync takes.
fn probe(dir: &Path) -> HealthCheck {
    let path = dir.join(".health-probe");
    let t0 = Instant::now();
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&[0u8; 512])?;
        f.sync_all()
    });
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&path);
    let value = json!({ "fsync_ms": took.as_secs_f64() * 1000.0 });
    match written {
        Err(e) => HealthCheck::new(
            "stores",
            HealthStatus::Failing,
            format!(
                "cannot write to the data dir {} ({DATABASES}): {e}",
                dir.display()
            ),
            json!({ "fsync_ms": null }),
        ),
        Ok(()) if took > SLOW_FSYNC => HealthCheck::new(
            "stores",
            HealthStatus::Degraded,
            format!(
                "slow disk: a 512-byte write+fsync in the data dir took {} ms ({DATABASES})",
                took.as_millis()
            ),
            value,
        ),
        Ok(()) => HealthCheck::new(
            "stores",
            HealthStatus::Ok,
            format!(
                "writable; write+fsync {:.1} ms ({DATABASES})",
                took.as_secs_f64() * 1000.0
            ),
            value,
        ),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The probe's check with each database's commits of the last minute (`value.commits`):
/// degraded when one took over [`SLOW_FSYNC`].
fn with_commits(mut check: HealthCheck, recent: &[RecentWrites]) -> HealthCheck {
    let commits: serde_json::Map<String, Value> = recent
        .iter()
        .map(|w| {
            let figures = json!({ "count": w.count, "max_ms": ms(w.max) });
            (w.db.clone(), figures)
        })
        .collect();
    check.value["commits"] = Value::Object(commits);
    let slow: Vec<String> = recent
        .iter()
        .filter(|w| w.max > SLOW_FSYNC)
        .map(|w| format!("{} {} ms", w.db, w.max.as_millis()))
        .collect();
    if !slow.is_empty() && check.status == HealthStatus::Ok {
        check.status = HealthStatus::Degraded;
        check.detail = format!(
            "slow commits in the last minute (over {} ms): {}",
            SLOW_FSYNC.as_millis(),
            slow.join(", ")
        );
    }
    check
}

/// The sandbox the executor probed at start.
fn isolation(report: &Value) -> HealthCheck {
    let level = report["level"].as_str().unwrap_or("unknown");
    let missing: Vec<&str> = report["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter(|l| l["ok"] == false)
                .filter_map(|l| l["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let value = json!({ "level": level, "missing": missing });
    match level {
        "full" => HealthCheck::new("isolation", HealthStatus::Ok, "full".into(), value),
        "none" if report["mode"] == "none" => HealthCheck::new(
            "isolation",
            HealthStatus::Degraded,
            "isolation off (--isolation none): functions are not isolated".into(),
            value,
        ),
        _ => HealthCheck::new(
            "isolation",
            HealthStatus::Degraded,
            format!(
                "isolation {level}: missing {} (`nimbus doctor` says what each adds)",
                missing.join(", ")
            ),
            value,
        ),
    }
}

/// The executor's instances and the host's memory against the floor.
fn executor(pools: &Pools) -> HealthCheck {
    let m = pools.memory_stats();
    let value = json!({
        "instances": m.instances,
        "busy": m.busy,
        "host_available_bytes": m.host_available_bytes,
        "memory_floor_bytes": m.floor_bytes,
    });
    match m.host_available_bytes {
        Some(avail) if m.floor_bytes > 0 && avail < m.floor_bytes => HealthCheck::new(
            "executor",
            HealthStatus::Degraded,
            format!(
                "host memory low: {} available, below the floor of {} (idle instances are being stopped)",
                mib(avail),
                mib(m.floor_bytes)
            ),
            value,
        ),
        _ => HealthCheck::new(
            "executor",
            HealthStatus::Ok,
            format!("{} instances, {} busy", m.instances, m.busy),
            value,
        ),
    }
}

/// Prewarmed runtimes: how many are idle against their targets; degraded while a pool's
/// refills fail (its last failure within [`RECENT_STEM_FAILURE`]).
fn stem_cells(s: &StemStats) -> HealthCheck {
    let idle: usize = s.pools.iter().map(|p| p.idle).sum();
    let target: u32 = s.pools.iter().map(|p| p.target).sum();
    let failures: u64 = s.pools.iter().map(|p| p.refill_failures).sum();
    let failing: Vec<String> = s
        .pools
        .iter()
        .filter(|p| {
            p.last_failure_ms_ago
                .is_some_and(|ago| u128::from(ago) < RECENT_STEM_FAILURE.as_millis())
        })
        .map(|p| {
            format!(
                "{} ({}): {}",
                p.runtime,
                p.network,
                p.last_error.as_deref().unwrap_or("unknown error")
            )
        })
        .collect();
    let value = json!({
        "enabled": s.enabled,
        "idle": idle,
        "target": target,
        "refill_failures": failures,
    });
    if !failing.is_empty() {
        let detail = format!(
            "stem cells cannot be started (cold starts spawn a runtime instead): {}",
            failing.join("; ")
        );
        return HealthCheck::new("stem_cells", HealthStatus::Degraded, detail, value);
    }
    let detail = if s.enabled {
        format!("{idle} idle of a target of {target}")
    } else {
        format!(
            "off ({})",
            s.reason.as_deref().unwrap_or("--stem-cells off")
        )
    };
    HealthCheck::new("stem_cells", HealthStatus::Ok, detail, value)
}

/// A background loop: failing (stuck) when it has not iterated for a long while.
fn heartbeat(name: &'static str, what: &str, h: &Heartbeat) -> HealthCheck {
    let age = h.age();
    let value = json!({
        "last_tick_ms_ago": age.as_millis() as u64,
        "period_ms": h.period().as_millis() as u64,
        "stuck_after_ms": h.stuck_after().as_millis() as u64,
    });
    let check = if h.is_stuck() {
        HealthCheck::new(
            name,
            HealthStatus::Failing,
            format!(
                "{what} stuck: no iteration for {:.1} s (expected every {:.1} s)",
                age.as_secs_f64(),
                h.period().as_secs_f64()
            ),
            value,
        )
    } else {
        HealthCheck::new(
            name,
            HealthStatus::Ok,
            format!("alive, last iteration {:.1} s ago", age.as_secs_f64()),
            value,
        )
    };
    check.liveness()
}

/// Longer than this without reading the database, a cluster node is failing (not ready:
/// a load balancer should send its requests elsewhere).
const CLUSTER_BLIND: Duration = Duration::from_secs(3);

/// Cluster mode: the database answering this node (its change generations read within
/// [`CLUSTER_BLIND`]), its node id still its own, and NATS connected (without it the
/// cluster keeps working, changes reaching this node by polling the database).
fn cluster(node: &str, superseded: bool, h: nimbus_cluster::ChangesHealth) -> HealthCheck {
    let value = json!({
        "node": node,
        "database_read_ms_ago": h.since_read.map(|d| d.as_millis() as u64),
        "nats": match h.nats_connected {
            None => "not configured",
            Some(true) => "connected",
            Some(false) => "disconnected",
        },
    });
    let (status, detail) = if superseded {
        (
            HealthStatus::Failing,
            format!("another process took over node id {node}: this one stopped its heartbeats; stop it"),
        )
    } else {
        match h.since_read {
            None => (
                HealthStatus::Degraded,
                "joining: the cluster's change generations not read yet".to_string(),
            ),
            Some(d) if d > CLUSTER_BLIND => (
                HealthStatus::Failing,
                format!(
                    "the database has not answered for {:.1} s: this node's caches are dropped and requests that need the database fail",
                    d.as_secs_f64()
                ),
            ),
            Some(_) if h.nats_connected == Some(false) => (
                HealthStatus::Degraded,
                "NATS unreachable: changes made on other nodes reach this one by polling the database (within 200 ms)".to_string(),
            ),
            Some(_) => (
                HealthStatus::Ok,
                match h.nats_connected {
                    Some(true) => format!("node {node}: database and NATS answering"),
                    _ => format!("node {node}: database answering (no --nats: changes by polling)"),
                },
            ),
        }
    };
    HealthCheck::new("cluster", status, detail, value)
}

/// A durable backlog: degraded when it is near its limit.
fn backlog(
    name: &'static str,
    what: &str,
    flags: &str,
    usage: Result<BacklogUsage, String>,
) -> HealthCheck {
    let u = match usage {
        Ok(u) => u,
        Err(e) => {
            return HealthCheck::new(
                name,
                HealthStatus::Failing,
                format!("cannot read the {what} backlog: {e}"),
                Value::Null,
            )
        }
    };
    let fill = u.fill();
    let (owner, items) = u.largest_owner.clone().unwrap_or_default();
    let value = json!({
        "fill": fill,
        "largest_owner": (!owner.is_empty()).then_some(&owner),
        "largest_owner_items": items,
        "per_owner_limit": u.limit.per_owner,
        "bytes": u.total_bytes,
        "bytes_limit": u.limit.total_bytes,
    });
    if fill > BACKLOG_NEAR_FULL {
        HealthCheck::new(
            name,
            HealthStatus::Degraded,
            format!(
                "{what} near the limit: {:.0} % full ({owner} holds {items}; {flags})",
                fill * 100.0
            ),
            value,
        )
    } else {
        HealthCheck::new(
            name,
            HealthStatus::Ok,
            format!("{:.0} % of the limit", fill * 100.0),
            value,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_store::BacklogLimit;

    #[test]
    fn cluster_check() {
        use nimbus_cluster::ChangesHealth;
        let h = |ms: Option<u64>, nats| ChangesHealth {
            since_read: ms.map(Duration::from_millis),
            nats_connected: nats,
        };
        let ok = cluster("n1", false, h(Some(150), Some(true)));
        assert_eq!(ok.status, HealthStatus::Ok, "{ok:?}");
        assert_eq!(ok.value["nats"], "connected");
        let no_nats = cluster("n1", false, h(Some(150), None));
        assert_eq!(no_nats.status, HealthStatus::Ok, "{no_nats:?}");
        let nats_down = cluster("n1", false, h(Some(150), Some(false)));
        assert_eq!(nats_down.status, HealthStatus::Degraded);
        assert!(
            nats_down.detail.contains("NATS unreachable"),
            "{nats_down:?}"
        );
        let blind = cluster("n1", false, h(Some(4000), Some(true)));
        assert_eq!(blind.status, HealthStatus::Failing);
        assert!(blind.detail.contains("4.0 s"), "{blind:?}");
        assert_eq!(blind.value["database_read_ms_ago"], 4000);
        assert_eq!(
            cluster("n1", false, h(None, None)).status,
            HealthStatus::Degraded
        );
        let taken = cluster("n1", true, h(Some(10), Some(true)));
        assert_eq!(taken.status, HealthStatus::Failing);
        assert!(taken.detail.contains("took over node id n1"), "{taken:?}");
    }

    #[test]
    fn disk_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let ok = disk(
            dir.path(),
            HealthConfig {
                min_free_disk: 0,
                low_free_disk: 0,
                ..Default::default()
            },
        );
        assert_eq!(ok.status, HealthStatus::Ok, "{ok:?}");
        let failing = disk(
            dir.path(),
            HealthConfig {
                min_free_disk: u64::MAX,
                ..Default::default()
            },
        );
        assert_eq!(failing.status, HealthStatus::Failing);
        assert!(failing.detail.contains("--min-free-disk-mb"), "{failing:?}");
        assert_eq!(probe(dir.path()).status, HealthStatus::Ok);
        let gone = probe(&dir.path().join("missing"));
        assert_eq!(gone.status, HealthStatus::Failing);
    }

    #[test]
    fn a_slow_commit_makes_stores_degraded() {
        let dir = tempfile::tempdir().unwrap();
        let writes = |db: &str, count, ms| RecentWrites {
            db: db.into(),
            count,
            max: Duration::from_millis(ms),
        };
        let fast = writes("events", 3, 4);
        let ok = with_commits(probe(dir.path()), std::slice::from_ref(&fast));
        assert_eq!(ok.status, HealthStatus::Ok, "{ok:?}");
        assert_eq!(ok.value["commits"]["events"]["count"], 3);
        assert_eq!(ok.value["commits"]["events"]["max_ms"], 4.0);
        let slow = writes("queues", 1, 1500);
        let c = with_commits(probe(dir.path()), &[fast, slow.clone()]);
        assert_eq!(c.status, HealthStatus::Degraded);
        assert!(c.detail.contains("queues 1500 ms"), "{c:?}");
        // A failing probe stays failing, with its own reason.
        let gone = with_commits(probe(&dir.path().join("missing")), &[slow]);
        assert_eq!(gone.status, HealthStatus::Failing);
        assert!(gone.detail.contains("cannot write"), "{gone:?}");
    }

    #[test]
    fn a_recent_refill_failure_makes_stem_cells_degraded() {
        let stats = |ago: Option<u64>| StemStats {
            enabled: true,
            reason: None,
            min: 1,
            max: 4,
            ttl_s: 120,
            memory_bytes: 0,
            memory_budget_bytes: 1 << 28,
            pools: vec![nimbus_runtime::StemPoolStats {
                runtime: "node",
                network: "outbound",
                ephemeral_storage_mb: 512,
                idle: 0,
                starting: 0,
                target: 1,
                hits: 0,
                misses: 0,
                refill_failures: u64::from(ago.is_some()) * 3,
                last_failure_ms_ago: ago,
                last_error: ago.map(|_| "node: not found".into()),
            }],
        };
        let c = stem_cells(&stats(Some(1_000)));
        assert_eq!(c.status, HealthStatus::Degraded);
        assert!(
            c.detail.contains("node (outbound): node: not found"),
            "{c:?}"
        );
        assert_eq!(c.value["refill_failures"], 3);
        // Failures a while ago are history: ok, still counted.
        let c = stem_cells(&stats(Some(120_000)));
        assert_eq!(c.status, HealthStatus::Ok, "{c:?}");
        assert_eq!(c.value["refill_failures"], 3);
        assert_eq!(stem_cells(&stats(None)).status, HealthStatus::Ok);
    }

    #[test]
    fn backlog_near_full_is_degraded() {
        let limit = BacklogLimit {
            per_owner: 10,
            total_bytes: 1000,
        };
        let at = |n| {
            backlog(
                "queue_backlog",
                "queue messages",
                "--max-queue-messages",
                Ok(BacklogUsage {
                    largest_owner: Some(("q".into(), n)),
                    owners: vec![("q".into(), n)],
                    total_bytes: 10,
                    limit,
                }),
            )
        };
        assert_eq!(at(9).status, HealthStatus::Ok);
        let near = at(10);
        assert_eq!(near.status, HealthStatus::Degraded);
        assert!(near.detail.contains("q holds 10"), "{near:?}");
    }

    #[test]
    fn partial_isolation_is_degraded() {
        let c = isolation(&json!({
            "mode": "auto", "level": "partial",
            "layers": [{"name": "namespaces", "ok": false}, {"name": "rlimits", "ok": true}],
        }));
        assert_eq!(c.status, HealthStatus::Degraded);
        assert!(c.detail.contains("namespaces"), "{c:?}");
        let full = isolation(&json!({"mode": "auto", "level": "full", "layers": []}));
        assert_eq!(full.status, HealthStatus::Ok);
    }
}
