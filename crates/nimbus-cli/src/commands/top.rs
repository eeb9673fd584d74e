//! `nimbus top`: the functions sorted by load (`GET /v1/metrics/summary`), refreshed each
//! second in a terminal view (ratatui; `q`, Esc or Ctrl-C quits). When stdout is not a
//! terminal it prints one snapshot as text and exits, so scripts and tests can read it.

use crate::cli::TopArgs;
use crate::client::Client;
use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row, Table};
use reqwest::Method;
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

const HEADER: [&str; 8] = [
    "FUNCTION",
    "INVOKES",
    "ERRORS",
    "THROTTLES",
    "P50 MS",
    "P99 MS",
    "MAX CONC",
    "IN FLIGHT",
];

async fn summary(client: &Client, since: &str) -> Result<Value> {
    client
        .json(
            client
                .request(Method::GET, &["v1", "metrics", "summary"])
                .query(&[("since", since)]),
        )
        .await
}

/// The table's rows: busiest first (in flight, then invocations in the window).
fn rows(v: &Value) -> Vec<[String; 8]> {
    let mut fs = v["functions"].as_array().cloned().unwrap_or_default();
    let n = |f: &Value, k: &str| f[k].as_u64().unwrap_or(0);
    fs.sort_by(|a, b| {
        (n(b, "in_flight"), n(b, "invocations")).cmp(&(n(a, "in_flight"), n(a, "invocations")))
    });
    let ms = |x: &Value| x.as_f64().map_or("-".into(), super::stats::number);
    fs.iter()
        .map(|f| {
            [
                f["function"].as_str().unwrap_or("?").to_string(),
                n(f, "invocations").to_string(),
                n(f, "errors").to_string(),
                n(f, "throttles").to_string(),
                ms(&f["duration_p50_ms"]),
                ms(&f["duration_p99_ms"]),
                n(f, "max_concurrency").to_string(),
                n(f, "in_flight").to_string(),
            ]
        })
        .collect()
}

fn text(v: &Value, since: &str) -> String {
    let mut out = format!("nimbus top · since {since}\n");
    let line = |c: &[String]| {
        format!(
            "{:<32} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        )
    };
    out.push_str(&line(&HEADER.map(String::from)));
    let rows = rows(v);
    if rows.is_empty() {
        out.push_str("no invocations in this window\n");
    }
    for r in rows {
        out.push_str(&line(&r));
    }
    out
}

pub async fn run(client: &Client, args: TopArgs, json: bool) -> Result<()> {
    if json || !std::io::stdout().is_terminal() {
        let v = summary(client, &args.since).await?;
        if json {
            return super::print_json(&v);
        }
        return super::print(text(&v, &args.since));
    }
    let mut terminal = ratatui::init();
    let result = live(client, &args.since, &mut terminal).await;
    ratatui::restore();
    result
}

async fn live(client: &Client, since: &str, terminal: &mut ratatui::DefaultTerminal) -> Result<()> {
    loop {
        let status = match summary(client, since).await {
            Ok(v) => Ok(rows(&v)),
            Err(e) => Err(e.to_string()),
        };
        terminal.draw(|frame| {
            let title = format!(" nimbus top · since {since} · q quits ");
            let block = Block::bordered().title(title);
            let body: Vec<Row> = match &status {
                Ok(rows) => rows.iter().map(|r| Row::new(r.clone())).collect(),
                Err(e) => vec![Row::new(vec![format!("error: {e}")])],
            };
            let widths = [
                Constraint::Min(20),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
                Constraint::Length(9),
            ];
            let table = Table::new(body, widths)
                .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
                .block(block);
            frame.render_widget(table, frame.area());
        })?;
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            if let Event::Key(k) = event::read()? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn busiest_first() {
        let v = json!({"functions": [
            {"function": "idle", "invocations": 9, "in_flight": 0, "duration_p50_ms": null},
            {"function": "busy", "invocations": 1, "in_flight": 2, "duration_p50_ms": 1.25},
        ]});
        let r = rows(&v);
        assert_eq!(r[0][0], "busy");
        assert_eq!(r[0][4], "1.25");
        assert_eq!(r[1][4], "-");
        assert!(text(&v, "5m").lines().nth(2).unwrap().starts_with("busy"));
    }
}
