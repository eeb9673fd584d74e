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
}

impl ConcurrencyArgs {
    /// Puts these settings into a server configuration.
    pub fn apply(&self, c: &mut nimbus_server::Config) {
        c.account_concurrency = self.account_concurrency.max(1);
        c.scale_rate = self.max_scale_rate;
        c.queue_depth = self.queue_depth;
        c.account_queue_depth = self.account_queue_depth;
    }
}
