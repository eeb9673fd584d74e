//! `nimbus-bench --flows`: workflows (issue 17). Three figures, each beside a floor
//! measured in the same run on the same server:
//!
//! - **state transitions per second**: `executions` executions of a chain of `chain` Pass
//!   states started at once; transitions = states entered. Floor: the data dir's fsync
//!   rate (each step's commit pays one), so the ratio says how many transitions one
//!   durable commit carries.
//! - **StartSyncExecution p50** of an EXPRESS workflow of three Tasks calling a no-op Node
//!   function, against the same three invocations made directly one after the other
//!   (Lambda's Invoke API, same client).
//! - **Map fan-out**: a Map of `map_items` items with `MaxConcurrency` `map_concurrency`
//!   whose iteration is one Task calling the no-op function, items per second, against the
//!   same number of direct invocations from `map_concurrency` concurrent clients.

use crate::stats::{median, Latency};
use crate::targets::Nimbus;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FUNCTION: &str = "flows-noop";
const NOOP_JS: &str = "exports.handler = async (e) => e;\n";
const ROLE: &str = "arn:aws:iam::000000000000:role/flows-bench";

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub executions: usize,
    pub chain: usize,
    pub sync_samples: usize,
    pub map_items: usize,
    pub map_concurrency: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct FlowRun {
    pub transitions_per_s: f64,
    pub fsyncs_per_s: f64,
    pub sync: Latency,
    pub direct3: Latency,
    pub map_per_s: f64,
    pub direct_per_s: f64,
}

impl FlowRun {
    pub fn median_of(runs: &[FlowRun]) -> FlowRun {
        let m = |f: fn(&FlowRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        FlowRun {
            transitions_per_s: m(|r| r.transitions_per_s),
            fsyncs_per_s: m(|r| r.fsyncs_per_s),
            sync: Latency {
                p50: m(|r| r.sync.p50),
                p99: m(|r| r.sync.p99),
            },
            direct3: Latency {
                p50: m(|r| r.direct3.p50),
                p99: m(|r| r.direct3.p99),
            },
            map_per_s: m(|r| r.map_per_s),
            direct_per_s: m(|r| r.direct_per_s),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "transitions_per_s": self.transitions_per_s, "fsyncs_per_s": self.fsyncs_per_s,
            "transitions_per_fsync": self.transitions_per_s / self.fsyncs_per_s,
            "start_sync_ms": {"p50": self.sync.p50, "p99": self.sync.p99},
            "direct_3_invokes_ms": {"p50": self.direct3.p50, "p99": self.direct3.p99},
            "start_sync_over_direct_p50": self.sync.p50 / self.direct3.p50,
            "map_items_per_s": self.map_per_s, "direct_invokes_per_s": self.direct_per_s,
            "map_over_direct": self.map_per_s / self.direct_per_s,
        })
    }

    pub fn table(&self, s: &Settings) -> String {
        let mut out = String::new();
        out += "| measure | workflows | floor | ratio |\n|---|---:|---:|---:|\n";
        out += &format!(
            "| state transitions/s ({} executions × {} Pass states) | {:.0} | {:.0} fsyncs/s | {:.1} transitions per fsync |\n",
            s.executions, s.chain, self.transitions_per_s, self.fsyncs_per_s,
            self.transitions_per_s / self.fsyncs_per_s
        );
        out += &format!(
            "| StartSyncExecution, 3 Tasks (EXPRESS), p50 / p99 ms | {:.2} / {:.2} | {:.2} / {:.2} (3 direct invokes) | {:.2} |\n",
            self.sync.p50, self.sync.p99, self.direct3.p50, self.direct3.p99,
            self.sync.p50 / self.direct3.p50
        );
        out += &format!(
            "| Map fan-out, {} items, MaxConcurrency {}, items/s | {:.0} | {:.0} direct invokes/s | {:.2} |\n",
            s.map_items, s.map_concurrency, self.map_per_s, self.direct_per_s,
            self.map_per_s / self.direct_per_s
        );
        out
    }
}

fn fn_arn() -> String {
    format!("arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}")
}

