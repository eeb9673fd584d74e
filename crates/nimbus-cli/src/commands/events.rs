//! `nimbus events NAME`: a function's asynchronous events (`GET /v1/functions/{name}/events`);
//! `--redrive ID` sends a dead one again (`POST /v1/functions/{name}/events/{id}/redrive`).

use crate::cli::EventsArgs;
use crate::client::Client;
use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

pub async fn run(client: &Client, args: EventsArgs, json: bool) -> Result<()> {
    if let Some(id) = &args.redrive {
        let req = client.request(
            Method::POST,
            &["v1", "functions", &args.name, "events", id, "redrive"],
        );
        let v = client.json(req).await?;
        if json {
            return super::print_json(&v);
        }
        return super::print(format!(
            "redriven: {id} is pending again (see `nimbus events {}`)\n",
            args.name
        ));
    }
    let mut req = client
        .request(Method::GET, &["v1", "functions", &args.name, "events"])
        .query(&[("limit", args.limit.to_string())]);
    if let Some(s) = &args.status {
        req = req.query(&[("status", s)]);
    }
    let v = client.json(req).await?;
    if json {
        return super::print_json(&v);
    }
    super::print(render(&v, now_ms()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The events table, a line of counts and the circuit state.
fn render(v: &Value, now: i64) -> String {
    let mut out = String::new();
    let counts = v["counts"].as_object().map(|c| {
        c.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let circuit = v["circuit"]["state"].as_str().unwrap_or("closed");
    out.push_str(&format!(
        "events: {} · circuit {circuit}\n",
        counts
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "none".into())
    ));
    let events = v["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "{:<36}  {:<9}  {:>8}  {:>4}  {}\n",
        "REQUEST ID", "STATUS", "ATTEMPTS", "AGE", "LAST ERROR"
    ));
    for e in events {
        let err: String = e["last_error"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect();
        out.push_str(&format!(
            "{:<36}  {:<9}  {:>8}  {:>4}  {}\n",
            e["id"].as_str().unwrap_or("?"),
            e["status"].as_str().unwrap_or("?"),
            e["attempts"].as_u64().unwrap_or(0),
            age(now - e["created_ms"].as_i64().unwrap_or(now)),
            err
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_events_counts_and_circuit() {
        let v = serde_json::json!({
            "events": [{"id": "abc", "status": "dead", "attempts": 3, "created_ms": 1000, "last_error": "Error: boom"}],
            "counts": {"dead": 1, "succeeded": 4},
            "circuit": {"state": "open", "reopens_in_ms": 100},
        });
        let out = render(&v, 121_000);
        assert!(
            out.starts_with("events: dead 1, succeeded 4 · circuit open\n"),
            "{out}"
        );
        assert!(
            out.contains("abc")
                && out.contains("dead")
                && out.contains("2m")
                && out.contains("Error: boom"),
            "{out}"
        );
        let empty = render(
            &serde_json::json!({"events": [], "counts": {}, "circuit": {"state": "closed"}}),
            0,
        );
        assert_eq!(empty, "events: none · circuit closed\n");
    }
}
