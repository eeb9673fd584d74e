//! Workflows (Step Functions state machines), through the Step Functions JSON API:
//! `nimbus flows ls|start|describe|history|stop|rm`, and how `deploy` and `up` apply a
//! manifest's `[[workflows]]` (after everything else: the definitions name functions,
//! queues and buses): a missing machine is created, one whose definition or role changed
//! is updated, and one line per workflow says which.

use crate::cli::{FlowsArgs, FlowsCommand};
use crate::client::{ApiError, Client};
use crate::errors::{FunctionFailed, Hinted};
use anyhow::{bail, Context, Result};
use nimbus_core::manifest::workflows::{execution_arn, state_machine_arn, valid_name, ROUTE_TAG};
use nimbus_core::manifest::ManifestWorkflow;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Executions listed at most (by `ls NAME`, and searched by a bare execution name).
const LIST_MAX: usize = 1000;
/// Statuses an execution ends in.
const TERMINAL: [&str; 4] = ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"];

/// A manifest workflow ready to deploy: the definition read and substituted.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub spec: ManifestWorkflow,
    /// The definition file.
    pub path: PathBuf,
    /// Its text, substitutions made.
    pub definition: String,
}

async fn call(client: &Client, op: &str, body: Value) -> Result<Value> {
    client
        .aws_json(&format!("AWSStepFunctions.{op}"), &body)
        .await
        .map_err(with_hint)
}

/// The error code of a Step Functions error reply.
fn code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ApiError>().map(|a| a.kind.as_str())
}

/// Adds what to do next to the Step Functions errors the CLI meets most.
fn with_hint(e: anyhow::Error) -> anyhow::Error {
    let hint = match code(&e) {
        Some("StateMachineDoesNotExist") => {
            "`nimbus flows ls` lists the state machines; declare one with [[workflows]] in \
             nimbus.toml and run `nimbus deploy`"
        }
        Some("ExecutionDoesNotExist") => "`nimbus flows ls MACHINE` lists a machine's executions",
        Some("ExecutionAlreadyExists") => {
            "execution names are unique per machine: pick another --name, or leave it out"
        }
        Some("StateMachineDeleting") => {
            "it is being deleted: stop its running executions (`nimbus flows ls MACHINE \
             --status RUNNING`, `nimbus flows stop`), then try again"
        }
        Some("InvalidExecutionInput") => "--input takes JSON text, or @FILE holding JSON",
        Some("InvalidDefinition") => {
            "fix the state named in the message; `nimbus deploy` sends the definition again"
        }
        Some("UnknownOperationException") | Some("UnknownOperation") => {
            "this server has no Step Functions API: upgrade it"
        }
        _ => return e,
    };
    let message = e
        .downcast_ref::<ApiError>()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Hinted::error(message, hint)
}

// ---- the manifest's [[workflows]] ----

/// The `[[workflows]]` of `dir/nimbus.toml` and its includes, definition paths resolved
/// against `dir` (nothing read).
pub fn declared(dir: &Path) -> Result<Vec<(ManifestWorkflow, PathBuf)>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<(ManifestWorkflow, PathBuf)>) -> Result<()> {
        if depth > 8 {
            bail!("includes nest deeper than 8 levels at {}", dir.display());
        }
        let p = super::deploy::read_manifest(dir)?;
        for w in p.workflows {
            if out.iter().any(|(o, _)| o.name == w.name) {
                bail!(
                    "workflow {} is declared twice in the manifest and its includes",
                    w.name
                );
            }
            let path = dir.join(&w.definition);
            out.push((w, path));
        }
        for inc in p.include {
            walk(&dir.join(inc), depth + 1, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    Ok(out)
}

/// The definition files of the manifest's workflows (canonical when they exist), which
/// `nimbus up` watches.
pub fn definition_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(declared(dir)?
        .into_iter()
        .map(|(_, p)| p.canonicalize().unwrap_or(p))
        .collect())
}

/// Reads each workflow's definition, makes its substitutions and checks it is JSON.
pub fn manifest_workflows(dir: &Path) -> Result<Vec<Workflow>> {
    declared(dir)?
        .into_iter()
        .map(|(spec, path)| {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Hinted::error(
                    format!(
                        "workflow {}: cannot read its definition {}: {e}",
                        spec.name,
                        path.display()
                    ),
                    "`definition` is a path relative to the nimbus.toml that declares the workflow",
                )
            })?;
            let definition = spec.substitute(&text)?;
            if let Err(e) = serde_json::from_str::<Value>(&definition) {
                bail!(
                    "workflow {}: {} is not valid JSON (after substitutions): {e}",
                    spec.name,
                    path.display()
                );
            }
            Ok(Workflow {
                spec,
                path,
                definition,
            })
        })
        .collect()
}