async fn create(n: &Nimbus, name: &str, def: &Value, kind: &str) -> Result<String> {
    let out = n
        .sfn(
            "CreateStateMachine",
            &json!({"name": name, "definition": def.to_string(), "roleArn": ROLE, "type": kind}),
        )
        .await?;
    Ok(out["stateMachineArn"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn wait_done(n: &Nimbus, arn: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let d = n
            .sfn("DescribeExecution", &json!({"executionArn": arn}))
            .await?;
        if d["status"] != "RUNNING" {
            if d["status"] != "SUCCEEDED" {
                bail!("{arn} ended {}: {d}", d["status"]);
            }
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("{arn} did not end within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deploys the function and the machines once.
pub async fn prepare(n: &Nimbus, s: &Settings) -> Result<[String; 3]> {
    n.deploy_node(FUNCTION, NOOP_JS, 10, s.map_concurrency as u32 + 4)
        .await?;
    let mut states = serde_json::Map::new();
    for i in 0..s.chain {
        let mut st = json!({"Type": "Pass"});
        if i + 1 == s.chain {
            st["End"] = json!(true);
        } else {
            st["Next"] = json!(format!("S{}", i + 1));
        }
        states.insert(format!("S{i}"), st);
    }
    let chain = create(
        n,
        "bench-chain",
        &json!({"StartAt": "S0", "States": states}),
        "STANDARD",
    )
    .await?;
    let task = |next: Option<&str>| {
        let mut t = json!({"Type": "Task", "Resource": fn_arn()});
        match next {
            Some(x) => t["Next"] = json!(x),
            None => t["End"] = json!(true),
        }
        t
    };
    let three = create(
        n,
        "bench-three",
        &json!({"StartAt": "A", "States": {"A": task(Some("B")), "B": task(Some("C")), "C": task(None)}}),
        "EXPRESS",
    )
    .await?;
    let map = create(
        n,
        "bench-map",
        &json!({"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": s.map_concurrency,
            "ResultSelector": {"n.$": "States.ArrayLength($)"},
            "ItemProcessor": {"StartAt": "T", "States": {"T": task(None)}}, "End": true}}}),
        "STANDARD",
    )
    .await?;
    // Warm: instances up to the Map's concurrency, and the definitions parsed once.
    let warm: Vec<_> = (0..s.map_concurrency)
        .map(|_| n.invoke(FUNCTION, "{}"))
        .collect();
    for r in futures_util::future::join_all(warm).await {
        r?;
    }
    n.sfn(
        "StartSyncExecution",
        &json!({"stateMachineArn": three, "input": "{}"}),
    )
    .await?;
    Ok([chain, three, map])
}

pub async fn bench(n: &Nimbus, dir: &Path, s: &Settings, runs: u32) -> Result<Vec<FlowRun>> {
    let [chain, three, map] = prepare(n, s).await?;
    let n = Arc::new(n);
    let mut out = Vec::new();
    for run in 0..runs {
        // 1. Transitions: every execution started at once, then wait for all.
        let t0 = Instant::now();
        let starts: Vec<_> = (0..s.executions)
            .map(|i| {
                let n = n.clone();
                let body =
                    json!({"stateMachineArn": chain, "name": format!("r{run}-{i}"), "input": "{}"});
                async move { n.sfn("StartExecution", &body).await }
            })
            .collect();
        let mut arns = Vec::new();
        for r in futures_util::future::join_all(starts).await {
            arns.push(r?["executionArn"].as_str().unwrap_or_default().to_string());
        }
        for a in &arns {
            wait_done(&n, a, Duration::from_secs(300)).await?;
        }
        let transitions_per_s = (s.executions * s.chain) as f64 / t0.elapsed().as_secs_f64();
        let fsync = fsync_rate(dir)?;

        // 2. StartSyncExecution of three Tasks against three direct invocations.
        let mut sync = Vec::with_capacity(s.sync_samples);
        let mut direct = Vec::with_capacity(s.sync_samples);
        for _ in 0..s.sync_samples {
            let t = Instant::now();
            let r = n
                .sfn(
                    "StartSyncExecution",
                    &json!({"stateMachineArn": three, "input": "{\"x\":1}"}),
                )
                .await?;
            if r["status"] != "SUCCEEDED" {
                bail!("StartSyncExecution: {r}");
            }
            sync.push(t.elapsed());
            let t = Instant::now();
            for _ in 0..3 {
                n.invoke(FUNCTION, "{\"x\":1}").await?;
            }
            direct.push(t.elapsed());
        }

        // 3. The Map against the same invocations from as many concurrent clients.
        let items: Vec<usize> = (0..s.map_items).collect();
        let t = Instant::now();
        let started = n
            .sfn(
                "StartExecution",
                &json!({"stateMachineArn": map, "name": format!("map-{run}"), "input": json!(items).to_string()}),
            )
            .await?;
        let d = wait_done(
            &n,
            started["executionArn"].as_str().unwrap_or_default(),
            Duration::from_secs(600),
        )
        .await?;
        let map_per_s = s.map_items as f64 / t.elapsed().as_secs_f64();
        if !d["output"]
            .as_str()
            .unwrap_or_default()
            .contains(&s.map_items.to_string())
        {
            bail!("the map's output: {d}");
        }
        let t = Instant::now();
        let per_client = s.map_items / s.map_concurrency;
        let clients: Vec<_> = (0..s.map_concurrency)
            .map(|_| {
                let n = n.clone();
                async move {
                    for i in 0..per_client {
                        n.invoke(FUNCTION, &i.to_string()).await?;
                    }
                    anyhow::Ok(())
                }
            })
            .collect();
        for r in futures_util::future::join_all(clients).await {
            r?;
        }
        let direct_per_s = (per_client * s.map_concurrency) as f64 / t.elapsed().as_secs_f64();
        let r = FlowRun {
            transitions_per_s,
            fsyncs_per_s: fsync,
            sync: Latency::of(&sync),
            direct3: Latency::of(&direct),
            map_per_s,
            direct_per_s,
        };
        eprintln!("run {}: {}", run + 1, r.to_json());
        out.push(r);
    }
    Ok(out)
}

/// The rate of durable commits the disk allows one writer: 4 KB appends with `fdatasync`
/// next to the data dir (`async_bench::fsync_probe`), per second at their median.
fn fsync_rate(dir: &Path) -> Result<f64> {
    Ok(1000.0 / crate::async_bench::fsync_probe(dir)?.p50)
}
