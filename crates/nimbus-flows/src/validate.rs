//! Statelint-like validation of a definition at create time.
//!
//! Every problem is collected (not just the first), each with a Step Functions diagnostic
//! code, a message naming the field, and the JSON location of the state and field, as
//! `ValidateStateMachineDefinition` and `InvalidDefinition` report them, e.g.
//! `MISSING_TRANSITION_TARGET: Missing 'Next' target: Foo at /States/Bar/Next`.
//!
//! Sources: <https://states-language.net/spec.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/apireference/API_ValidateStateMachineDefinitionDiagnostic.html>.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::choice::{parse_timestamp, Condition};
use crate::definition::StateMachine;
use crate::errors::{names, Error, Result};
use crate::intrinsics::{looks_like_call, Call};
use crate::jsonata::{expression_text, parse_expression, valid_variable_name, MAX_VARIABLE_NAME};
use crate::path::{Path, ReferencePath, Root};

/// Largest definition accepted, in bytes (1 MiB).
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;
/// Longest state name, in characters.
pub const MAX_STATE_NAME: usize = 80;
/// Largest `TimeoutSeconds`, `IntervalSeconds`, `MaxAttempts` accepted.
pub const MAX_SECONDS: u64 = 99_999_999;
/// Largest `MaxDelaySeconds` (one year and a day, exclusive).
pub const MAX_DELAY_SECONDS: u64 = 31_622_400;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The definition is refused.
    Error,
    /// Suspicious but accepted.
    Warning,
}

/// One problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The Step Functions diagnostic code (`SCHEMA_VALIDATION_FAILED`, …).
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// Where: a JSON pointer such as `/States/Bar/Next`.
    pub location: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at {}",
            self.code,
            self.message,
            if self.location.is_empty() {
                "/"
            } else {
                &self.location
            }
        )
    }
}

/// Diagnostic codes, as Step Functions names them.
pub mod codes {
    /// Not JSON.
    pub const INVALID_JSON_DESCRIPTION: &str = "INVALID_JSON_DESCRIPTION";
    /// Empty definition.
    pub const MISSING_DESCRIPTION: &str = "MISSING_DESCRIPTION";
    /// A schema rule is broken.
    pub const SCHEMA_VALIDATION_FAILED: &str = "SCHEMA_VALIDATION_FAILED";
    /// A JSONata expression does not parse.
    pub const INVALID_JSONATA_EXPRESSION: &str = "INVALID_JSONATA_EXPRESSION";
    /// A Task's `Resource` is invalid.
    pub const INVALID_RESOURCE: &str = "INVALID_RESOURCE";
    /// No terminal state can be reached.
    pub const MISSING_END_STATE: &str = "MISSING_END_STATE";
    /// Two states share a name.
    pub const DUPLICATE_STATE_NAME: &str = "DUPLICATE_STATE_NAME";
    /// A state name breaks the naming rules.
    pub const INVALID_STATE_NAME: &str = "INVALID_STATE_NAME";
    /// `Next`, `Default` or `StartAt` names no state.
    pub const MISSING_TRANSITION_TARGET: &str = "MISSING_TRANSITION_TARGET";
    /// Too deeply nested.
    pub const TOO_DEEPLY_NESTED: &str = "TOO_DEEPLY_NESTED";
    /// Warning: a field value looks like a path or intrinsic but its name lacks `.$`.
    pub const NO_DOLLAR: &str = "NO_DOLLAR";
    /// Warning: a Pass state's `Result` holds a `.$` field, which stays static.
    pub const PASS_RESULT_IS_STATIC: &str = "PASS_RESULT_IS_STATIC";
}

/// Validates a definition's text, returning every diagnostic (errors and warnings).
pub fn validate(text: &str) -> Vec<Diagnostic> {
    let mut v = Validator::default();
    if let Some(doc) = v.load(text) {
        v.top(&doc);
    }
    v.diags
}

/// Validates and parses a definition; any error diagnostic refuses it.
pub fn parse(text: &str) -> Result<StateMachine> {
    let diags = validate(text);
    let errors: Vec<Diagnostic> = diags
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(Error::InvalidDefinition(errors));
    }
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidDefinition(vec![Diagnostic {
            severity: Severity::Error,
            code: codes::SCHEMA_VALIDATION_FAILED,
            message: e.to_string(),
            location: String::new(),
        }])
    })
}

#[derive(Default)]
struct Validator {
    diags: Vec<Diagnostic>,
    /// Every state name in the whole machine with its first location.
    all_names: BTreeMap<String, String>,
    /// The top-level `QueryLanguage` is JSONata: no JSONPath state may appear.
    top_jsonata: bool,
    /// The top-level query language, which states of branches and processors fall back to.
    top_ql: String,
    /// The variables assigned in each enclosing scope (outermost first).
    scopes: Vec<BTreeSet<String>>,
}

const COMMON: &[&str] = &["Type", "Comment", "QueryLanguage"];
const JSONPATH_IO: &[&str] = &["InputPath", "OutputPath"];
const TRANSITION: &[&str] = &["Next", "End"];

fn ptr(base: &str, field: &str) -> String {
    format!("{base}/{}", field.replace('~', "~0").replace('/', "~1"))
}

/// The service integrations Nimbus runs (`arn:aws:states:::SERVICE:ACTION`), with the
/// patterns each takes.
const INTEGRATIONS: &[(&str, &[&str])] = &[
    ("lambda:invoke", &["", ".waitForTaskToken"]),
    (
        "states:startExecution",
        &["", ".sync", ".sync:2", ".waitForTaskToken"],
    ),
    ("sqs:sendMessage", &["", ".waitForTaskToken"]),
    ("events:putEvents", &["", ".waitForTaskToken"]),
    ("s3:getObject", &[""]),
    ("s3:putObject", &[""]),
    ("aws-sdk:s3:getObject", &[""]),
    ("aws-sdk:s3:putObject", &[""]),
];