/// Creates the missing state machines and updates those whose definition or role
/// changed; one line per workflow (`workflow orders: created|updated|unchanged`).
pub async fn apply(client: &Client, workflows: &[Workflow]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for w in workflows {
        let name = &w.spec.name;
        let arn = state_machine_arn(name);
        let current = match client
            .aws_json(
                "AWSStepFunctions.DescribeStateMachine",
                &json!({ "stateMachineArn": arn }),
            )
            .await
        {
            Ok(v) => Some(v),
            Err(e) if code(&e) == Some("StateMachineDoesNotExist") => None,
            Err(e) => return Err(with_hint(e).context(format!("cannot read workflow {name}"))),
        };
        let refused = || format!("workflow {name}: the server refused {}", w.path.display());
        let outcome = match current {
            None => {
                let mut body = json!({
                    "name": name,
                    "definition": w.definition,
                    "roleArn": w.spec.role_arn,
                    "type": w.spec.machine_type,
                });
                if let Some(r) = w.spec.route_tag() {
                    body["tags"] = json!([{ "key": ROUTE_TAG, "value": r }]);
                }
                call(client, "CreateStateMachine", body)
                    .await
                    .with_context(refused)?;
                "created"
            }
            Some(cur) => {
                let cur_type = cur["type"].as_str().unwrap_or("STANDARD");
                if cur_type != w.spec.machine_type {
                    return Err(Hinted::error(
                        format!(
                            "workflow {name}: it is {cur_type} on the server and {} in the \
                             manifest; a state machine's type cannot change",
                            w.spec.machine_type
                        ),
                        format!(
                            "remove it with `nimbus flows rm {name}` (its executions go with \
                             it), then deploy again"
                        ),
                    ));
                }
                let routes_changed = sync_routes(client, &arn, &w.spec)
                    .await
                    .with_context(refused)?;
                if cur["definition"].as_str() == Some(w.definition.as_str())
                    && cur["roleArn"].as_str() == Some(w.spec.role_arn.as_str())
                {
                    if routes_changed {
                        "updated"
                    } else {
                        "unchanged"
                    }
                } else {
                    call(
                        client,
                        "UpdateStateMachine",
                        json!({
                            "stateMachineArn": arn,
                            "definition": w.definition,
                            "roleArn": w.spec.role_arn,
                        }),
                    )
                    .await
                    .with_context(refused)?;
                    "updated"
                }
            }
        };
        lines.push(format!("workflow {name}: {outcome}"));
    }
    Ok(lines)
}

