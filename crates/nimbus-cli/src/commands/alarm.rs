//! `nimbus alarm put|ls|rm`: alarms on a function's metrics (`/v1/alarms`).

use crate::cli::{AlarmArgs, AlarmCommand};
use crate::client::Client;
use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

pub async fn run(client: &Client, args: AlarmArgs, json: bool) -> Result<()> {
    match args.command {
        AlarmCommand::Put {
            name,
            function,
            metric,
            comparison,
            threshold,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            treat_missing_data,
            description,
        } => {
            let mut body = json!({
                "function": function,
                "metric": metric,
                "comparison": comparison,
                "threshold": threshold,
                "period": period,
                "evaluation_periods": evaluation_periods,
                "treat_missing_data": treat_missing_data,
            });
            if let Some(m) = datapoints_to_alarm {
                body["datapoints_to_alarm"] = json!(m);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let v = client
                .json(
                    client
                        .request(Method::PUT, &["v1", "alarms", &name])
                        .json(&body),
                )
                .await?;
            if json {
                return super::print_json(&v);
            }
            super::print(format!(
                "alarm {name}: {} {} {} on {} ({})\n",
                v["metric"].as_str().unwrap_or("?"),
                v["comparison"].as_str().unwrap_or("?"),
                super::stats::number(v["threshold"].as_f64().unwrap_or(0.0)),
                v["function"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?"),
            ))
        }
        AlarmCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, &["v1", "alarms"]))
                .await?;
            if json {
                return super::print_json(&v);
            }
            super::print(render(&v))
        }
        AlarmCommand::Rm { name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "alarms", &name]))
                .await?;
            if json {
                return super::print_json(&json!({"deleted": name}));
            }
            super::print(format!("alarm {name} removed\n"))
        }
    }
}

fn render(v: &Value) -> String {
    let alarms = v["alarms"].as_array().cloned().unwrap_or_default();
    if alarms.is_empty() {
        return "no alarms\n".into();
    }
    let mut out = format!(
        "{:<24}  {:<17}  {:<20}  {}\n",
        "NAME", "STATE", "FUNCTION", "RULE"
    );
    for a in alarms {
        out.push_str(&format!(
            "{:<24}  {:<17}  {:<20}  {} {} {} ({} of {} × {} s, missing: {})\n",
            a["name"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            a["function"].as_str().unwrap_or("?"),
            a["metric"].as_str().unwrap_or("?"),
            a["comparison"].as_str().unwrap_or("?"),
            super::stats::number(a["threshold"].as_f64().unwrap_or(0.0)),
            a["datapoints_to_alarm"],
            a["evaluation_periods"],
            a["period"],
            a["treat_missing_data"].as_str().unwrap_or("?"),
        ));
    }
    out
}
