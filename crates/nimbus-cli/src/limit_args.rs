//! `nimbus serve`/`up` flags for the abuse limits (see `docs/security.md`, "Abuse limits").

use crate::cli::parse_secs;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Per-caller rate limit for every request: RPS[:BURST] (token bucket per source IP;
    /// `off` disables it).
    #[arg(long, env = "NIMBUS_RATE_LIMIT", default_value = "off", value_name = "RPS[:BURST]", value_parser = parse_rate)]
    pub rate_limit: Rate,
    /// Largest request head (request line and headers), bytes; beyond: 431.
    #[arg(
        long,
        env = "NIMBUS_MAX_HEADER_BYTES",
        default_value = "65536",
        value_name = "BYTES"
    )]
    pub max_header_bytes: usize,
    /// Most request headers; beyond: 431.
    #[arg(
        long,
        env = "NIMBUS_MAX_HEADERS",
        default_value = "100",
        value_name = "N"
    )]
    pub max_headers: usize,
    /// Largest body of API requests other than deploys and invocations (6 MB, fixed as
    /// Lambda's), bytes; beyond: 413.
    #[arg(
        long,
        env = "NIMBUS_MAX_BODY",
        default_value = "6291456",
        value_name = "BYTES"
    )]
    pub max_body: usize,
    /// Largest deploy request body (a base64 zip plus configuration), bytes; beyond: 413.
    #[arg(
        long,
        env = "NIMBUS_MAX_DEPLOY_BODY",
        default_value = "73400320",
        value_name = "BYTES"
    )]
    pub max_deploy_body: usize,
    /// Deploy/UpdateFunctionCode requests in flight at once; more wait up to 2 s, then 429.
    #[arg(
        long,
        env = "NIMBUS_MAX_UPLOADS",
        default_value = "4",
        value_name = "N"
    )]
    pub max_uploads: usize,
    /// How long a client may take to send a whole request body (seconds, or 90s, 5m); then 408.
    #[arg(long, env = "NIMBUS_BODY_TIMEOUT", default_value = "300", value_name = "SECS", value_parser = parse_secs)]
    pub body_timeout: Duration,
    /// How long a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open (seconds, or 30s, 1m).
    #[arg(long, env = "NIMBUS_HEADER_TIMEOUT", default_value = "10", value_name = "SECS", value_parser = parse_secs)]
    pub header_timeout: Duration,
    /// Open client connections at once. At the cap, a connection that has not completed a
    /// request or is idle between requests is closed to make room (oldest first); only
    /// when every connection has a request in flight do further clients wait.
    #[arg(
        long,
        env = "NIMBUS_MAX_CONNECTIONS",
        default_value = "1024",
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Open connections at once from one client address (IPv4 address or IPv6 /64); a
    /// connection beyond it is closed at once. 0 turns it off (behind a reverse proxy,
    /// whose one address every client shares).
    #[arg(
        long,
        env = "NIMBUS_MAX_CONNECTIONS_PER_IP",
        default_value = "256",
        value_name = "N"
    )]
    pub max_connections_per_ip: usize,
    /// Unfinished asynchronous events one function may hold; more: 429.
    #[arg(
        long,
        env = "NIMBUS_MAX_ASYNC_EVENTS",
        default_value = "100000",
        value_name = "N"
    )]
    pub max_async_events: u64,
    /// Bytes of unfinished asynchronous event payloads, all functions together; more: 429.
    #[arg(
        long,
        env = "NIMBUS_MAX_ASYNC_BYTES",
        default_value = "1073741824",
        value_name = "BYTES"
    )]
    pub max_async_bytes: u64,
    /// Messages one built-in queue may hold; more: 429.
    #[arg(
        long,
        env = "NIMBUS_MAX_QUEUE_MESSAGES",
        default_value = "100000",
        value_name = "N"
    )]
    pub max_queue_messages: u64,
    /// Bytes of messages, all built-in queues together; more: 429.
    #[arg(
        long,
        env = "NIMBUS_MAX_QUEUE_BYTES",
        default_value = "1073741824",
        value_name = "BYTES"
    )]
    pub max_queue_bytes: u64,
    /// Bytes of the log store (`logs.db` and its WAL) at most; the oldest lines of the
    /// functions holding the most go first. Default: 1 GiB, or a tenth of the data dir's
    /// file system when that is smaller.
    #[arg(long, env = "NIMBUS_MAX_LOG_BYTES", value_name = "BYTES")]
    pub max_log_bytes: Option<u64>,
    /// Bytes of log lines kept per function; older lines go first.
    #[arg(
        long,
        env = "NIMBUS_MAX_LOG_BYTES_PER_FUNCTION",
        default_value = "67108864",
        value_name = "BYTES"
    )]
    pub max_log_bytes_per_function: u64,
    /// Output one invocation may log; the rest is dropped and replaced by one line saying
    /// how much was dropped.
    #[arg(
        long,
        env = "NIMBUS_MAX_LOG_BYTES_PER_INVOCATION",
        default_value = "4194304",
        value_name = "BYTES"
    )]
    pub max_log_bytes_per_invocation: u64,
}

/// A `--rate-limit` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub Option<nimbus_core::RateLimit>);

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(Rate(None));
    }
    let (rps, burst) = match s.split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let bad = || format!("{s:?}: use RPS or RPS:BURST with whole numbers, e.g. 50:100, or off");
    let rps: u32 = rps.trim().parse().map_err(|_| bad())?;
    let burst: u32 = match burst {
        Some(b) => b.trim().parse().map_err(|_| bad())?,
        None => rps,
    };
    if rps == 0 || burst == 0 {
        return Err(bad());
    }
    Ok(Rate(Some(nimbus_core::RateLimit { rps, burst })))
}

impl LimitArgs {
    /// Puts these limits into a server configuration.
    pub fn apply(&self, c: &mut nimbus_server::Config) {
        c.abuse.rate_limit = self.rate_limit.0;
        c.abuse.max_header_bytes = self.max_header_bytes.max(1024);
        c.abuse.max_headers = self.max_headers.max(8);
        c.abuse.max_body = self.max_body;
        c.abuse.max_deploy_body = self.max_deploy_body;
        c.abuse.max_uploads = self.max_uploads.max(1);
        c.abuse.body_timeout = self.body_timeout.max(Duration::from_secs(1));
        c.conn.header_read_timeout = self.header_timeout.max(Duration::from_secs(1));
        c.conn.max_connections = self.max_connections.max(1);
        c.conn.max_connections_per_ip = self.max_connections_per_ip;
        c.async_backlog = nimbus_store::BacklogLimit {
            per_owner: self.max_async_events.max(1),
            total_bytes: self.max_async_bytes.max(1),
        };
        c.queue_backlog = nimbus_store::BacklogLimit {
            per_owner: self.max_queue_messages.max(1),
            total_bytes: self.max_queue_bytes.max(1),
        };
        c.logs.total_bytes = self.max_log_bytes;
        c.logs.bytes_per_function = self.max_log_bytes_per_function.max(1);
        c.logs.capture.per_invocation_bytes = self.max_log_bytes_per_invocation.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("off").unwrap(), Rate(None));
        let r = parse_rate("10:20").unwrap().0.unwrap();
        assert_eq!((r.rps, r.burst), (10, 20));
        assert_eq!(parse_rate("5").unwrap().0.unwrap().burst, 5);
        assert!(parse_rate("x").is_err());
        assert!(parse_rate("0:5").is_err());
    }
}