/// Makes the machine's route tag say what the manifest says; whether it changed.
async fn sync_routes(client: &Client, arn: &str, spec: &ManifestWorkflow) -> Result<bool> {
    let tags = call(client, "ListTagsForResource", json!({ "resourceArn": arn })).await?;
    let current = tags["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == ROUTE_TAG)
        .and_then(|t| t["value"].as_str())
        .map(str::to_string);
    let wanted = spec.route_tag();
    if current == wanted {
        return Ok(false);
    }
    match wanted {
        Some(v) => {
            call(
                client,
                "TagResource",
                json!({ "resourceArn": arn, "tags": [{ "key": ROUTE_TAG, "value": v }] }),
            )
            .await?
        }
        None => {
            call(
                client,
                "UntagResource",
                json!({ "resourceArn": arn, "tagKeys": [ROUTE_TAG] }),
            )
            .await?
        }
    };
    Ok(true)
}

// ---- nimbus flows ----

pub async fn run(client: &Client, args: FlowsArgs, json_out: bool) -> Result<()> {
    match args.command {
        FlowsCommand::Ls { name: None, .. } => {
            let machines =
                list_all(client, "ListStateMachines", json!({}), "stateMachines").await?;
            if json_out {
                return super::print_json(&json!({ "stateMachines": machines }));
            }
            if machines.is_empty() {
                return super::print(
                    "no state machines — declare one with [[workflows]] in nimbus.toml and run `nimbus deploy`\n",
                );
            }
            let rows: Vec<Vec<String>> = machines
                .iter()
                .map(|m| {
                    vec![
                        str_of(m, "name"),
                        str_of(m, "type"),
                        timestamp(&m["creationDate"]),
                    ]
                })
                .collect();
            super::print(crate::output::table(&["NAME", "TYPE", "CREATED"], &rows))
        }
        FlowsCommand::Ls {
            name: Some(name),
            status,
        } => {
            let mut body = json!({ "stateMachineArn": machine_arn(&name) });
            if let Some(s) = status {
                body["statusFilter"] = json!(s.to_ascii_uppercase());
            }
            let executions = list_all(client, "ListExecutions", body, "executions").await?;
            if json_out {
                return super::print_json(&json!({ "executions": executions }));
            }
            if executions.is_empty() {
                return super::print(format!(
                    "no executions of {name} — start one with `nimbus flows start {name}`\n"
                ));
            }
            let rows: Vec<Vec<String>> = executions
                .iter()
                .map(|e| {
                    vec![
                        str_of(e, "name"),
                        str_of(e, "status"),
                        timestamp(&e["startDate"]),
                        duration(&e["startDate"], &e["stopDate"]),
                    ]
                })
                .collect();
            super::print(crate::output::table(
                &["EXECUTION", "STATUS", "STARTED", "DURATION"],
                &rows,
            ))
        }
        FlowsCommand::Start {
            machine,
            input,
            exec_name,
            wait,
        } => {
            let input = read_input(input.as_deref())?;
            let mut body = json!({ "stateMachineArn": machine_arn(&machine), "input": input });
            if let Some(n) = exec_name {
                body["name"] = json!(n);
            }
            let started = call(client, "StartExecution", body).await?;
            let arn = started["executionArn"]
                .as_str()
                .context("the server's StartExecution reply has no executionArn")?
                .to_string();
            if !wait {
                return if json_out {
                    super::print_json(&started)
                } else {
                    super::print(format!("{arn}\n"))
                };
            }
            if !json_out {
                eprintln!("started {arn}");
            }
            let done = wait_for(client, &arn).await?;
            if json_out {
                super::print_json(&done)?;
            } else if done["status"] == "SUCCEEDED" {
                super::print(format!("{}\n", done["output"].as_str().unwrap_or("null")))?;
            }
            finished(&done, &arn)
        }
        FlowsCommand::Describe { execution } => {
            let arn = resolve_execution(client, &execution).await?;
            let d = call(client, "DescribeExecution", json!({ "executionArn": arn })).await?;
            if json_out {
                return super::print_json(&d);
            }
            super::print(describe_text(&d))
        }
        FlowsCommand::History { execution } => {
            let arn = resolve_execution(client, &execution).await?;
            let events = list_all(
                client,
                "GetExecutionHistory",
                json!({ "executionArn": arn }),
                "events",
            )
            .await?;
            if json_out {
                return super::print_json(&json!({ "events": events }));
            }
            super::print(render_history(&events))
        }
        FlowsCommand::Stop {
            execution,
            error,
            cause,
        } => {
            let arn = resolve_execution(client, &execution).await?;
            let mut body = json!({ "executionArn": arn });
            if let Some(e) = error {
                body["error"] = json!(e);
            }
            if let Some(c) = cause {
                body["cause"] = json!(c);
            }
            let v = call(client, "StopExecution", body).await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(format!("stopped {}\n", short_execution(&arn)))
        }
        FlowsCommand::Rm { name } => {
            let v = call(
                client,
                "DeleteStateMachine",
                json!({ "stateMachineArn": machine_arn(&name) }),
            )
            .await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(format!("removed state machine {name}\n"))
        }
    }
}

/// A machine's ARN from its name (an ARN is kept).
fn machine_arn(name: &str) -> String {
    if name.starts_with("arn:") {
        name.to_string()
    } else {
        state_machine_arn(name)
    }
}

/// `MACHINE/EXEC` for an execution ARN (the ARN itself when it has another shape).
fn short_execution(arn: &str) -> String {
    let p: Vec<&str> = arn.split(':').collect();
    match p.as_slice() {
        [_, _, _, _, _, _, m, e, ..] => format!("{m}/{e}"),
        _ => arn.to_string(),
    }
}

/// `--input`: JSON text, `@FILE`, or `{}` when absent; checked here so the mistake is
/// reported before anything starts.
fn read_input(input: Option<&str>) -> Result<String> {
    let text = match input {
        None => return Ok("{}".into()),
        Some(s) => match s.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the input file {file}"))?,
            None => s.to_string(),
        },
    };
    if let Err(e) = serde_json::from_str::<Value>(&text) {
        return Err(Hinted::error(
            format!("--input is not JSON: {e}"),
            "pass JSON text (--input '{\"x\": 1}') or a file holding JSON (--input @input.json)",
        ));
    }
    Ok(text)
}