/// Why a Task's `Resource` names nothing Nimbus can run: a function (name, `NAME:QUALIFIER`
/// or `arn:aws:lambda:…:function:NAME[:QUALIFIER]`) or a service integration of
/// [`INTEGRATIONS`] is fine.
fn resource_problem(r: &str) -> Option<String> {
    let unknown = || {
        Some(format!(
            "The resource provided {r} is not recognized. The value is not a valid resource ARN, or the resource is not available in this region."
        ))
    };
    if let Some(rest) = r.strip_prefix("arn:aws:states:::") {
        let known = INTEGRATIONS.iter().any(|(base, patterns)| {
            rest.strip_prefix(base)
                .is_some_and(|p| patterns.contains(&p))
        });
        return if known { None } else { unknown() };
    }
    if r.starts_with("arn:") {
        let parts: Vec<&str> = r.split(':').collect();
        let function = parts.len() >= 7
            && parts.len() <= 8
            && parts[2] == "lambda"
            && parts[5] == "function"
            && !parts[6].is_empty();
        return if function { None } else { unknown() };
    }
    let (name, qualifier) = r.split_once(':').unwrap_or((r, ""));
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let qualifier_ok = qualifier.len() <= 128
        && !qualifier.contains(':')
        && qualifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$');
    if name_ok && qualifier_ok {
        None
    } else {
        unknown()
    }
}

