//! `nimbus logs`: `GET /v1/functions/{name}/logs`, optionally following with `after=next`.

use crate::cli::LogsArgs;
use crate::client::{Client, LogEntry};
use crate::output::log_line;
use anyhow::Result;
use nimbus_core::FunctionName;
use std::collections::VecDeque;
use std::time::Duration;

const PAGE: usize = 1000;
const POLL: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, args: LogsArgs, json: bool) -> Result<()> {
    let name = FunctionName::parse(&args.name)?;
    let show = |entries: &[LogEntry]| -> Result<()> {
        let mut text = String::new();
        for e in entries {
            if json {
                text.push_str(&serde_json::to_string(e)?);
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
        let page = client.logs(name.as_str(), after, PAGE).await?;
        if page.logs.is_empty() {
            break;
        }
        let next = next_cursor(after, &page.logs, page.next);
        match args.limit {
            Some(n) => keep_last(&mut tail, page.logs, n),
            None => show(&page.logs)?,
        }
        if next <= after {
            break;
        }
        after = next;
    }
    show(tail.make_contiguous())?;

    if !args.follow {
        return Ok(());
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(POLL) => {}
        }
        let page = client.logs(name.as_str(), after, PAGE).await?;
        show(&page.logs)?;
        after = next_cursor(after, &page.logs, page.next);
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
            ts_ms: 0,
            request_id: None,
            stream: "stdout".into(),
            line: seq.to_string(),
        }
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
