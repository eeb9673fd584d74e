//! `nimbus bus …`: event buses, rules and PutEvents (`/v1/buses/…`).

use crate::cli::{BusArgs, BusCommand};
use crate::client::Client;
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

pub async fn run(client: &Client, args: BusArgs, json_out: bool) -> Result<()> {
    match args.command {
        BusCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, &["v1", "buses"]))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            let mut out = String::new();
            for b in v["buses"].as_array().into_iter().flatten() {
                out.push_str(&format!("{}\n", b["name"].as_str().unwrap_or("?")));
            }
            super::print(out)
        }
        BusCommand::Create { bus } => {
            let v = client
                .json(client.request(Method::PUT, &["v1", "buses", &bus]))
                .await?;
            show(&v, json_out, format!("event bus {bus} ready\n"))
        }
        BusCommand::Rm { bus } => {
            client
                .send(client.request(Method::DELETE, &["v1", "buses", &bus]))
                .await?;
            show(
                &json!({"removed": bus}),
                json_out,
                format!("removed event bus {bus}\n"),
            )
        }
        BusCommand::PutEvents {
            bus,
            source,
            detail_type,
            detail,
            resources,
        } => {
            serde_json::from_str::<Value>(&detail).context("--detail must be a JSON object")?;
            let body = json!({"Entries": [{
                "Source": source, "DetailType": detail_type, "Detail": detail,
                "Resources": resources,
            }]});
            let v = client
                .json(
                    client
                        .request(Method::POST, &["v1", "buses", &bus, "events"])
                        .json(&body),
                )
                .await?;
            let e = &v["Entries"][0];
            if let Some(code) = e["ErrorCode"].as_str() {
                anyhow::bail!(
                    "the event was refused: {} ({code})",
                    e["ErrorMessage"].as_str().unwrap_or("")
                );
            }
            show(
                &v,
                json_out,
                format!("{}\n", e["EventId"].as_str().unwrap_or("?")),
            )
        }
        BusCommand::Rules { bus } => {
            let v = client
                .json(client.request(Method::GET, &["v1", "buses", &bus, "rules"]))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(render_rules(&v))
        }
        BusCommand::Rule {
            bus,
            name,
            pattern,
            schedule,
            timezone,
            targets,
            disabled,
        } => {
            let mut body = json!({ "targets": targets, "enabled": !disabled });
            if let Some(p) = pattern {
                body["pattern"] =
                    serde_json::from_str(&p).context("--pattern must be a JSON event pattern")?;
            }
            if let Some(s) = schedule {
                body["schedule"] = s.into();
            }
            if let Some(tz) = timezone {
                body["timezone"] = tz.into();
            }
            let v = client
                .json(
                    client
                        .request(Method::PUT, &["v1", "buses", &bus, "rules", &name])
                        .json(&body),
                )
                .await?;
            show(&v, json_out, format!("rule {name} on bus {bus} saved\n"))
        }
        BusCommand::RmRule { bus, name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "buses", &bus, "rules", &name]))
                .await?;
            show(
                &json!({"removed": name}),
                json_out,
                format!("removed rule {name} from bus {bus}\n"),
            )
        }
    }
}

fn show(v: &Value, json_out: bool, text: String) -> Result<()> {
    if json_out {
        super::print_json(v)
    } else {
        super::print(text)
    }
}

/// One line per rule: name, state, pattern or schedule, targets.
fn render_rules(v: &Value) -> String {
    let rules = v["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        return "no rules\n".into();
    }
    let mut out = format!(
        "{:<24}  {:<8}  {:<40}  TARGETS\n",
        "RULE", "STATE", "MATCHES"
    );
    for r in rules {
        let what = match r["schedule"].as_str() {
            Some(s) => match r["timezone"].as_str() {
                Some(tz) => format!("{s} {tz}"),
                None => s.to_string(),
            },
            None => r["pattern"].to_string(),
        };
        let targets: Vec<String> = r["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let arn = t["arn"].as_str().unwrap_or("?");
                arn.rsplit_once(":function:")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or_else(|| arn.to_string())
            })
            .collect();
        out.push_str(&format!(
            "{:<24}  {:<8}  {:<40}  {}\n",
            r["name"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            what,
            targets.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_rules_render() {
        let v = json!({"rules": [
            {"name": "tick", "state": "ENABLED", "schedule": "rate(5 minutes)", "timezone": null,
             "targets": [{"arn": "arn:aws:lambda:us-east-1:000000000000:function:hello"}]},
            {"name": "orders", "state": "DISABLED", "schedule": null, "pattern": {"source": ["shop"]},
             "targets": []},
        ]});
        let out = render_rules(&v);
        assert!(
            out.contains("tick") && out.contains("rate(5 minutes)") && out.contains("hello"),
            "{out}"
        );
        assert!(
            out.contains("DISABLED") && out.contains(r#"{"source":["shop"]}"#),
            "{out}"
        );
        assert_eq!(render_rules(&json!({"rules": []})), "no rules\n");
    }
}
