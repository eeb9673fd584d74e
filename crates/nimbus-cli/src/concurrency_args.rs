//! `nimbus serve`/`up` flags for concurrency: the account limit, the wait queue bounds and
//! the scale-out rate (see `docs/api.md`, "Concurrency and throttling").

use clap::Args;
use nimbus_server::ScaleRate;

#[derive(Debug, Clone, Args)]
pub struct ConcurrencyArgs {
    /// Invocations running at once across all functions (Lambda's account concurrency).
    /// Reserved concurrency (PutFunctionConcurrency) is carved out of it; the other
    /// functions share the rest.
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

impl ConcurrencyArgs {
    /// Puts these settings into a server configuration.
    pub fn apply(&self, c: &mut nimbus_server::Config) {
        c.account_concurrency = self.account_concurrency.max(1);
        c.scale_rate = self.max_scale_rate;
        c.queue_depth = self.queue_depth;
        c.account_queue_depth = self.account_queue_depth;
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
