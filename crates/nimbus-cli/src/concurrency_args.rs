//! `nimbus serve`/`up` flags for concurrency: the account limit, the wait queue bounds,
//! the scale-out rate (see `docs/api.md`, "Concurrency and throttling") and the stem cell
//! pools that make cold starts cheap (docs/performance.md, "Stem cells").

use clap::Args;
use nimbus_server::{ScaleRate, StemConfig};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ConcurrencyArgs {
    /// Invocations running at once across all functions (Lambda's account concurrency).
    /// Reserved concurrency (PutFunctionConcurrency) is carved out of it; the other
    /// functions share the rest. In cluster mode the smallest value of the live nodes
    /// holds for the whole cluster (docs/cluster.md).
    #[arg(long, env = "NIMBUS_ACCOUNT_CONCURRENCY", default_value = "1000", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub account_concurrency: u32,
    /// How fast one function may start new instances: PER_SEC[:BURST] (token bucket per
    /// function). Requests beyond it wait for a warm instance or a token.
    #[arg(long, env = "NIMBUS_MAX_SCALE_RATE", default_value = "50:100", value_name = "PER_SEC[:BURST]", value_parser = ScaleRate::parse)]
    pub max_scale_rate: ScaleRate,
    /// Requests that may wait per function for a free slot; beyond it they are throttled at once.
    #[arg(
        long,
        env = "NIMBUS_QUEUE_DEPTH",
        default_value = "100",
        value_name = "N"
    )]
    pub queue_depth: usize,
    /// Requests that may wait in all (every function); beyond it they are throttled at once.
    #[arg(
        long,
        env = "NIMBUS_ACCOUNT_QUEUE_DEPTH",
        default_value = "1000",
        value_name = "N"
    )]
    pub account_queue_depth: usize,
    /// Prewarmed sandboxed Node and Python runtimes that cold starts take instead of
    /// spawning one: MIN:MAX idle per runtime (MIN kept for the default network and /tmp
    /// size, MAX reached when cold starts keep coming), or `off`.
    #[arg(long, env = "NIMBUS_STEM_CELLS", default_value = "1:4", value_name = "MIN:MAX|off", value_parser = parse_stem_cells)]
    pub stem_cells: (u32, u32),
    /// Seconds without cold starts after which a stem cell pool shrinks by one.
    #[arg(
        long,
        env = "NIMBUS_STEM_CELL_TTL",
        default_value = "120",
        value_name = "SECONDS"
    )]
    pub stem_cell_ttl: u64,
    /// The most memory idle stem cells may use together (MB).
    #[arg(
        long,
        env = "NIMBUS_STEM_CELLS_MEMORY",
        default_value = "256",
        value_name = "MB"
    )]
    pub stem_cells_memory: u64,
    /// Instances that may initialise at once on this host (default: 4 per core). A burst
    /// beyond it waits for a warm instance or a free slot, within --queue-timeout-ms.
    #[arg(long, env = "NIMBUS_MAX_INITIALIZING", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_initializing: Option<u32>,
    /// On a host whose CPUs are saturated, a process function's short invocations wait
    /// for one of its instances to come back instead of making one more busy, once more
    /// instances no longer bring more throughput (docs/api.md, "The instance gate";
    /// experimental). `off`: one instance per concurrent request, as Lambda.
    #[arg(long, env = "NIMBUS_INSTANCE_GATE", default_value = "off", value_name = "on|off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub instance_gate: bool,
    /// Memory all instances may hold, in MB (each counted at its function's memory size);
    /// beyond it, idle instances of any function are stopped least recently used first,
    /// and a start that still does not fit is throttled (429). `auto`: 75% of the host's
    /// memory or of the server's cgroup limit, whichever is lower; `off`: unlimited.
    #[arg(long, env = "NIMBUS_INSTANCE_MEMORY_BUDGET", default_value = "auto", value_name = "MB|auto|off", value_parser = parse_mb)]
    pub instance_memory_budget: MemorySetting,
    /// When the host's MemAvailable falls below this many MB, idle instances are stopped
    /// (least recently used first) before any start. `auto`: 5% of the host's memory, at
    /// most 256 MB; `off` (or 0): never.
    #[arg(long, env = "NIMBUS_MEMORY_FLOOR", default_value = "auto", value_name = "MB|auto|off", value_parser = parse_mb)]
    pub memory_floor: MemorySetting,
}

/// A memory size flag: a number of MB, `auto` (derived from the host) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySetting {
    Auto,
    Off,
    Mb(u64),
}

fn parse_mb(s: &str) -> Result<MemorySetting, String> {
    match s {
        "auto" => Ok(MemorySetting::Auto),
        "off" => Ok(MemorySetting::Off),
        n => n
            .parse::<u64>()
            .map(MemorySetting::Mb)
            .map_err(|_| format!("expected a number of MB, auto or off, not {n:?}")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: use on or off")),
    }
}

/// `off`, or `MIN:MAX` with MIN ≤ MAX ≤ 64.
fn parse_stem_cells(s: &str) -> Result<(u32, u32), String> {
    if s == "off" {
        return Ok((0, 0));
    }
    let bad = || format!("{s:?}: use MIN:MAX (for example 1:4) or off");
    let (min, max) = s.split_once(':').ok_or_else(bad)?;
    let (min, max): (u32, u32) = (
        min.trim().parse().map_err(|_| bad())?,
        max.trim().parse().map_err(|_| bad())?,
    );
    if min > max || max > 64 {
        return Err(format!(
            "{s:?}: MIN must not exceed MAX, and MAX must be at most 64"
        ));
    }
    Ok((min, max))
}

impl ConcurrencyArgs {
    /// Puts these settings into a server configuration.
    pub fn apply(&self, c: &mut nimbus_server::Config) {
        c.account_concurrency = self.account_concurrency.max(1);
        c.scale_rate = self.max_scale_rate;
        c.queue_depth = self.queue_depth;
        c.account_queue_depth = self.account_queue_depth;
        if let Some(n) = self.max_initializing {
            c.max_initializing = n as usize;
        }
        c.instance_gate = self.instance_gate;
        c.stem_cells = StemConfig {
            min: self.stem_cells.0,
            max: self.stem_cells.1,
            ttl: Duration::from_secs(self.stem_cell_ttl.max(1)),
            memory_budget: self.stem_cells_memory << 20,
        };
        match self.instance_memory_budget {
            MemorySetting::Auto => {}
            MemorySetting::Off => c.instance_memory_budget = None,
            MemorySetting::Mb(mb) => c.instance_memory_budget = Some(mb << 20),
        }
        match self.memory_floor {
            MemorySetting::Auto => {}
            MemorySetting::Off => c.memory_floor = 0,
            MemorySetting::Mb(mb) => c.memory_floor = mb << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_stem_cells;

    #[test]
    fn stem_cells_flag() {
        assert_eq!(parse_stem_cells("off"), Ok((0, 0)));
        assert_eq!(parse_stem_cells("1:4"), Ok((1, 4)));
        assert_eq!(parse_stem_cells("0:2"), Ok((0, 2)));
        assert!(parse_stem_cells("4:1").is_err());
        assert!(parse_stem_cells("3").is_err());
        assert!(parse_stem_cells("1:100").is_err());
    }
}
