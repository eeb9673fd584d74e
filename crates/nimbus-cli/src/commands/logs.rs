//! `nimbus logs`: `GET /v1/functions/{name}/logs` (or `GET /v1/logs` with `--all`) page by
//! page, filtered by time, level, request id and text; `--follow` then reads the live
//! tail (`follow=true`, server-sent events) from where the pages ended.

use crate::cli::LogsArgs;
use crate::client::{Client, LogEntry, LogFilter};
use crate::output::log_line;
use anyhow::{Context, Result};
use nimbus_core::FunctionName;
use std::collections::VecDeque;

const PAGE: usize = 1000;

pub async fn run(client: &Client, args: LogsArgs, json: bool) -> Result<()> {
    let name = args
        .name
        .as_deref()
        .map(FunctionName::parse)
        .transpose()?
        .map(|n| n.to_string());
    let all = name.is_none();
    let filter = LogFilter {
        since: args.since.clone(),
        until: args.until.clone(),
        level: args.level.clone(),
        request_id: args.request_id.clone(),
        grep: args.grep.clone(),
    };
    let show = |entries: &[LogEntry]| -> Result<()> {
        let mut text = String::new();
        for e in entries {
            if json {
                text.push_str(&serde_json::to_string(e)?);
            } else if all {
                text.push_str(e.function.as_deref().unwrap_or("-"));
                text.push_str("  ");
                text.push_str(&log_line(e));
            } else {
                text.push_str(&log_line(e));
            }
            text.push('\n');
        }
        super::print(text)
    };

    // Catch up with what is stored; with --limit N keep only the newest N lines.
    let mut after = 0;
    let mut tail: VecDeque<LogEntry> = VecDeque::new();
    loop {
        let page = client
            .logs_page(name.as_deref(), after, PAGE, &filter)
            .await?;
        let next = next_cursor(after, &page.logs, page.next);
        let done = page.logs.len() < PAGE || next <= after;
        match args.limit {
            Some(n) => keep_last(&mut tail, page.logs, n),
            None => show(&page.logs)?,
        }
        after = next.max(after);
        if done {
            break;
        }
    }
    show(tail.make_contiguous())?;

    if !args.follow {
        return Ok(());
    }
    let mut resp = client.follow_logs(name.as_deref(), after, &filter).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut events = SseBuffer::default();
    loop {
        let chunk = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            c = resp.chunk() => c.context("the live log tail was cut")?,
        };
        let Some(chunk) = chunk else {
            anyhow::bail!("the server ended the live log tail");
        };
        let entries = events
            .push(&chunk)
            .iter()
            .map(|data| serde_json::from_str::<LogEntry>(data))
            .collect::<Result<Vec<_>, _>>()
            .context("the server sent a log line in an unexpected shape")?;
        show(&entries)?;
    }
}

/// Splits a `text/event-stream` into its events' `data`, ignoring comments
/// (`: keep-alive`) and other fields.
#[derive(Default)]
struct SseBuffer {
    pending: Vec<u8>,
}

impl SseBuffer {
    /// Adds received bytes; returns the data of every event completed by them.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }
}

/// The `after` for the next poll: the server's `next`, never going backwards.
fn next_cursor(after: i64, logs: &[LogEntry], next: i64) -> i64 {
    let last_seq = logs.last().map_or(after, |e| e.seq);
    next.max(last_seq).max(after)
}

fn keep_last(tail: &mut VecDeque<LogEntry>, entries: Vec<LogEntry>, n: usize) {
    tail.extend(entries);
    while tail.len() > n {
        tail.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64) -> LogEntry {
        LogEntry {
            seq,
            function: None,
            ts_ms: 0,
            request_id: None,
            stream: "stdout".into(),
            line: seq.to_string(),
            level: None,
            trace_id: None,
        }
    }

    #[test]
    fn sse_events_are_split_and_comments_skipped() {
        let mut b = SseBuffer::default();
        assert!(b.push(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(b.push(b":1}\n\ndata: x\n"), vec![r#"{"a":1}"#.to_string()]);
        assert_eq!(b.push(b"\n"), vec!["x".to_string()]);
        assert!(b.pending.is_empty());
    }

    #[test]
    fn cursor_never_goes_back() {
        assert_eq!(next_cursor(5, &[], 5), 5);
        assert_eq!(next_cursor(5, &[], 0), 5);
        assert_eq!(next_cursor(5, &[entry(6), entry(9)], 9), 9);
        assert_eq!(next_cursor(5, &[entry(6), entry(9)], 3), 9);
    }

    #[test]
    fn limit_keeps_newest() {
        let mut tail = VecDeque::new();
        keep_last(&mut tail, vec![entry(1), entry(2), entry(3)], 2);
        keep_last(&mut tail, vec![entry(4)], 2);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        let mut none = VecDeque::new();
        keep_last(&mut none, vec![entry(1)], 0);
        assert!(none.is_empty());
    }
}