impl Validator {
    fn err(&mut self, code: &'static str, message: impl Into<String>, location: impl Into<String>) {
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            location: location.into(),
        });
    }
    fn schema(&mut self, message: impl Into<String>, location: impl Into<String>) {
        self.err(codes::SCHEMA_VALIDATION_FAILED, message, location);
    }
    fn warn(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        location: impl Into<String>,
    ) {
        self.diags.push(Diagnostic {
            severity: Severity::Warning,
            code,
            message: message.into(),
            location: location.into(),
        });
    }

    fn load(&mut self, text: &str) -> Option<Value> {
        if text.trim().is_empty() {
            self.err(codes::MISSING_DESCRIPTION, "The definition is empty", "");
            return None;
        }
        if text.len() > MAX_DEFINITION_BYTES {
            self.schema(
                format!(
                    "The definition is {} bytes; at most {MAX_DEFINITION_BYTES} are allowed",
                    text.len()
                ),
                "",
            );
        }
        let dups = RefCell::new(Vec::new());
        let mut de = serde_json::Deserializer::from_str(text);
        let doc = match (DupSeed {
            dups: &dups,
            at: String::new(),
        })
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|_| v))
        {
            Ok(v) => v,
            Err(e) => {
                self.err(
                    codes::INVALID_JSON_DESCRIPTION,
                    format!("Invalid JSON: {e}"),
                    "",
                );
                return None;
            }
        };
        for (at, key) in dups.into_inner() {
            if at.ends_with("/States") {
                self.err(
                    codes::DUPLICATE_STATE_NAME,
                    format!("Duplicate State name: {key}"),
                    ptr(&at, &key),
                );
            } else {
                self.schema(format!("Duplicate field '{key}'"), ptr(&at, &key));
            }
        }
        Some(doc)
    }

    fn top(&mut self, doc: &Value) {
        self.top_jsonata = doc.get("QueryLanguage").and_then(Value::as_str) == Some("JSONata");
        self.top_ql = if self.top_jsonata {
            "JSONata"
        } else {
            "JSONPath"
        }
        .to_string();
        self.machine(
            doc,
            "",
            &[
                "Comment",
                "StartAt",
                "States",
                "TimeoutSeconds",
                "Version",
                "QueryLanguage",
            ],
            None,
        );
        if let Some(obj) = doc.as_object() {
            if let Some(t) = obj.get("TimeoutSeconds") {
                self.positive_int(t, "TimeoutSeconds", "/TimeoutSeconds", MAX_SECONDS);
            }
            if let Some(v) = obj.get("Version") {
                if !v.is_string() {
                    self.schema("Field 'Version' must be a string", "/Version");
                }
            }
        }
    }

    fn query_language(
        &mut self,
        obj: &Map<String, Value>,
        at: &str,
        inherited: Option<&str>,
    ) -> String {
        match obj.get("QueryLanguage") {
            None => inherited.unwrap_or("JSONPath").to_string(),
            Some(Value::String(s)) if s == "JSONPath" && self.top_jsonata => {
                self.schema(
                    "'QueryLanguage' can not be 'JSONPath' if set to 'JSONata' for whole state machine",
                    at,
                );
                "JSONata".to_string()
            }
            Some(Value::String(s)) if s == "JSONPath" || s == "JSONata" => s.clone(),
            Some(other) => {
                self.schema(
                    format!("Field 'QueryLanguage' must be 'JSONPath' or 'JSONata', got {other}"),
                    ptr(at, "QueryLanguage"),
                );
                inherited.unwrap_or("JSONPath").to_string()
            }
        }
    }

    /// A machine, a Parallel branch or a Map processor: one scope of states.
    fn machine(&mut self, doc: &Value, at: &str, allowed: &[&str], inherited_ql: Option<&str>) {
        let Some(obj) = doc.as_object() else {
            self.schema("A state machine must be a JSON object", at);
            return;
        };
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.schema(format!("Field '{key}' is not supported"), ptr(at, key));
            }
        }
        let ql = self.query_language(obj, at, inherited_ql);
        let start = match obj.get("StartAt") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.schema("Field 'StartAt' must be a string", ptr(at, "StartAt"));
                None
            }
            None => {
                self.schema("These fields are required: [StartAt]", at);
                None
            }
        };
        let states = match obj.get("States") {
            Some(Value::Object(s)) if !s.is_empty() => s,
            Some(Value::Object(_)) => {
                self.schema(
                    "Field 'States' must contain at least one state",
                    ptr(at, "States"),
                );
                return;
            }
            Some(_) => {
                self.schema("Field 'States' must be an object", ptr(at, "States"));
                return;
            }
            None => {
                self.schema("These fields are required: [States]", at);
                return;
            }
        };
        let states_at = ptr(at, "States");
        if let Some(start) = start {
            if !states.contains_key(start) {
                self.err(
                    codes::MISSING_TRANSITION_TARGET,
                    format!("Missing 'StartAt' target: {start}"),
                    ptr(at, "StartAt"),
                );
            }
        }
        let assigned = self.scope_variables(states, &states_at);
        self.scopes.push(assigned);
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut terminal: BTreeSet<&str> = BTreeSet::new();
        for (name, state) in states {
            let state_at = ptr(&states_at, name);
            if name.is_empty()
                || name.chars().count() > MAX_STATE_NAME
                || name.chars().any(char::is_control)
            {
                self.err(
                    codes::INVALID_STATE_NAME,
                    format!("State name '{name}' must be 1 to {MAX_STATE_NAME} characters without control characters"),
                    state_at.clone(),
                );
            }
            if let Some(first) = self.all_names.get(name) {
                self.err(
                    codes::DUPLICATE_STATE_NAME,
                    format!("Duplicate State name: {name} (also at {first})"),
                    state_at.clone(),
                );
            } else {
                self.all_names.insert(name.clone(), state_at.clone());
            }
            let (targets, is_terminal) = self.state(state, &state_at, &ql);
            for (target, field_at) in &targets {
                if !states.contains_key(*target) {
                    let field = field_at.rsplit('/').next().unwrap_or("Next");
                    self.err(
                        codes::MISSING_TRANSITION_TARGET,
                        format!("Missing '{field}' target: {target}"),
                        field_at.clone(),
                    );
                }
            }
            edges.insert(name.as_str(), targets.iter().map(|t| t.0).collect());
            if is_terminal {
                terminal.insert(name.as_str());
            }
        }
        self.scopes.pop();
        self.graph(
            states,
            &states_at,
            start.filter(|s| states.contains_key(*s)),
            &edges,
            &terminal,
        );
    }

    fn graph(
        &mut self,
        states: &Map<String, Value>,
        states_at: &str,
        start: Option<&str>,
        edges: &BTreeMap<&str, Vec<&str>>,
        terminal: &BTreeSet<&str>,
    ) {
        let Some(start) = start else { return };
        // Reachability from StartAt.
        let mut reached: BTreeSet<&str> = BTreeSet::new();
        let mut queue = VecDeque::from([start]);
        while let Some(s) = queue.pop_front() {
            if reached.insert(s) {
                for t in edges.get(s).into_iter().flatten() {
                    if states.contains_key(*t) {
                        queue.push_back(t);
                    }
                }
            }
        }
        for name in states.keys() {
            if !reached.contains(name.as_str()) {
                self.schema(
                    format!("State '{name}' is not reachable"),
                    ptr(states_at, name),
                );
            }
        }
        if terminal.is_empty() {
            self.err(
                codes::MISSING_END_STATE,
                "No terminal state: the workflow has no state with End, Succeed or Fail",
                states_at,
            );
            return;
        }
        // States that can reach a terminal state (reverse search).
        let mut can_end: BTreeSet<&str> = terminal.clone();
        let mut changed = true;
        while changed {
            changed = false;
            for (s, ts) in edges {
                if !can_end.contains(s) && ts.iter().any(|t| can_end.contains(t)) {
                    can_end.insert(s);
                    changed = true;
                }
            }
        }
        for name in &reached {
            if !can_end.contains(name) {
                self.err(
                    codes::MISSING_END_STATE,
                    format!("State '{name}' is in a cycle with no path to a terminal state"),
                    ptr(states_at, name),
                );
            }
        }
    }

    /// Checks one state; returns its transition targets (with the field location) and
    /// whether it is terminal.
    fn state<'v>(
        &mut self,
        state: &'v Value,
        at: &str,
        inherited_ql: &str,
    ) -> (Vec<(&'v str, String)>, bool) {
        let mut targets = Vec::new();
        let Some(obj) = state.as_object() else {
            self.schema("A state must be a JSON object", at);
            return (targets, true);
        };
        let ty = match obj.get("Type") {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => {
                self.schema("Field 'Type' must be a string", ptr(at, "Type"));
                return (targets, true);
            }
            None => {
                self.schema("These fields are required: [Type]", at);
                return (targets, true);
            }
        };
        let ql = self.query_language(obj, at, Some(inherited_ql));
        let jsonata = ql == "JSONata";
        let specific: &[&str] = match ty {
            "Task" => &[
                "Resource",
                "Parameters",
                "ResultSelector",
                "ResultPath",
                "Retry",
                "Catch",
                "TimeoutSeconds",
                "TimeoutSecondsPath",
                "HeartbeatSeconds",
                "HeartbeatSecondsPath",
                "Credentials",
                "Arguments",
                "Output",
                "Assign",
            ],
            "Pass" => &["Result", "Parameters", "ResultPath", "Output", "Assign"],
            "Choice" => &["Choices", "Default", "Output", "Assign"],
            "Wait" => &[
                "Seconds",
                "Timestamp",
                "SecondsPath",
                "TimestampPath",
                "Output",
                "Assign",
            ],
            "Succeed" => &["Output"],
            "Fail" => &["Error", "ErrorPath", "Cause", "CausePath"],
            "Parallel" => &[
                "Branches",
                "Parameters",
                "ResultSelector",
                "ResultPath",
                "Retry",
                "Catch",
                "Arguments",
                "Output",
                "Assign",
            ],
            "Map" => &[
                "ItemProcessor",
                "Iterator",
                "ItemsPath",
                "Items",
                "ItemSelector",
                "Parameters",
                "MaxConcurrency",
                "MaxConcurrencyPath",
                "ToleratedFailurePercentage",
                "ToleratedFailurePercentagePath",
                "ToleratedFailureCount",
                "ToleratedFailureCountPath",
                "ItemBatcher",
                "ItemReader",
                "ResultWriter",
                "Label",
                "ResultSelector",
                "ResultPath",
                "Retry",
                "Catch",
                "Arguments",
                "Output",
                "Assign",
            ],
            other => {
                self.schema(
                    format!("Unknown state type '{other}'; expected one of Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map"),
                    ptr(at, "Type"),
                );
                return (targets, true);
            }
        };
        let has_transition = !matches!(ty, "Choice" | "Succeed" | "Fail");
        for key in obj.keys() {
            let k = key.as_str();
            let known = COMMON.contains(&k)
                || specific.contains(&k)
                || (has_transition && TRANSITION.contains(&k))
                || (ty != "Fail" && JSONPATH_IO.contains(&k));
            if !known {
                self.schema(format!("Field '{key}' is not supported"), ptr(at, key));
                continue;
            }
            let jsonpath_only = matches!(
                k,
                "InputPath"
                    | "OutputPath"
                    | "Parameters"
                    | "ResultSelector"
                    | "ResultPath"
                    | "ItemsPath"
                    | "TimeoutSecondsPath"
                    | "HeartbeatSecondsPath"
                    | "SecondsPath"
                    | "TimestampPath"
                    | "ErrorPath"
                    | "CausePath"
                    | "MaxConcurrencyPath"
                    | "ToleratedFailurePercentagePath"
                    | "ToleratedFailureCountPath"
                    | "Iterator"
                    | "Result"
            );
            let jsonata_only = matches!(k, "Arguments" | "Output" | "Items");
            if jsonata && jsonpath_only {
                self.schema(
                    format!("The QueryLanguage is set to 'JSONata', but field '{key}' is only supported for the 'JSONPath' QueryLanguage"),
                    at,
                );
            } else if !jsonata && jsonata_only {
                self.schema(
                    format!("The QueryLanguage is set to 'JSONPath', but field '{key}' is only supported for the 'JSONata' QueryLanguage"),
                    at,
                );
            }
        }

        // Next / End.
        let mut is_terminal = matches!(ty, "Succeed" | "Fail");
        if has_transition {
            let next = obj.get("Next");
            let end = obj.get("End");
            match end {
                Some(Value::Bool(b)) => is_terminal = *b,
                Some(_) => self.schema("Field 'End' must be a boolean", ptr(at, "End")),
                None => {}
            }
            match (next, is_terminal) {
                (Some(Value::String(n)), false) => targets.push((n.as_str(), ptr(at, "Next"))),
                (Some(Value::String(_)), true) => {
                    self.schema("Only one of 'Next' or 'End' may be set", at)
                }
                (Some(_), _) => self.schema("Field 'Next' must be a string", ptr(at, "Next")),
                (None, false) => self.schema(
                    "Missing 'Next' or 'End': a non-terminal state needs a 'Next' field",
                    at,
                ),
                (None, true) => {}
            }
        }

        // JSONPath processing fields.
        for field in ["InputPath", "OutputPath"] {
            match obj.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(p)) => self.path(p, field, &ptr(at, field)),
                Some(_) => self.schema(
                    format!("Field '{field}' must be a path string or null"),
                    ptr(at, field),
                ),
            }
        }
        if let Some(rp) = obj.get("ResultPath") {
            self.result_path(rp, &ptr(at, "ResultPath"));
        }
        for field in ["Parameters", "ResultSelector", "ItemSelector"] {
            if let Some(t) = obj.get(field) {
                if !jsonata || field != "ItemSelector" {
                    self.template(t, field, &ptr(at, field), true);
                }
            }
        }
        if let (Some(Value::Object(r)), "Pass") = (obj.get("Result"), ty) {
            if r.keys().any(|k| k.ends_with(".$")) {
                self.warn(
                    codes::PASS_RESULT_IS_STATIC,
                    "Field 'Result' of a Pass state is static: its '.$' fields are not evaluated",
                    ptr(at, "Result"),
                );
            }
        }
        for field in [
            "TimeoutSecondsPath",
            "HeartbeatSecondsPath",
            "SecondsPath",
            "TimestampPath",
            "ItemsPath",
            "MaxConcurrencyPath",
            "ToleratedFailurePercentagePath",
            "ToleratedFailureCountPath",
        ] {
            if let Some(v) = obj.get(field) {
                match v.as_str() {
                    Some(p) => self.reference_path(p, field, &ptr(at, field), true),
                    None => self.schema(
                        format!("Field '{field}' must be a reference path string"),
                        ptr(at, field),
                    ),
                }
            }
        }
        for (a, b) in [
            ("TimeoutSeconds", "TimeoutSecondsPath"),
            ("HeartbeatSeconds", "HeartbeatSecondsPath"),
            ("MaxConcurrency", "MaxConcurrencyPath"),
            (
                "ToleratedFailurePercentage",
                "ToleratedFailurePercentagePath",
            ),
            ("ToleratedFailureCount", "ToleratedFailureCountPath"),
            ("Error", "ErrorPath"),
            ("Cause", "CausePath"),
            ("Parameters", "ItemSelector"),
            ("ItemProcessor", "Iterator"),
        ] {
            if obj.contains_key(a) && obj.contains_key(b) {
                self.schema(format!("Only one of '{a}' or '{b}' may be set"), at);
            }
        }

        match ty {
            "Task" => self.task(obj, at),
            "Choice" => self.choice(obj, at, &mut targets, jsonata),
            "Wait" => self.wait(obj, at, jsonata),
            "Fail" => self.fail(obj, at),
            "Parallel" => match obj.get("Branches") {
                Some(Value::Array(bs)) if !bs.is_empty() => {
                    for (i, b) in bs.iter().enumerate() {
                        let top = self.top_ql.clone();
                        self.machine(
                            b,
                            &format!("{at}/Branches/{i}"),
                            &["Comment", "StartAt", "States"],
                            Some(&top),
                        );
                    }
                }
                Some(_) => self.schema(
                    "Field 'Branches' must be a non-empty array of state machines",
                    ptr(at, "Branches"),
                ),
                None => self.schema("These fields are required: [Branches]", at),
            },
            "Map" => self.map(obj, at),
            _ => {}
        }
        if matches!(ty, "Task" | "Parallel" | "Map") {
            self.retry(obj.get("Retry"), &ptr(at, "Retry"));
            if let Some(c) = obj.get("Catch") {
                self.catch(c, &ptr(at, "Catch"), &mut targets, jsonata);
            }
        }
        if let Some(a) = obj.get("Assign") {
            self.assign(a, &ptr(at, "Assign"), jsonata);
        }
        if jsonata {
            self.jsonata_fields(obj, at);
        }
        (targets, is_terminal)
    }

    fn task(&mut self, obj: &Map<String, Value>, at: &str) {
        match obj.get("Resource") {
            Some(Value::String(r))
                if !r.trim().is_empty() && !r.chars().any(char::is_whitespace) =>
            {
                if let Some(why) = resource_problem(r) {
                    self.err(codes::INVALID_RESOURCE, why, ptr(at, "Resource"));
                }
            }
            Some(Value::String(r)) => self.err(
                codes::INVALID_RESOURCE,
                format!("Invalid resource: '{r}'"),
                ptr(at, "Resource"),
            ),
            Some(_) => self.err(
                codes::INVALID_RESOURCE,
                "Field 'Resource' must be a string",
                ptr(at, "Resource"),
            ),
            None => self.schema("These fields are required: [Resource]", at),
        }
        let timeout = obj
            .get("TimeoutSeconds")
            .filter(|t| !t.is_string())
            .and_then(|t| {
                self.positive_int(t, "TimeoutSeconds", &ptr(at, "TimeoutSeconds"), MAX_SECONDS)
            });
        let heartbeat = obj
            .get("HeartbeatSeconds")
            .filter(|t| !t.is_string())
            .and_then(|t| {
                self.positive_int(
                    t,
                    "HeartbeatSeconds",
                    &ptr(at, "HeartbeatSeconds"),
                    MAX_SECONDS,
                )
            });
        if let (Some(t), Some(h)) = (timeout, heartbeat) {
            if h >= t {
                self.schema(
                    "Field 'HeartbeatSeconds' must be smaller than 'TimeoutSeconds'",
                    ptr(at, "HeartbeatSeconds"),
                );
            }
        }
        if let Some(c) = obj.get("Credentials") {
            if !c.is_object() {
                self.schema(
                    "Field 'Credentials' must be an object",
                    ptr(at, "Credentials"),
                );
            } else {
                self.template(c, "Credentials", &ptr(at, "Credentials"), true);
            }
        }
    }

    fn choice<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        at: &str,
        targets: &mut Vec<(&'v str, String)>,
        jsonata: bool,
    ) {
        match obj.get("Choices") {
            Some(Value::Array(rules)) if !rules.is_empty() => {
                for (i, rule) in rules.iter().enumerate() {
                    let rule_at = format!("{at}/Choices/{i}");
                    match rule.get("Next") {
                        Some(Value::String(n)) => targets.push((n.as_str(), ptr(&rule_at, "Next"))),
                        Some(_) => {
                            self.schema("Field 'Next' must be a string", ptr(&rule_at, "Next"))
                        }
                        None => self.schema("These fields are required: [Next]", rule_at.clone()),
                    }
                    self.nested_rule_next(rule, &rule_at, true);
                    match (jsonata, rule.get("Condition")) {
                        (true, None) => self.schema(
                            "A Choice rule of a JSONata state needs a 'Condition' field",
                            rule_at.clone(),
                        ),
                        (false, Some(_)) => self.schema(
                            "Field 'Condition' is only supported with the JSONata query language",
                            ptr(&rule_at, "Condition"),
                        ),
                        (true, Some(Value::String(c))) if expression_text(c).is_none() => self
                            .schema(
                                "Field 'Condition' must be a JSONata expression '{% … %}'",
                                ptr(&rule_at, "Condition"),
                            ),
                        _ => {}
                    }
                    if !jsonata && rule.get("Output").is_some() {
                        self.schema(
                            "Field 'Output' is only supported with the JSONata query language",
                            ptr(&rule_at, "Output"),
                        );
                    }
                    if let Err(e) = Condition::from_json(rule) {
                        self.schema(e, rule_at.clone());
                    }
                    if let Some(a) = rule.get("Assign") {
                        self.assign(a, &ptr(&rule_at, "Assign"), jsonata);
                    }
                    if jsonata {
                        for f in ["Condition", "Output"] {
                            if let Some(v) = rule.get(f) {
                                self.jsonata_template(v, f, &ptr(&rule_at, f));
                            }
                        }
                    }
                }
            }
            Some(_) => self.schema(
                "Field 'Choices' must be a non-empty array of rules",
                ptr(at, "Choices"),
            ),
            None => self.schema("These fields are required: [Choices]", at),
        }
        match obj.get("Default") {
            Some(Value::String(d)) => targets.push((d.as_str(), ptr(at, "Default"))),
            Some(_) => self.schema("Field 'Default' must be a string", ptr(at, "Default")),
            None => {}
        }
    }

    /// Only top-level rules may carry `Next`.
    fn nested_rule_next(&mut self, rule: &Value, at: &str, top: bool) {
        if !top && rule.get("Next").is_some() {
            self.schema(
                "A nested Choice rule may not have a 'Next' field",
                ptr(at, "Next"),
            );
        }
        for key in ["And", "Or"] {
            if let Some(Value::Array(items)) = rule.get(key) {
                for (i, r) in items.iter().enumerate() {
                    self.nested_rule_next(r, &format!("{at}/{key}/{i}"), false);
                }
            }
        }
        if let Some(r) = rule.get("Not") {
            self.nested_rule_next(r, &ptr(at, "Not"), false);
        }
    }

    fn wait(&mut self, obj: &Map<String, Value>, at: &str, jsonata: bool) {
        let fields = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"];
        let set: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| obj.contains_key(*f))
            .collect();
        if set.len() != 1 {
            self.schema(format!("A Wait state needs exactly one of 'Seconds', 'Timestamp', 'SecondsPath', 'TimestampPath' (found {})", set.len()), at);
        }
        if let Some(s) = obj.get("Seconds") {
            let expr = jsonata && s.as_str().is_some_and(|t| expression_text(t).is_some());
            if !s.is_u64() && !expr {
                self.schema(
                    "Field 'Seconds' must be a non-negative integer",
                    ptr(at, "Seconds"),
                );
            }
        }
        if let Some(t) = obj.get("Timestamp") {
            if !t.as_str().is_some_and(|s| {
                parse_timestamp(s).is_some() || (jsonata && expression_text(s).is_some())
            }) {
                self.schema(
                    "Field 'Timestamp' must be an RFC 3339 timestamp such as 2016-03-14T01:59:00Z",
                    ptr(at, "Timestamp"),
                );
            }
        }
    }

    fn fail(&mut self, obj: &Map<String, Value>, at: &str) {
        for f in ["Error", "Cause"] {
            if obj.get(f).is_some_and(|v| !v.is_string()) {
                self.schema(format!("Field '{f}' must be a string"), ptr(at, f));
            }
        }
        for f in ["ErrorPath", "CausePath"] {
            match obj.get(f) {
                None => {}
                Some(Value::String(s)) => self.dynamic(s, f, &ptr(at, f)),
                Some(_) => self.schema(
                    format!("Field '{f}' must be a path or intrinsic function string"),
                    ptr(at, f),
                ),
            }
        }
    }

    fn map(&mut self, obj: &Map<String, Value>, at: &str) {
        let top = self.top_ql.clone();
        let ql = top.as_str();
        let mut mode = "INLINE";
        match (obj.get("ItemProcessor"), obj.get("Iterator")) {
            (Some(p), _) => {
                if let Some(cfg) = p.get("ProcessorConfig") {
                    let cfg_at = format!("{at}/ItemProcessor/ProcessorConfig");
                    match cfg.as_object() {
                        Some(c) => {
                            for (k, v) in c {
                                match (k.as_str(), v.as_str()) {
                                    ("Mode", Some(m @ ("INLINE" | "DISTRIBUTED"))) => mode = m,
                                    ("ExecutionType", Some("STANDARD" | "EXPRESS")) => {}
                                    ("Mode" | "ExecutionType", _) => self.schema(
                                        format!("Invalid value for field '{k}': {v}"),
                                        ptr(&cfg_at, k),
                                    ),
                                    _ => self.schema(
                                        format!("Field '{k}' is not supported"),
                                        ptr(&cfg_at, k),
                                    ),
                                }
                            }
                        }
                        None => self.schema("Field 'ProcessorConfig' must be an object", cfg_at),
                    }
                }
                self.machine(
                    p,
                    &ptr(at, "ItemProcessor"),
                    &["Comment", "StartAt", "States", "ProcessorConfig"],
                    Some(ql),
                );
            }
            (None, Some(it)) => self.machine(
                it,
                &ptr(at, "Iterator"),
                &["Comment", "StartAt", "States"],
                Some(ql),
            ),
            (None, None) => self.schema("These fields are required: [ItemProcessor]", at),
        }
        if mode == "INLINE" {
            for f in ["ItemReader", "ResultWriter", "ItemBatcher", "Label"] {
                if obj.contains_key(f) {
                    self.schema(
                        format!("Field '{f}' is only supported in DISTRIBUTED mode"),
                        ptr(at, f),
                    );
                }
            }
        }
        for f in ["ItemReader", "ResultWriter", "ItemBatcher"] {
            if obj.get(f).is_some_and(|v| !v.is_object()) {
                self.schema(format!("Field '{f}' must be an object"), ptr(at, f));
            }
        }
        if let Some(m) = obj.get("MaxConcurrency").filter(|v| !v.is_string()) {
            if !m.is_u64() {
                self.schema(
                    "Field 'MaxConcurrency' must be a non-negative integer",
                    ptr(at, "MaxConcurrency"),
                );
            }
        }
        if let Some(c) = obj.get("ToleratedFailureCount").filter(|v| !v.is_string()) {
            if !c.is_u64() {
                self.schema(
                    "Field 'ToleratedFailureCount' must be a non-negative integer",
                    ptr(at, "ToleratedFailureCount"),
                );
            }
        }
        if let Some(p) = obj
            .get("ToleratedFailurePercentage")
            .filter(|v| !v.is_string())
        {
            if !p.as_f64().is_some_and(|x| (0.0..=100.0).contains(&x)) {
                self.schema(
                    "Field 'ToleratedFailurePercentage' must be a number from 0 to 100",
                    ptr(at, "ToleratedFailurePercentage"),
                );
            }
        }
    }

    fn error_equals(&mut self, entry: &Map<String, Value>, at: &str, is_last: bool) {
        let Some(list) = entry.get("ErrorEquals") else {
            self.schema("These fields are required: [ErrorEquals]", at);
            return;
        };
        let Some(items) = list.as_array().filter(|a| !a.is_empty()) else {
            self.schema(
                "Field 'ErrorEquals' must be a non-empty array of strings",
                ptr(at, "ErrorEquals"),
            );
            return;
        };
        for (i, e) in items.iter().enumerate() {
            let e_at = format!("{at}/ErrorEquals/{i}");
            match e.as_str() {
                Some(names::ALL) => {
                    if items.len() != 1 {
                        self.schema("'States.ALL' must appear alone in 'ErrorEquals'", e_at);
                    } else if !is_last {
                        self.schema(
                            "A retrier or catcher with 'States.ALL' must be the last one",
                            e_at,
                        );
                    }
                }
                Some(name) if name.starts_with("States.") && !names::PREDEFINED.contains(&name) => {
                    self.schema(format!("Unknown predefined error name '{name}'"), e_at);
                }
                Some(_) => {}
                None => self.schema("Error names must be strings", e_at),
            }
        }
    }

    fn retry(&mut self, retry: Option<&Value>, at: &str) {
        let Some(retry) = retry else { return };
        let Some(list) = retry.as_array() else {
            self.schema("Field 'Retry' must be an array", at);
            return;
        };
        for (i, r) in list.iter().enumerate() {
            let r_at = format!("{at}/{i}");
            let Some(obj) = r.as_object() else {
                self.schema("A retrier must be an object", r_at);
                continue;
            };
            for (k, v) in obj {
                let k_at = ptr(&r_at, k);
                match k.as_str() {
                    "ErrorEquals" | "Comment" => {}
                    "IntervalSeconds" => {
                        self.positive_int(v, k, &k_at, MAX_SECONDS);
                    }
                    "MaxDelaySeconds" => {
                        self.positive_int(v, k, &k_at, MAX_DELAY_SECONDS);
                    }
                    "MaxAttempts" => {
                        if v.as_u64().is_none_or(|n| n > MAX_SECONDS) {
                            self.schema(format!("Field 'MaxAttempts' must be an integer from 0 to {MAX_SECONDS}"), k_at);
                        }
                    }
                    "BackoffRate" => {
                        if !v.as_f64().is_some_and(|x| x >= 1.0) {
                            self.schema(
                                "Field 'BackoffRate' must be a number greater than or equal to 1.0",
                                k_at,
                            );
                        }
                    }
                    "JitterStrategy" => {
                        if !matches!(v.as_str(), Some("FULL" | "NONE")) {
                            self.schema("Field 'JitterStrategy' must be 'FULL' or 'NONE'", k_at);
                        }
                    }
                    _ => self.schema(format!("Field '{k}' is not supported"), k_at),
                }
            }
            self.error_equals(obj, &r_at, i + 1 == list.len());
        }
    }

    fn catch<'v>(
        &mut self,
        catch: &'v Value,
        at: &str,
        targets: &mut Vec<(&'v str, String)>,
        jsonata: bool,
    ) {
        let Some(list) = catch.as_array() else {
            self.schema("Field 'Catch' must be an array", at);
            return;
        };
        for (i, c) in list.iter().enumerate() {
            let c_at = format!("{at}/{i}");
            let Some(obj) = c.as_object() else {
                self.schema("A catcher must be an object", c_at);
                continue;
            };
            for (k, v) in obj {
                match k.as_str() {
                    "ErrorEquals" | "Comment" => {}
                    "Output" if jsonata => self.jsonata_template(v, "Output", &ptr(&c_at, k)),
                    "Output" => self.schema(
                        "Field 'Output' is only supported with the JSONata query language",
                        ptr(&c_at, k),
                    ),
                    "Assign" => self.assign(v, &ptr(&c_at, k), jsonata),
                    "ResultPath" if jsonata => self.schema(
                        "Field 'ResultPath' is not supported with the JSONata query language",
                        ptr(&c_at, k),
                    ),
                    "Next" => match v.as_str() {
                        Some(n) => targets.push((n, ptr(&c_at, "Next"))),
                        None => self.schema("Field 'Next' must be a string", ptr(&c_at, "Next")),
                    },
                    "ResultPath" => self.result_path(v, &ptr(&c_at, "ResultPath")),
                    _ => self.schema(format!("Field '{k}' is not supported"), ptr(&c_at, k)),
                }
            }
            if !obj.contains_key("Next") {
                self.schema("These fields are required: [Next]", c_at.clone());
            }
            self.error_equals(obj, &c_at, i + 1 == list.len());
        }
    }

    /// The variables a scope's states assign; a name also assigned in an enclosing scope
    /// is refused (a Parallel branch or Map iteration cannot assign outer variables).
    fn scope_variables(
        &mut self,
        states: &Map<String, Value>,
        states_at: &str,
    ) -> BTreeSet<String> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut collect = |assign: Option<&Value>, at: String| {
            if let Some(Value::Object(a)) = assign {
                for k in a.keys() {
                    let name = k.strip_suffix(".$").unwrap_or(k);
                    found.push((name.to_string(), ptr(&at, k)));
                }
            }
        };
        for (name, state) in states {
            let at = ptr(states_at, name);
            collect(state.get("Assign"), ptr(&at, "Assign"));
            for list in ["Choices", "Catch"] {
                if let Some(Value::Array(items)) = state.get(list) {
                    for (i, item) in items.iter().enumerate() {
                        collect(item.get("Assign"), format!("{at}/{list}/{i}/Assign"));
                    }
                }
            }
        }
        let mut names = BTreeSet::new();
        for (name, at) in found {
            if self.scopes.iter().any(|s| s.contains(&name)) {
                self.schema(
                    format!("Variable '{name}' is assigned in an enclosing scope; a Parallel branch or Map iteration cannot assign it"),
                    at,
                );
            }
            names.insert(name);
        }
        names
    }

    /// `Assign`: an object of valid variable names; JSONata values are templates, JSONPath
    /// `name.$` values paths or intrinsic calls (or variable references).
    fn assign(&mut self, v: &Value, at: &str, jsonata: bool) {
        let Some(obj) = v.as_object() else {
            self.schema("Field 'Assign' must be a JSON object", at);
            return;
        };
        for (k, v) in obj {
            let k_at = ptr(at, k);
            let name = if jsonata {
                k.as_str()
            } else {
                k.strip_suffix(".$").unwrap_or(k)
            };
            if !valid_variable_name(name) {
                self.schema(
                    format!("Invalid variable name '{k}': a letter or '_', then letters, digits or '_', at most {MAX_VARIABLE_NAME} characters, not the reserved 'states'"),
                    k_at.clone(),
                );
            }
            if jsonata {
                self.jsonata_template(v, "Assign", &k_at);
            } else if k.ends_with(".$") {
                match v.as_str() {
                    Some(s) => self.dynamic(s, k, &k_at),
                    None => self.schema(
                        format!("The value for the field '{k}' must be a string"),
                        k_at,
                    ),
                }
            }
        }
    }

    /// The JSONata forms of a JSONata state's fields: templates whose expressions must
    /// parse, and numeric fields given as numbers or expressions.
    fn jsonata_fields(&mut self, obj: &Map<String, Value>, at: &str) {
        for f in ["Arguments", "Output", "ItemSelector", "Items"] {
            if let Some(v) = obj.get(f) {
                self.jsonata_template(v, f, &ptr(at, f));
            }
        }
        if let Some(v) = obj.get("Arguments") {
            if !(v.is_object() || is_expression(v)) {
                self.schema(
                    "Field 'Arguments' must be a JSON object or a JSONata expression",
                    ptr(at, "Arguments"),
                );
            }
        }
        if let Some(v) = obj.get("Items") {
            if !(v.is_array() || is_expression(v)) {
                self.schema(
                    "Field 'Items' must be a JSON array or a JSONata expression",
                    ptr(at, "Items"),
                );
            }
        }
        for f in [
            "Seconds",
            "Timestamp",
            "TimeoutSeconds",
            "HeartbeatSeconds",
            "MaxConcurrency",
            "ToleratedFailurePercentage",
            "ToleratedFailureCount",
            "Error",
            "Cause",
        ] {
            match obj.get(f) {
                Some(Value::String(s)) if expression_text(s).is_some() => {
                    self.jsonata_template(&Value::String(s.clone()), f, &ptr(at, f))
                }
                Some(Value::String(_)) if !matches!(f, "Timestamp" | "Error" | "Cause") => self
                    .schema(
                        format!("Field '{f}' must be a number or a JSONata expression"),
                        ptr(at, f),
                    ),
                _ => {}
            }
        }
    }

    /// A JSONata template: every `{% … %}` string must parse; `.$` names are JSONPath.
    fn jsonata_template(&mut self, t: &Value, field: &str, at: &str) {
        match t {
            Value::String(s) => {
                if let Some(inner) = expression_text(s) {
                    if let Err(e) = parse_expression(inner) {
                        self.err(
                            codes::INVALID_JSONATA_EXPRESSION,
                            format!("The JSONata expression '{inner}' in field '{field}' is invalid: {e}"),
                            at,
                        );
                    }
                }
            }
            Value::Object(obj) => {
                for (k, v) in obj {
                    if k.ends_with(".$") {
                        self.schema(
                            format!("Field '{k}': names ending in '.$' are not supported with the JSONata query language"),
                            ptr(at, k),
                        );
                    }
                    self.jsonata_template(v, field, &ptr(at, k));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.jsonata_template(v, field, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }

    fn positive_int(&mut self, v: &Value, field: &str, at: &str, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                self.schema(
                    format!("Field '{field}' must be an integer from 1 to {max}"),
                    at,
                );
                None
            }
        }
    }

    fn result_path(&mut self, v: &Value, at: &str) {
        match v {
            Value::Null => {}
            Value::String(p) => self.reference_path(p, "ResultPath", at, false),
            _ => self.schema(
                "Field 'ResultPath' must be a reference path string or null",
                at,
            ),
        }
    }

    fn reference_path(&mut self, p: &str, field: &str, at: &str, context_allowed: bool) {
        match ReferencePath::parse(p) {
            Ok(r) if r.root == Root::Context && !context_allowed => self.schema(
                format!("Field '{field}' may not reference the context object: '{p}'"),
                at,
            ),
            Ok(_) => {}
            Err(e) => self.schema(
                format!("The value for the field '{field}' must be a valid reference path: {e}"),
                at,
            ),
        }
    }

    fn path(&mut self, p: &str, field: &str, at: &str) {
        if let Err(e) = Path::parse(p) {
            self.schema(
                format!("The value for the field '{field}' must be a valid JSONPath: {e}"),
                at,
            );
        }
    }

    fn dynamic(&mut self, text: &str, field: &str, at: &str) {
        if let Some((_, path)) = crate::io::variable_path(text) {
            if let Err(e) = Path::parse(&path) {
                self.schema(
                    format!("The value for the field '{field}' must be a valid variable path: {e}"),
                    at,
                );
            }
        } else if looks_like_call(text) {
            if let Err(e) = Call::parse(text) {
                self.schema(format!("The value for the field '{field}' must be a valid JSONPath or a valid intrinsic function call: {e}"), at);
            }
        } else if let Err(e) = Path::parse(text) {
            self.schema(format!("The value for the field '{field}' must be a valid JSONPath or a valid intrinsic function call: {e}"), at);
        }
    }

    fn template(&mut self, t: &Value, field: &str, at: &str, top: bool) {
        match t {
            Value::Object(obj) => {
                for (k, v) in obj {
                    let k_at = ptr(at, k);
                    if k.ends_with(".$") {
                        match v.as_str() {
                            Some(s) => self.dynamic(s, k, &k_at),
                            None => self.schema(
                                format!("The value for the field '{k}' must be a string"),
                                k_at,
                            ),
                        }
                    } else {
                        if let Some(s) = v.as_str() {
                            if (s.starts_with("$.")
                                || s.starts_with("$$.")
                                || (looks_like_call(s) && s.ends_with(')')))
                                && (Path::parse(s).is_ok() || Call::parse(s).is_ok())
                            {
                                self.warn(codes::NO_DOLLAR, format!("Field '{k}' looks like a path or intrinsic function but its name does not end in '.$'"), k_at.clone());
                            }
                        }
                        self.template(v, field, &k_at, false);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.template(v, field, &format!("{at}/{i}"), false);
                }
            }
            _ if top => self.schema(format!("Field '{field}' must be a JSON object"), at),
            _ => {}
        }
    }
}

/// Whether a value is a JSONata expression string.
fn is_expression(v: &Value) -> bool {
    v.as_str().is_some_and(|s| expression_text(s).is_some())
}

/// Deserializes a `Value` while recording duplicate object keys with their location.
struct DupSeed<'a> {
    dups: &'a RefCell<Vec<(String, String)>>,
    at: String,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(DupSeed {
            dups: self.dups,
            at: format!("{}/{}", self.at, out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(DupSeed {
                dups: self.dups,
                at: ptr(&self.at, &key),
            })?;
            if out.insert(key.clone(), v).is_some() {
                self.dups.borrow_mut().push((self.at.clone(), key));
            }
        }
        Ok(Value::Object(out))
    }
}