/// Every item of a paginated list operation (up to [`LIST_MAX`]).
async fn list_all(client: &Client, op: &str, body: Value, key: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut body = body;
    body["maxResults"] = json!(1000);
    loop {
        let page = call(client, op, body.clone()).await?;
        out.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["nextToken"].as_str() {
            Some(t) if !t.is_empty() && out.len() < LIST_MAX => body["nextToken"] = json!(t),
            _ => break,
        }
    }
    Ok(out)
}

/// An execution named by its ARN, `MACHINE/EXEC`, or (when exactly one machine has an
/// execution of that name) its bare name.
async fn resolve_execution(client: &Client, s: &str) -> Result<String> {
    if s.starts_with("arn:") {
        return Ok(s.to_string());
    }
    if let Some((machine, exec)) = s.split_once('/') {
        return Ok(execution_arn(machine, exec));
    }
    let usage = "name an execution by its ARN or as MACHINE/EXECUTION; `nimbus flows ls MACHINE` lists a machine's executions";
    if !valid_name(s) {
        return Err(Hinted::error(
            format!("{s:?} is not an execution name"),
            usage,
        ));
    }
    let mut found = Vec::new();
    for m in list_all(client, "ListStateMachines", json!({}), "stateMachines").await? {
        let body = json!({ "stateMachineArn": m["stateMachineArn"] });
        for e in list_all(client, "ListExecutions", body, "executions").await? {
            if e["name"] == s {
                found.extend(e["executionArn"].as_str().map(str::to_string));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Hinted::error(format!("no execution is named {s}"), usage)),
        _ => Err(Hinted::error(
            format!(
                "{} executions are named {s}: {}",
                found.len(),
                found
                    .iter()
                    .map(|a| short_execution(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "name one as MACHINE/EXECUTION",
        )),
    }
}

/// Polls DescribeExecution until the execution ends.
async fn wait_for(client: &Client, arn: &str) -> Result<Value> {
    let mut delay = Duration::from_millis(50);
    loop {
        let d = call(client, "DescribeExecution", json!({ "executionArn": arn })).await?;
        if d["status"].as_str().is_some_and(|s| TERMINAL.contains(&s)) {
            return Ok(d);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Ok for a succeeded execution, else the failure (exit status 1).
fn finished(d: &Value, arn: &str) -> Result<()> {
    let status = d["status"].as_str().unwrap_or("?");
    if status == "SUCCEEDED" {
        return Ok(());
    }
    let mut message = format!("execution {status}");
    if let Some(e) = d["error"].as_str() {
        message.push_str(&format!(": {e}"));
    }
    if let Some(c) = d["cause"].as_str().filter(|c| !c.is_empty()) {
        message.push_str(&format!(": {}", one_line(c, 500)));
    }
    Err(anyhow::Error::new(FunctionFailed {
        message,
        hint: Some(format!(
            "`nimbus flows history {}` shows where it failed",
            short_execution(arn)
        )),
    }))
}

fn describe_text(d: &Value) -> String {
    let arn = d["executionArn"].as_str().unwrap_or("");
    let mut rows = vec![
        ("execution", arn.to_string()),
        ("machine", {
            let m = d["stateMachineArn"].as_str().unwrap_or("");
            m.rsplit(':').next().unwrap_or(m).to_string()
        }),
        ("status", str_of(d, "status")),
        ("started", timestamp(&d["startDate"])),
    ];
    if !d["stopDate"].is_null() {
        rows.push((
            "stopped",
            format!(
                "{} (after {})",
                timestamp(&d["stopDate"]),
                duration(&d["startDate"], &d["stopDate"])
            ),
        ));
    }
    for k in ["input", "output", "error", "cause"] {
        if let Some(v) = d[k].as_str() {
            rows.push((k, one_line(v, 2000)));
        }
    }
    rows.iter().map(|(k, v)| format!("{k:<10} {v}\n")).collect()
}

fn str_of(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("-").to_string()
}

/// Epoch seconds → `2026-12-05T10:55:12` (UTC).
fn timestamp(v: &Value) -> String {
    match v.as_f64() {
        Some(s) => crate::output::short_timestamp(&crate::output::format_ts_ms(
            (s * 1000.0).round() as i64,
        )),
        None => "-".into(),
    }
}

/// The time between two epoch-seconds values, or `running`.
fn duration(start: &Value, stop: &Value) -> String {
    match (start.as_f64(), stop.as_f64()) {
        (Some(a), Some(b)) => human_duration(b - a),
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

fn human_duration(s: f64) -> String {
    let s = s.max(0.0);
    if s < 1.0 {
        format!("{}ms", (s * 1000.0).round() as u64)
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, (s % 3600.0 / 60.0) as u64)
    }
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

// ---- history ----

/// A level the history opens: a Parallel's branches, a Map's iterations, or the open
/// iterations of a Map (concurrent iterations share one level: the events do not say
/// which iteration they belong to).
#[derive(Debug, PartialEq)]
enum Level {
    Parallel,
    Map,
    Iterations(u32),
}

/// Pops the levels down to and including the innermost `level`, if one is open.
fn close(stack: &mut Vec<Level>, level: Level) {
    if let Some(i) = stack
        .iter()
        .rposition(|l| std::mem::discriminant(l) == std::mem::discriminant(&level))
    {
        stack.truncate(i);
    }
}

/// The event's `…EventDetails` object.
fn details(e: &Value) -> &Value {
    e.as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, v)| k.ends_with("EventDetails") && v.is_object())
                .map(|(_, v)| v)
        })
        .unwrap_or(&Value::Null)
}

/// The detail worth a glance: the state's name, the error, the index of an iteration…
fn key_detail(ty: &str, d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    if let Some(err) = d["error"].as_str() {
        let mut out = String::new();
        if let Some(state) = d["state"].as_str() {
            out.push_str(&format!("{state}: "));
        }
        out.push_str(err);
        if let Some(c) = d["cause"].as_str().filter(|c| !c.is_empty()) {
            out.push_str(&format!(": {}", one_line(c, 120)));
        }
        return out;
    }
    match ty {
        t if t.starts_with("MapIteration") => format!("{}[{}]", s("name"), d["index"]),
        t if t.ends_with("StateEntered") || t.ends_with("StateExited") => s("name"),
        "MapStateStarted" => format!("{} items", d["length"]),
        "TaskScheduled" => format!("{}:{}", s("resourceType"), s("resource")),
        "LambdaFunctionScheduled" => {
            let r = s("resource");
            r.rsplit_once(":function:")
                .map_or(r.clone(), |(_, f)| f.to_string())
        }
        "ExecutionStarted" => one_line(&s("input"), 80),
        "ExecutionSucceeded" | "TaskSucceeded" | "LambdaFunctionSucceeded" => {
            one_line(&s("output"), 80)
        }
        "ExecutionRedriven" => format!("redrive {}", d["redriveCount"]),
        _ => String::new(),
    }
}

/// A readable history: one line per event, the time since the first event, the event's
/// type and its key detail; a Parallel's branches and a Map's iterations are indented
/// under it.
pub fn render_history(events: &[Value]) -> String {
    let t0 = events
        .iter()
        .find_map(|e| e["timestamp"].as_f64())
        .unwrap_or(0.0);
    let mut stack: Vec<Level> = Vec::new();
    let mut lines = Vec::new();
    for e in events {
        let ty = e["type"].as_str().unwrap_or("?");
        let depth = match ty {
            "ParallelStateStarted" => {
                stack.push(Level::Parallel);
                stack.len() - 1
            }
            "ParallelStateSucceeded" | "ParallelStateFailed" | "ParallelStateAborted" => {
                close(&mut stack, Level::Parallel);
                stack.len()
            }
            "MapStateStarted" => {
                stack.push(Level::Map);
                stack.len() - 1
            }
            "MapIterationStarted" => {
                match stack.last_mut() {
                    Some(Level::Iterations(n)) => *n += 1,
                    _ => stack.push(Level::Iterations(1)),
                }
                stack.len() - 1
            }
            "MapIterationSucceeded" | "MapIterationFailed" | "MapIterationAborted" => {
                let depth = stack.len().saturating_sub(1);
                match stack.last_mut() {
                    Some(Level::Iterations(n)) => {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            stack.pop();
                        }
                        depth
                    }
                    _ => stack.len(),
                }
            }
            "MapStateSucceeded" | "MapStateFailed" | "MapStateAborted" => {
                close(&mut stack, Level::Map);
                stack.len()
            }
            "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionAborted" | "ExecutionTimedOut" => {
                stack.clear();
                0
            }
            _ => stack.len(),
        };
        let time = match e["timestamp"].as_f64() {
            Some(t) => format!("+{:.3}s", (t - t0).max(0.0)),
            None => "?".into(),
        };
        let label = format!("{}{ty}", "  ".repeat(depth));
        lines.push((time, label, key_detail(ty, details(e))));
    }
    let time_w = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let label_w = lines
        .iter()
        .map(|l| l.1.chars().count())
        .max()
        .unwrap_or(0)
        .min(48);
    let mut out = String::new();
    for (time, label, detail) in lines {
        let line = format!("{time:>time_w$}  {label:<label_w$}  {detail}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: u64, t: f64, ty: &str, details: Value) -> Value {
        let mut e = json!({"id": id, "previousEventId": id - 1, "timestamp": t, "type": ty});
        if !details.is_null() {
            let key = if ty.ends_with("StateEntered") {
                "stateEnteredEventDetails".to_string()
            } else if ty.ends_with("StateExited") {
                "stateExitedEventDetails".to_string()
            } else {
                let mut c = ty.chars();
                let first = c.next().unwrap().to_ascii_lowercase();
                format!("{first}{}EventDetails", c.as_str())
            };
            e[key] = details;
        }
        e
    }

    #[test]
    fn history_tree_indents_parallel_branches_and_map_iterations() {
        let t = 1_700_000_000.0;
        let events = vec![
            ev(1, t, "ExecutionStarted", json!({"input": "{\"x\":1}"})),
            ev(
                2,
                t + 0.001,
                "TaskStateEntered",
                json!({"name": "Validate"}),
            ),
            ev(
                3,
                t + 0.002,
                "LambdaFunctionScheduled",
                json!({"resource": "arn:aws:lambda:us-east-1:000000000000:function:validate"}),
            ),
            ev(4, t + 0.003, "LambdaFunctionStarted", Value::Null),
            ev(
                5,
                t + 0.010,
                "LambdaFunctionSucceeded",
                json!({"output": "{\"ok\":true}"}),
            ),
            ev(6, t + 0.011, "TaskStateExited", json!({"name": "Validate"})),
            ev(
                7,
                t + 0.012,
                "ParallelStateEntered",
                json!({"name": "Both"}),
            ),
            ev(8, t + 0.012, "ParallelStateStarted", Value::Null),
            ev(9, t + 0.013, "PassStateEntered", json!({"name": "A"})),
            ev(10, t + 0.013, "PassStateEntered", json!({"name": "B"})),
            ev(11, t + 0.014, "PassStateExited", json!({"name": "A"})),
            ev(12, t + 0.014, "PassStateExited", json!({"name": "B"})),
            ev(13, t + 0.015, "ParallelStateSucceeded", Value::Null),
            ev(
                14,
                t + 0.015,
                "ParallelStateExited",
                json!({"name": "Both"}),
            ),
            ev(15, t + 0.016, "MapStateEntered", json!({"name": "Items"})),
            ev(16, t + 0.016, "MapStateStarted", json!({"length": 2})),
            ev(
                17,
                t + 0.017,
                "MapIterationStarted",
                json!({"name": "Items", "index": 0}),
            ),
            ev(18, t + 0.017, "PassStateEntered", json!({"name": "Each"})),
            ev(19, t + 0.018, "PassStateExited", json!({"name": "Each"})),
            ev(
                20,
                t + 0.018,
                "MapIterationSucceeded",
                json!({"name": "Items", "index": 0}),
            ),
            ev(
                21,
                t + 0.019,
                "MapIterationStarted",
                json!({"name": "Items", "index": 1}),
            ),
            ev(22, t + 0.019, "TaskStateEntered", json!({"name": "Each"})),
            ev(
                23,
                t + 0.020,
                "TaskFailed",
                json!({"resourceType": "lambda", "resource": "invoke",
                      "error": "Boom", "cause": "line one\nline two"}),
            ),
            ev(
                24,
                t + 0.021,
                "MapIterationFailed",
                json!({"name": "Items", "index": 1}),
            ),
            ev(25, t + 0.021, "MapStateFailed", Value::Null),
            ev(
                26,
                t + 0.022,
                "ExecutionFailed",
                json!({"error": "States.BranchFailed", "cause": "iteration 1 failed"}),
            ),
        ];
        let expected = "\
+0.000s  ExecutionStarted         {\"x\":1}
+0.001s  TaskStateEntered         Validate
+0.002s  LambdaFunctionScheduled  validate
+0.003s  LambdaFunctionStarted
+0.010s  LambdaFunctionSucceeded  {\"ok\":true}
+0.011s  TaskStateExited          Validate
+0.012s  ParallelStateEntered     Both
+0.012s  ParallelStateStarted
+0.013s    PassStateEntered       A
+0.013s    PassStateEntered       B
+0.014s    PassStateExited        A
+0.014s    PassStateExited        B
+0.015s  ParallelStateSucceeded
+0.015s  ParallelStateExited      Both
+0.016s  MapStateEntered          Items
+0.016s  MapStateStarted          2 items
+0.017s    MapIterationStarted    Items[0]
+0.017s      PassStateEntered     Each
+0.018s      PassStateExited      Each
+0.018s    MapIterationSucceeded  Items[0]
+0.019s    MapIterationStarted    Items[1]
+0.019s      TaskStateEntered     Each
+0.020s      TaskFailed           Boom: line one line two
+0.021s    MapIterationFailed     Items[1]
+0.021s  MapStateFailed
+0.022s  ExecutionFailed          States.BranchFailed: iteration 1 failed
";
        assert_eq!(render_history(&events), expected);
    }

    #[test]
    fn history_tree_survives_concurrent_iterations_and_nesting() {
        let t = 10.0;
        let it = |id, ty: &str, i: u64| ev(id, t, ty, json!({"name": "M", "index": i}));
        let events = vec![
            ev(1, t, "MapStateStarted", json!({"length": 2})),
            it(2, "MapIterationStarted", 0),
            it(3, "MapIterationStarted", 1),
            ev(4, t, "ParallelStateStarted", Value::Null),
            ev(5, t, "PassStateEntered", json!({"name": "P"})),
            ev(6, t, "ParallelStateFailed", Value::Null),
            it(7, "MapIterationFailed", 1),
            it(8, "MapIterationSucceeded", 0),
            ev(9, t, "MapStateSucceeded", Value::Null),
            // Unbalanced ends (a truncated page) never underflow.
            it(10, "MapIterationSucceeded", 5),
            ev(11, t, "MapStateSucceeded", Value::Null),
            ev(12, t, "ExecutionSucceeded", json!({"output": "1"})),
        ];
        let out = render_history(&events);
        let indents: Vec<usize> = out
            .lines()
            .map(|l| {
                let rest = &l[l.find("s  ").unwrap() + 3..];
                rest.len() - rest.trim_start().len()
            })
            .collect();
        assert_eq!(indents, vec![0, 2, 2, 4, 6, 4, 2, 2, 0, 0, 0, 0], "{out}");
        assert!(render_history(&[]).is_empty());
    }

    #[test]
    fn execution_names_and_inputs() {
        assert_eq!(
            short_execution("arn:aws:states:us-east-1:000000000000:execution:orders:e1"),
            "orders/e1"
        );
        assert_eq!(short_execution("weird"), "weird");
        assert_eq!(machine_arn("orders"), state_machine_arn("orders"));
        assert_eq!(read_input(None).unwrap(), "{}");
        assert_eq!(read_input(Some("{\"x\":1}")).unwrap(), "{\"x\":1}");
        assert!(read_input(Some("{x"))
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.json");
        std::fs::write(&f, "[1, 2]").unwrap();
        assert_eq!(
            read_input(Some(&format!("@{}", f.display()))).unwrap(),
            "[1, 2]"
        );
        assert!(read_input(Some("@/nonexistent/x.json")).is_err());
        assert_eq!(human_duration(0.0123), "12ms");
        assert_eq!(human_duration(2.25), "2.2s");
        assert_eq!(human_duration(125.0), "2m05s");
    }

    #[test]
    fn failures_carry_error_and_hint() {
        let arn = "arn:aws:states:us-east-1:000000000000:execution:orders:e1";
        assert!(finished(&json!({"status": "SUCCEEDED"}), arn).is_ok());
        let e = finished(
            &json!({"status": "FAILED", "error": "States.TaskFailed", "cause": "bad\ninput"}),
            arn,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "execution FAILED: States.TaskFailed: bad input"
        );
        assert!(crate::errors::hint(&e)
            .unwrap()
            .contains("nimbus flows history orders/e1"));
        let text = describe_text(&json!({
            "executionArn": arn,
            "stateMachineArn": "arn:aws:states:us-east-1:000000000000:stateMachine:orders",
            "status": "SUCCEEDED", "startDate": 1.5, "stopDate": 2.0,
            "input": "{}", "output": "{\"y\":2}"
        }));
        assert!(text.contains("machine    orders\n"), "{text}");
        assert!(text.contains("(after 500ms)"), "{text}");
        assert!(text.contains("output     {\"y\":2}\n"), "{text}");
    }

    #[test]
    fn manifest_workflows_read_and_substitute() {
        let dir = tempfile::tempdir().unwrap();
        let fn_toml = "[functions.f]\nruntime = \"python3.12\"\nhandler = \"app.handler\"\n";
        std::fs::write(
            dir.path().join("nimbus.toml"),
            format!(
                "include = [\"sub\"]\n{fn_toml}[[workflows]]\nname = \"w\"\ndefinition = \"w.json\"\n"
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/nimbus.toml"),
            "[[workflows]]\nname = \"v\"\ndefinition = \"flows/v.json\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("w.json"),
            r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"${fn:f}","End":true}}}"#,
        )
        .unwrap();
        let e = format!("{:#}", manifest_workflows(dir.path()).unwrap_err());
        assert!(
            e.contains("workflow v: cannot read its definition") && e.contains("sub/flows/v.json"),
            "{e}"
        );
        std::fs::create_dir(dir.path().join("sub/flows")).unwrap();
        std::fs::write(dir.path().join("sub/flows/v.json"), "{not json").unwrap();
        let e = format!("{:#}", manifest_workflows(dir.path()).unwrap_err());
        assert!(
            e.contains("workflow v:") && e.contains("not valid JSON"),
            "{e}"
        );
        std::fs::write(dir.path().join("sub/flows/v.json"), "{}").unwrap();
        let w = manifest_workflows(dir.path()).unwrap();
        assert_eq!(w.len(), 2);
        assert!(w[0]
            .definition
            .contains("\"arn:aws:lambda:us-east-1:000000000000:function:f\""));
        let files = definition_files(dir.path()).unwrap();
        assert_eq!(
            files[1],
            dir.path().join("sub/flows/v.json").canonicalize().unwrap()
        );
    }
}
