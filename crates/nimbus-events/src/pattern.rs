//! EventBridge event patterns (content filtering), as the event bus rules use them.
//!
//! A pattern is a JSON object that mirrors the shape of the events it selects:
//!
//! ```json
//! {
//!   "source": ["aws.ec2"],
//!   "detail": {
//!     "state": [{ "anything-but": "initializing" }],
//!     "c-count": [{ "numeric": [">", 0, "<=", 5] }],
//!     "source-ip": [{ "cidr": "10.0.0.0/24" }]
//!   }
//! }
//! ```
//!
//! The rules, as EventBridge documents them:
//! - every field named in the pattern must match (AND); `"$or": [{..}, {..}]` at any object
//!   level makes the objects in its list alternatives (at least two, each naming fields);
//! - a leaf is an array of alternatives (OR): literals (strings, numbers, booleans, `null`)
//!   and operator objects;
//! - when the event holds an array where the pattern expects a value, the field matches if
//!   any element matches ("arrays match any"); arrays of objects are searched element by
//!   element, and all fields of one nested pattern object must match within the same element;
//! - a field missing from the event matches nothing but `{"exists": false}` and an
//!   `anything-but` never matches a missing field;
//! - numbers compare as numbers (`5` matches `5.0`); strings, numbers, booleans and `null`
//!   never equal one another;
//! - `exists` only sees leaf values: a field whose value is an object does not "exist" for it.
//!
//! Operators: `prefix` and `suffix` (a string, or `{"equals-ignore-case": "x"}`),
//! `equals-ignore-case`, `wildcard` (`*` matches any run of characters, `\*` and `\\` escape),
//! `anything-but` (a string, a number, a list of either, or `{"prefix"|"suffix"|"wildcard"|
//! "equals-ignore-case": string or list of strings}`), `numeric` (`["=", x]`, `["<", x]`,
//! `["<=", x]`, `[">", x]`, `[">=", x]`, or a lower bound followed by an upper bound such as
//! `[">", 0, "<=", 5]`), `exists` (`true` or `false`) and `cidr` (IPv4 or IPv6).
//!
//! Patterns come from users, so [`EventPattern::parse`] bounds the work it accepts: at most
//! [`MAX_PATTERN_BYTES`] of text, [`MAX_DEPTH`] levels of nesting and [`MAX_VALUES`] JSON
//! values. Matching is then linear in the size of the pattern times the size of the event.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// The largest pattern text [`EventPattern::parse`] accepts, in bytes.
pub const MAX_PATTERN_BYTES: usize = 64 * 1024;
/// The deepest nesting of JSON objects and arrays a pattern may have (the top level is 1).
pub const MAX_DEPTH: usize = 32;
/// The most JSON values (objects, arrays, keys' values and scalars) a pattern may hold.
pub const MAX_VALUES: usize = 8 * 1024;

/// The names accepted as operators, for error messages.
const OPERATORS: &str =
    "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr";

/// Names that may not be used as field names inside `$or`: there they are almost certainly an
/// operator object written one level too high, as EventBridge also rejects.
const RESERVED_IN_OR: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
];

/// Why a pattern was rejected. Every variant is a caller error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PatternError {
    #[error("event pattern is not valid json: {0}")]
    Json(String),
    #[error("event pattern is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("event pattern nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("event pattern has more than {max} values")]
    TooManyValues { max: usize },
    #[error(
        "invalid event pattern at {path}: unknown operator {operator:?} (use one of {OPERATORS})"
    )]
    UnknownOperator { path: String, operator: String },
    #[error("invalid event pattern at {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A validated EventBridge event pattern. Parse once, match many events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct EventPattern {
    /// The pattern as written; kept for display, storage and round trips.
    source: Value,
    root: ObjectPattern,
}

impl EventPattern {
    /// Parses and validates a pattern from its JSON text.
    pub fn parse(json: &str) -> Result<EventPattern, PatternError> {
        if json.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLarge {
                max: MAX_PATTERN_BYTES,
            });
        }
        // Reject deep nesting before the JSON parser recurses into it.
        if text_depth(json.as_bytes()) > MAX_DEPTH {
            return Err(PatternError::TooDeep { max: MAX_DEPTH });
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| PatternError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Validates a pattern that is already a JSON value (for example a table in a manifest).
    pub fn from_value(value: &Value) -> Result<EventPattern, PatternError> {
        check_bounds(value)?;
        let Value::Object(map) = value else {
            return Err(invalid(&Path::root(), "the pattern must be a json object"));
        };
        let root = Parser.object(map, &mut Path::root(), false)?;
        Ok(EventPattern {
            source: value.clone(),
            root,
        })
    }

    /// Whether `event` matches this pattern.
    pub fn matches(&self, event: &Value) -> bool {
        self.root.matches_value(Some(event))
    }

    /// The pattern as it was given.
    pub fn as_json(&self) -> &Value {
        &self.source
    }
}

impl PartialEq for EventPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for EventPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        Self::parse(s)
    }
}

impl TryFrom<Value> for EventPattern {
    type Error = PatternError;
    fn try_from(value: Value) -> Result<Self, PatternError> {
        Self::from_value(&value)
    }
}

impl From<EventPattern> for Value {
    fn from(p: EventPattern) -> Value {
        p.source
    }
}

/// Compact JSON, which [`EventPattern::parse`] accepts again.
impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form

/// An object level of the pattern: all fields must match, and one branch of each `$or`.
#[derive(Debug, Clone)]
struct ObjectPattern {
    fields: Vec<(String, FieldPattern)>,
    or: Option<Vec<ObjectPattern>>,
}

#[derive(Debug, Clone)]
enum FieldPattern {
    Object(ObjectPattern),
    /// Alternatives: the field matches if any of them does.
    Leaf(Vec<Matcher>),
}

#[derive(Debug, Clone)]
enum Matcher {
    /// A string, number, boolean or null to be equal to.
    Literal(Value),
    Prefix(String),
    /// Stored case-folded.
    PrefixIgnoreCase(String),
    Suffix(String),
    SuffixIgnoreCase(String),
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    AnythingBut(AnythingBut),
    Numeric(NumericRange),
    Exists(bool),
    Cidr(Cidr),
}

#[derive(Debug, Clone)]
enum AnythingBut {
    /// All strings or all numbers.
    Values(Vec<Value>),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    /// Stored case-folded.
    EqualsIgnoreCase(Vec<String>),
    Wildcard(Vec<Wildcard>),
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    value: f64,
    inclusive: bool,
}

#[derive(Debug, Clone, Copy)]
struct NumericRange {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

/// A wildcard pattern split at its (unescaped) stars: `a*b*c` is `["a", "b", "c"]`.
#[derive(Debug, Clone)]
struct Wildcard {
    segments: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Cidr {
    v6: bool,
    network: u128,
    mask: u128,
}

// ---------------------------------------------------------------------------------------------
// Matching

impl ObjectPattern {
    /// Matches the value found at this object's path (or nothing, when the path is missing).
    fn matches_value(&self, value: Option<&Value>) -> bool {
        match value {
            Some(Value::Object(map)) => self.matches_object(Some(map)),
            Some(v @ Value::Array(_)) => {
                // Arrays of objects: any one element must match the whole object pattern.
                let mut saw_object = false;
                for element in Flatten::new(v) {
                    if let Value::Object(map) = element {
                        saw_object = true;
                        if self.matches_object(Some(map)) {
                            return true;
                        }
                    }
                }
                !saw_object && self.matches_object(None)
            }
            // A scalar where an object was expected: every field below is missing.
            _ => self.matches_object(None),
        }
    }

    fn matches_object(&self, object: Option<&Map<String, Value>>) -> bool {
        self.fields.iter().all(|(name, field)| {
            let value = object.and_then(|o| o.get(name));
            match field {
                FieldPattern::Object(nested) => nested.matches_value(value),
                FieldPattern::Leaf(matchers) => matchers.iter().any(|m| m.matches_field(value)),
            }
        }) && self
            .or
            .as_ref()
            .is_none_or(|branches| branches.iter().any(|b| b.matches_object(object)))
    }
}

impl Matcher {
    fn matches_field(&self, value: Option<&Value>) -> bool {
        let mut leaves = leaves(value);
        match self {
            Matcher::Exists(true) => leaves.next().is_some(),
            Matcher::Exists(false) => leaves.next().is_none(),
            _ => leaves.any(|leaf| self.matches_leaf(leaf)),
        }
    }

    fn matches_leaf(&self, v: &Value) -> bool {
        match self {
            Matcher::Literal(lit) => literal_eq(lit, v),
            Matcher::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => v.as_str().is_some_and(|s| fold(s).starts_with(p)),
            Matcher::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::SuffixIgnoreCase(p) => v.as_str().is_some_and(|s| fold(s).ends_with(p)),
            Matcher::EqualsIgnoreCase(p) => v.as_str().is_some_and(|s| fold(s) == *p),
            Matcher::Wildcard(w) => v.as_str().is_some_and(|s| w.matches(s)),
            Matcher::AnythingBut(but) => !but.excludes(v),
            Matcher::Numeric(range) => match v {
                Value::Number(n) => n.as_f64().is_some_and(|x| range.contains(x)),
                _ => false,
            },
            Matcher::Cidr(cidr) => v.as_str().is_some_and(|s| cidr.contains(s)),
            Matcher::Exists(present) => *present,
        }
    }
}

impl AnythingBut {
    /// Whether a present leaf value is one of the excluded ones.
    fn excludes(&self, v: &Value) -> bool {
        match self {
            AnythingBut::Values(values) => values.iter().any(|x| literal_eq(x, v)),
            AnythingBut::Prefix(ps) => v
                .as_str()
                .is_some_and(|s| ps.iter().any(|p| s.starts_with(p.as_str()))),
            AnythingBut::Suffix(ps) => v
                .as_str()
                .is_some_and(|s| ps.iter().any(|p| s.ends_with(p.as_str()))),
            AnythingBut::EqualsIgnoreCase(ps) => v.as_str().is_some_and(|s| {
                let s = fold(s);
                ps.contains(&s)
            }),
            AnythingBut::Wildcard(ws) => {
                v.as_str().is_some_and(|s| ws.iter().any(|w| w.matches(s)))
            }
        }
    }
}

impl NumericRange {
    fn contains(&self, x: f64) -> bool {
        let above = self.lower.is_none_or(|b| {
            if b.inclusive {
                x >= b.value
            } else {
                x > b.value
            }
        });
        let below = self.upper.is_none_or(|b| {
            if b.inclusive {
                x <= b.value
            } else {
                x < b.value
            }
        });
        above && below
    }
}

impl Wildcard {
    fn parse(pattern: &str) -> Result<Wildcard, String> {
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = pattern.chars();
        let mut last_was_star = false;
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if last_was_star {
                        return Err("consecutive wildcard characters are not allowed".into());
                    }
                    segments.push(std::mem::take(&mut current));
                    last_was_star = true;
                    continue;
                }
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => current.push(e),
                    Some(other) => {
                        return Err(format!(
                            "invalid escape \\{other}: only \\* and \\\\ may be escaped"
                        ))
                    }
                    None => return Err("a wildcard pattern must not end with \\".into()),
                },
                c => current.push(c),
            }
            last_was_star = false;
        }
        segments.push(current);
        Ok(Wildcard { segments })
    }

    /// Glob matching with `*` only: the first segment anchors at the start, the last at the
    /// end, the ones between are found leftmost-first (which is optimal for `*`-only globs).
    /// Worst case O(len(s) * len(pattern)).
    fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return s.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return s == first;
        };
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        if s.len() < last.len() || !s.ends_with(last.as_str()) {
            return false;
        }
        s = &s[..s.len() - last.len()];
        for segment in middle {
            match s.find(segment.as_str()) {
                Some(at) => s = &s[at + segment.len()..],
                None => return false,
            }
        }
        true
    }
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not a cidr block such as 10.0.0.0/24 or 2001:db8::/32");
        let (ip, len) = text.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u32 = len.parse().map_err(|_| bad())?;
        let (v6, bits, addr) = match ip {
            IpAddr::V4(a) => (false, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, 128, u128::from(a)),
        };
        if len > bits {
            return Err(format!(
                "prefix length {len} is larger than {bits} in cidr block {text:?}"
            ));
        }
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (128 - len)) >> (128 - bits)
        };
        Ok(Cidr {
            v6,
            network: addr & mask,
            mask,
        })
    }

    fn contains(&self, s: &str) -> bool {
        let addr = match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !self.v6 => u128::from(u32::from(a)),
            Ok(IpAddr::V6(a)) if self.v6 => u128::from(a),
            _ => return false,
        };
        addr & self.mask == self.network
    }
}

/// Literal equality: same JSON type, numbers by value.
fn literal_eq(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => number_eq(a, b),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

/// Integers compare exactly (account ids do not lose digits); anything else as f64, so 5 == 5.0.
fn number_eq(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Case folding for the ignore-case operators: per-character lowercase, so it is the same
/// whatever the position of a character (unlike `str::to_lowercase` and the final sigma).
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Every value under `value` with arrays (at any depth) flattened away; objects and scalars
/// are yielded. An explicit stack, so event depth never turns into recursion depth.
struct Flatten<'a> {
    next: Option<&'a Value>,
    stack: Vec<std::slice::Iter<'a, Value>>,
}

impl<'a> Flatten<'a> {
    fn new(value: &'a Value) -> Self {
        Flatten {
            next: Some(value),
            stack: Vec::new(),
        }
    }
}

impl<'a> Iterator for Flatten<'a> {
    type Item = &'a Value;
    fn next(&mut self) -> Option<&'a Value> {
        loop {
            let v = match self.next.take() {
                Some(v) => v,
                None => {
                    let top = self.stack.last_mut()?;
                    match top.next() {
                        Some(v) => v,
                        None => {
                            self.stack.pop();
                            continue;
                        }
                    }
                }
            };
            match v {
                Value::Array(items) => self.stack.push(items.iter()),
                other => return Some(other),
            }
        }
    }
}

/// The leaf (non-object) values of a field, arrays flattened.
fn leaves(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value
        .into_iter()
        .flat_map(Flatten::new)
        .filter(|v| !v.is_object())
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

/// The deepest bracket nesting in JSON text, ignoring brackets inside strings. Garbage in,
/// some number out: the JSON parser reports the real errors.
fn text_depth(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Bounds on a pattern value before it is interpreted, walked without recursion.
fn check_bounds(value: &Value) -> Result<(), PatternError> {
    let mut stack = vec![(value, 1usize)];
    let (mut count, mut bytes) = (0usize, 0usize);
    while let Some((v, depth)) = stack.pop() {
        count += 1;
        if count > MAX_VALUES {
            return Err(PatternError::TooManyValues { max: MAX_VALUES });
        }
        match v {
            Value::Object(map) => {
                if depth > MAX_DEPTH {
                    return Err(PatternError::TooDeep { max: MAX_DEPTH });
                }
                for (k, child) in map {
                    bytes += k.len();
                    stack.push((child, depth + 1));
                }
            }
            Value::Array(items) => {
                if depth > MAX_DEPTH {
                    return Err(PatternError::TooDeep { max: MAX_DEPTH });
                }
                stack.extend(items.iter().map(|child| (child, depth + 1)));
            }
            Value::String(s) => bytes += s.len(),
            _ => bytes += 1,
        }
        if bytes > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLarge {
                max: MAX_PATTERN_BYTES,
            });
        }
    }
    Ok(())
}

/// Where in the pattern an error is, for messages: `detail.state[0].numeric`.
struct Path(Vec<String>);

impl Path {
    fn root() -> Self {
        Path(Vec::new())
    }
    fn push_key(&mut self, key: &str) {
        self.0.push(key.to_string());
    }
    fn push_index(&mut self, i: usize) {
        self.0.push(format!("[{i}]"));
    }
    fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the top level");
        }
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 && !step.starts_with('[') {
                f.write_str(".")?;
            }
            f.write_str(step)?;
        }
        Ok(())
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> PatternError {
    PatternError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Recursion here is bounded by [`MAX_DEPTH`], which [`check_bounds`] enforced first.
struct Parser;

impl Parser {
    fn object(
        &self,
        map: &Map<String, Value>,
        path: &mut Path,
        in_or: bool,
    ) -> Result<ObjectPattern, PatternError> {
        if map.is_empty() {
            return Err(invalid(path, "empty objects are not allowed"));
        }
        let mut fields = Vec::with_capacity(map.len());
        let mut or = None;
        for (name, value) in map {
            if name == "$or" {
                path.push_key(name);
                or = Some(self.or_branches(value, path)?);
                path.pop();
                continue;
            }
            path.push_key(name);
            if in_or && RESERVED_IN_OR.contains(&name.as_str()) {
                return Err(invalid(
                    path,
                    format!(
                        "{name:?} is an operator, not a field name: inside $or each object names \
                         event fields, and operators go inside their [ ] lists"
                    ),
                ));
            }
            let field = match value {
                Value::Object(nested) => FieldPattern::Object(self.object(nested, path, in_or)?),
                Value::Array(items) => FieldPattern::Leaf(self.leaf_list(items, path)?),
                _ => {
                    return Err(invalid(
                        path,
                        "a field must be an object or an array of values to match: \
                         write [value], not value",
                    ))
                }
            };
            path.pop();
            fields.push((name.clone(), field));
        }
        Ok(ObjectPattern { fields, or })
    }

    fn or_branches(
        &self,
        value: &Value,
        path: &mut Path,
    ) -> Result<Vec<ObjectPattern>, PatternError> {
        let need = "$or must be an array of at least two objects";
        let Value::Array(items) = value else {
            return Err(invalid(path, need));
        };
        if items.len() < 2 {
            return Err(invalid(path, need));
        }
        let mut branches = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            path.push_index(i);
            let Value::Object(map) = item else {
                return Err(invalid(path, need));
            };
            branches.push(self.object(map, path, true)?);
            path.pop();
        }
        Ok(branches)
    }

    fn leaf_list(&self, items: &[Value], path: &mut Path) -> Result<Vec<Matcher>, PatternError> {
        if items.is_empty() {
            return Err(invalid(path, "empty arrays are not allowed"));
        }
        let mut matchers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            path.push_index(i);
            let matcher = match item {
                Value::Object(op) => self.operator(op, path)?,
                Value::Array(_) => {
                    return Err(invalid(
                        path,
                        "a match value must be a string, number, boolean, null or operator \
                         object, not an array",
                    ))
                }
                scalar => Matcher::Literal(scalar.clone()),
            };
            path.pop();
            matchers.push(matcher);
        }
        Ok(matchers)
    }

    fn operator(&self, op: &Map<String, Value>, path: &mut Path) -> Result<Matcher, PatternError> {
        let (name, arg) = single_key(op, path)?;
        path.push_key(name);
        let matcher = match name.as_str() {
            "prefix" => match arg {
                Value::String(s) => Matcher::Prefix(s.clone()),
                Value::Object(o) => Matcher::PrefixIgnoreCase(ignore_case_arg(o, path)?),
                _ => {
                    return Err(invalid(
                        path,
                        "prefix must be a string or {\"equals-ignore-case\": string}",
                    ))
                }
            },
            "suffix" => match arg {
                Value::String(s) => Matcher::Suffix(s.clone()),
                Value::Object(o) => Matcher::SuffixIgnoreCase(ignore_case_arg(o, path)?),
                _ => {
                    return Err(invalid(
                        path,
                        "suffix must be a string or {\"equals-ignore-case\": string}",
                    ))
                }
            },
            "equals-ignore-case" => match arg {
                Value::String(s) => Matcher::EqualsIgnoreCase(fold(s)),
                _ => return Err(invalid(path, "equals-ignore-case must be a string")),
            },
            "wildcard" => match arg {
                Value::String(s) => {
                    Matcher::Wildcard(Wildcard::parse(s).map_err(|e| invalid(path, e))?)
                }
                _ => return Err(invalid(path, "wildcard must be a string")),
            },
            "anything-but" => Matcher::AnythingBut(anything_but(arg, path)?),
            "numeric" => Matcher::Numeric(numeric(arg, path)?),
            "exists" => match arg {
                Value::Bool(b) => Matcher::Exists(*b),
                _ => return Err(invalid(path, "exists must be true or false")),
            },
            "cidr" => match arg {
                Value::String(s) => Matcher::Cidr(Cidr::parse(s).map_err(|e| invalid(path, e))?),
                _ => {
                    return Err(invalid(
                        path,
                        "cidr must be a string such as \"10.0.0.0/24\"",
                    ))
                }
            },
            _ => {
                path.pop();
                return Err(PatternError::UnknownOperator {
                    path: path.to_string(),
                    operator: name.clone(),
                });
            }
        };
        path.pop();
        Ok(matcher)
    }
}

fn single_key<'a>(
    op: &'a Map<String, Value>,
    path: &Path,
) -> Result<(&'a String, &'a Value), PatternError> {
    let mut entries = op.iter();
    match (entries.next(), entries.next()) {
        (Some(entry), None) => Ok(entry),
        (None, _) => Err(invalid(
            path,
            format!("an operator object must not be empty (use one of {OPERATORS})"),
        )),
        _ => {
            let keys: Vec<&str> = op.keys().map(String::as_str).collect();
            Err(invalid(
                path,
                format!(
                    "an operator object must have exactly one key, found {}",
                    keys.join(", ")
                ),
            ))
        }
    }
}

/// The `{"equals-ignore-case": "x"}` inside `prefix` and `suffix`; returns it case-folded.
fn ignore_case_arg(o: &Map<String, Value>, path: &mut Path) -> Result<String, PatternError> {
    let (name, arg) = single_key(o, path)?;
    match (name.as_str(), arg) {
        ("equals-ignore-case", Value::String(s)) => Ok(fold(s)),
        ("equals-ignore-case", _) => {
            path.push_key(name);
            Err(invalid(path, "equals-ignore-case must be a string"))
        }
        _ => Err(invalid(
            path,
            format!("unsupported modifier {name:?}: only equals-ignore-case may be used here"),
        )),
    }
}

fn anything_but(arg: &Value, path: &mut Path) -> Result<AnythingBut, PatternError> {
    match arg {
        Value::String(_) | Value::Number(_) => Ok(AnythingBut::Values(vec![arg.clone()])),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid(path, "anything-but must not be an empty list"));
            }
            let all_strings = items.iter().all(Value::is_string);
            let all_numbers = items.iter().all(Value::is_number);
            if !all_strings && !all_numbers {
                return Err(invalid(
                    path,
                    "an anything-but list must hold only strings or only numbers",
                ));
            }
            Ok(AnythingBut::Values(items.clone()))
        }
        Value::Object(o) => {
            let (name, inner) = single_key(o, path)?;
            path.push_key(name);
            let strings = |what: &str| -> Result<Vec<String>, PatternError> {
                let list = match inner {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            invalid(
                                path,
                                format!("{what} must be a string or a list of strings"),
                            )
                        })?,
                    _ => {
                        return Err(invalid(
                            path,
                            format!("{what} must be a string or a non-empty list of strings"),
                        ))
                    }
                };
                Ok(list)
            };
            let but = match name.as_str() {
                "prefix" | "suffix" => {
                    let list = strings(name)?;
                    if list.iter().any(String::is_empty) {
                        return Err(invalid(
                            path,
                            format!("an anything-but {name} must not be empty"),
                        ));
                    }
                    if name == "prefix" {
                        AnythingBut::Prefix(list)
                    } else {
                        AnythingBut::Suffix(list)
                    }
                }
                "equals-ignore-case" => {
                    AnythingBut::EqualsIgnoreCase(strings(name)?.iter().map(|s| fold(s)).collect())
                }
                "wildcard" => AnythingBut::Wildcard(
                    strings(name)?
                        .iter()
                        .map(|s| Wildcard::parse(s))
                        .collect::<Result<_, _>>()
                        .map_err(|e| invalid(path, e))?,
                ),
                _ => {
                    path.pop();
                    return Err(invalid(
                        path,
                        format!(
                            "unsupported anything-but operator {name:?} (use prefix, suffix, \
                             equals-ignore-case or wildcard)"
                        ),
                    ));
                }
            };
            path.pop();
            Ok(but)
        }
        _ => Err(invalid(
            path,
            "anything-but must be a string, a number, a list of strings or numbers, \
             or an operator object",
        )),
    }
}

fn numeric(arg: &Value, path: &mut Path) -> Result<NumericRange, PatternError> {
    let usage = "numeric must be [op, number] with op one of =, <, <=, >, >=, or a range \
                 [\">\" or \">=\", number, \"<\" or \"<=\", number]";
    let Value::Array(items) = arg else {
        return Err(invalid(path, usage));
    };
    let term = |i: usize| -> Result<(&str, f64), PatternError> {
        let op = items[i].as_str();
        let value = items[i + 1].as_f64();
        match (op, value) {
            (Some(op), Some(value)) if matches!(op, "=" | "<" | "<=" | ">" | ">=") => {
                Ok((op, value))
            }
            (Some(op), Some(_)) => Err(invalid(
                path,
                format!("unknown numeric comparison {op:?} (use =, <, <=, >, >=)"),
            )),
            (Some(op), None) => Err(invalid(path, format!("the value of {op} must be a number"))),
            _ => Err(invalid(path, usage)),
        }
    };
    let bound = |value, inclusive| Some(Bound { value, inclusive });
    match items.len() {
        2 => {
            let (op, x) = term(0)?;
            Ok(match op {
                "=" => NumericRange {
                    lower: bound(x, true),
                    upper: bound(x, true),
                },
                "<" => NumericRange {
                    lower: None,
                    upper: bound(x, false),
                },
                "<=" => NumericRange {
                    lower: None,
                    upper: bound(x, true),
                },
                ">" => NumericRange {
                    lower: bound(x, false),
                    upper: None,
                },
                _ => NumericRange {
                    lower: bound(x, true),
                    upper: None,
                },
            })
        }
        4 => {
            let (low_op, low) = term(0)?;
            let (high_op, high) = term(2)?;
            if !matches!(low_op, ">" | ">=") || !matches!(high_op, "<" | "<=") {
                return Err(invalid(
                    path,
                    "a numeric range must be a lower bound (> or >=) followed by an upper bound \
                     (< or <=)",
                ));
            }
            if low >= high {
                return Err(invalid(
                    path,
                    format!(
                        "the lower bound {low} of a numeric range must be less than \
                         its upper bound {high}"
                    ),
                ));
            }
            Ok(NumericRange {
                lower: bound(low, low_op == ">="),
                upper: bound(high, high_op == "<="),
            })
        }
        _ => Err(invalid(path, usage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The event most table rows run against: EventBridge's documented sample plus fields
    /// for every operator.
    fn sample_event() -> Value {
        json!({
            "version": "0",
            "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "012345679012",
            "time": "2017-10-02T16:24:49Z",
            "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
            "detail": {
                "c-count": 5,
                "d-count": 3,
                "x-limit": 301.8,
                "source-ip": "10.0.0.33",
                "source-ipv6": "2001:db8::1",
                "instance-id": "i-000000aaaaaa00000",
                "state": "running",
                "service": "EventBridge",
                "file": "photos/IMG_0001.PNG",
                "path": "/usr/lib/libc.so",
                "greek": "ΟΔΟΣ",
                "tags": ["prod", "web", "eu"],
                "codes": [200, 404],
                "enabled": true,
                "disabled": false,
                "owner": null,
                "empty": "",
                "nested": { "deep": { "value": 42 } },
                "items": [ { "name": "a", "qty": 1 }, { "name": "b", "qty": 2 } ],
                "matrix": [[1, 2], [3, [4]]],
                "none": [],
                "big": 123456789012345678u64,
                "star": "a*b"
            }
        })
    }

    /// (pattern, matches the sample event?)
    #[rustfmt::skip]
    const CASES: &[(&str, bool)] = &[
        // exact strings, OR within a list, AND across fields
        (r#"{"source": ["aws.ec2"]}"#, true),
        (r#"{"source": ["aws.s3"]}"#, false),
        (r#"{"source": ["aws.s3", "aws.ec2"]}"#, true),
        (r#"{"source": ["aws.ec2"], "region": ["us-east-1"]}"#, true),
        (r#"{"source": ["aws.ec2"], "region": ["us-west-2"]}"#, false),
        (r#"{"detail": {"state": ["running"]}}"#, true),
        (r#"{"detail": {"state": ["Running"]}}"#, false),
        (r#"{"missing": ["x"]}"#, false),
        (r#"{"detail": {"empty": [""]}}"#, true),
        (r#"{"detail": {"state": [""]}}"#, false),
        // numbers compare by value and never equal strings
        (r#"{"detail": {"c-count": [5]}}"#, true),
        (r#"{"detail": {"c-count": [5.0]}}"#, true),
        (r#"{"detail": {"c-count": [5e0]}}"#, true),
        (r#"{"detail": {"c-count": [6]}}"#, false),
        (r#"{"detail": {"c-count": ["5"]}}"#, false),
        (r#"{"detail": {"x-limit": [301.8]}}"#, true),
        (r#"{"detail": {"big": [123456789012345678]}}"#, true),
        (r#"{"detail": {"big": [123456789012345679]}}"#, false),
        (r#"{"account": [12345679012]}"#, false),
        // booleans and null
        (r#"{"detail": {"enabled": [true]}}"#, true),
        (r#"{"detail": {"enabled": [false]}}"#, false),
        (r#"{"detail": {"enabled": ["true"]}}"#, false),
        (r#"{"detail": {"disabled": [false]}}"#, true),
        (r#"{"detail": {"owner": [null]}}"#, true),
        (r#"{"detail": {"missing": [null]}}"#, false),
        (r#"{"detail": {"state": [null]}}"#, false),
        // arrays match any; nested arrays flatten; arrays of objects keep elements apart
        (r#"{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"]}"#, true),
        (r#"{"detail": {"tags": ["web"]}}"#, true),
        (r#"{"detail": {"tags": ["dev"]}}"#, false),
        (r#"{"detail": {"codes": [404]}}"#, true),
        (r#"{"detail": {"codes": [500]}}"#, false),
        (r#"{"detail": {"matrix": [4]}}"#, true),
        (r#"{"detail": {"items": {"name": ["b"]}}}"#, true),
        (r#"{"detail": {"items": {"name": ["a"], "qty": [1]}}}"#, true),
        (r#"{"detail": {"items": {"name": ["a"], "qty": [2]}}}"#, false),
        (r#"{"detail": {"none": ["x"]}}"#, false),
        // nested objects
        (r#"{"detail": {"nested": {"deep": {"value": [42]}}}}"#, true),
        (r#"{"detail": {"nested": {"deep": {"value": [43]}}}}"#, false),
        (r#"{"detail": {"nested": ["x"]}}"#, false),
        (r#"{"source": {"x": ["aws.ec2"]}}"#, false),
        // prefix
        (r#"{"time": [{"prefix": "2017-10-02"}]}"#, true),
        (r#"{"time": [{"prefix": "2018"}]}"#, false),
        (r#"{"detail": {"c-count": [{"prefix": "5"}]}}"#, false),
        (r#"{"detail": {"empty": [{"prefix": ""}]}}"#, true),
        (r#"{"detail": {"service": [{"prefix": "eventb"}]}}"#, false),
        (r#"{"detail": {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]}}"#, true),
        (r#"{"detail": {"service": [{"prefix": {"equals-ignore-case": "EVENTS"}}]}}"#, false),
        // suffix
        (r#"{"source": [{"suffix": "ec2"}]}"#, true),
        (r#"{"source": [{"suffix": "s3"}]}"#, false),
        (r#"{"detail": {"file": [{"suffix": ".png"}]}}"#, false),
        (r#"{"detail": {"file": [{"suffix": {"equals-ignore-case": ".png"}}]}}"#, true),
        (r#"{"detail": {"file": [{"suffix": {"equals-ignore-case": ".jpg"}}]}}"#, false),
        // equals-ignore-case
        (r#"{"source": [{"equals-ignore-case": "AWS.EC2"}]}"#, true),
        (r#"{"source": [{"equals-ignore-case": "aws.ec"}]}"#, false),
        (r#"{"detail": {"greek": [{"equals-ignore-case": "οδοσ"}]}}"#, true),
        (r#"{"detail": {"c-count": [{"equals-ignore-case": "5"}]}}"#, false),
        // wildcard
        (r#"{"detail": {"path": [{"wildcard": "*/lib/*"}]}}"#, true),
        (r#"{"detail": {"path": [{"wildcard": "*/bin/*"}]}}"#, false),
        (r#"{"source": [{"wildcard": "aws.*"}]}"#, true),
        (r#"{"source": [{"wildcard": "*.ec2"}]}"#, true),
        (r#"{"source": [{"wildcard": "a*s*e*2"}]}"#, true),
        (r#"{"source": [{"wildcard": "aws.ec2"}]}"#, true),
        (r#"{"source": [{"wildcard": "aws.ec"}]}"#, false),
        (r#"{"source": [{"wildcard": "*"}]}"#, true),
        (r#"{"detail": {"star": [{"wildcard": "a\\*b"}]}}"#, true),
        (r#"{"detail": {"state": [{"wildcard": "r\\*g"}]}}"#, false),
        (r#"{"detail": {"c-count": [{"wildcard": "*"}]}}"#, false),
        // anything-but: values, lists, never a missing field, any element of an array
        (r#"{"detail": {"state": [{"anything-but": "initializing"}]}}"#, true),
        (r#"{"detail": {"state": [{"anything-but": "running"}]}}"#, false),
        (r#"{"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}"#, true),
        (r#"{"detail": {"state": [{"anything-but": ["stopped", "running"]}]}}"#, false),
        (r#"{"detail": {"x-limit": [{"anything-but": 123}]}}"#, true),
        (r#"{"detail": {"x-limit": [{"anything-but": 301.8}]}}"#, false),
        (r#"{"detail": {"c-count": [{"anything-but": [5.0, 6]}]}}"#, false),
        (r#"{"detail": {"c-count": [{"anything-but": [100, 200]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"anything-but": "5"}]}}"#, true),
        (r#"{"detail": {"missing": [{"anything-but": "x"}]}}"#, false),
        (r#"{"detail": {"nested": [{"anything-but": "x"}]}}"#, false),
        (r#"{"detail": {"tags": [{"anything-but": "prod"}]}}"#, true),
        (r#"{"detail": {"tags": [{"anything-but": ["prod", "web", "eu"]}]}}"#, false),
        // anything-but with an operator
        (r#"{"region": [{"anything-but": {"prefix": "us-"}}]}"#, false),
        (r#"{"region": [{"anything-but": {"prefix": "eu-"}}]}"#, true),
        (r#"{"region": [{"anything-but": {"prefix": ["eu-", "ap-"]}}]}"#, true),
        (r#"{"region": [{"anything-but": {"prefix": ["eu-", "us-"]}}]}"#, false),
        (r#"{"detail": {"file": [{"anything-but": {"suffix": ".PNG"}}]}}"#, false),
        (r#"{"detail": {"file": [{"anything-but": {"suffix": ".png"}}]}}"#, true),
        (r#"{"detail": {"state": [{"anything-but": {"equals-ignore-case": "RUNNING"}}]}}"#, false),
        (r#"{"detail": {"state": [{"anything-but": {"equals-ignore-case": ["STOPPED", "PENDING"]}}]}}"#, true),
        (r#"{"detail": {"path": [{"anything-but": {"wildcard": "*/lib/*"}}]}}"#, false),
        (r#"{"detail": {"path": [{"anything-but": {"wildcard": ["*/bin/*", "*.txt"]}}]}}"#, true),
        // numeric
        (r#"{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": [">", 0, "<", 5]}]}}"#, false),
        (r#"{"detail": {"c-count": [{"numeric": [">=", 5, "<", 6]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": [">", 5]}]}}"#, false),
        (r#"{"detail": {"c-count": [{"numeric": [">=", 5]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": ["<", 5]}]}}"#, false),
        (r#"{"detail": {"c-count": [{"numeric": ["<=", 5]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": ["=", 5]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": ["=", 5.5]}]}}"#, false),
        (r#"{"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}}"#, true),
        (r#"{"detail": {"d-count": [{"numeric": ["<", 10]}]}}"#, true),
        (r#"{"detail": {"c-count": [{"numeric": [">", -10.5, "<", -1]}]}}"#, false),
        (r#"{"detail": {"codes": [{"numeric": [">=", 400, "<", 500]}]}}"#, true),
        (r#"{"detail": {"codes": [{"numeric": [">=", 500]}]}}"#, false),
        (r#"{"detail": {"state": [{"numeric": [">", 0]}]}}"#, false),
        (r#"{"account": [{"numeric": [">", 0]}]}"#, false),
        (r#"{"detail": {"missing": [{"numeric": [">", 0]}]}}"#, false),
        // exists: leaves only; null is a value; an empty array holds none
        (r#"{"detail": {"c-count": [{"exists": true}]}}"#, true),
        (r#"{"detail": {"c-count": [{"exists": false}]}}"#, false),
        (r#"{"detail": {"missing": [{"exists": false}]}}"#, true),
        (r#"{"detail": {"missing": [{"exists": true}]}}"#, false),
        (r#"{"detail": {"nested": [{"exists": true}]}}"#, false),
        (r#"{"detail": {"nested": [{"exists": false}]}}"#, true),
        (r#"{"detail": {"owner": [{"exists": true}]}}"#, true),
        (r#"{"detail": {"none": [{"exists": true}]}}"#, false),
        (r#"{"detail": {"none": [{"exists": false}]}}"#, true),
        (r#"{"missing": {"child": [{"exists": false}]}}"#, true),
        (r#"{"missing": {"child": [{"exists": true}]}}"#, false),
        (r#"{"detail": {"missing": [{"exists": false}, "x"]}}"#, true),
        (r#"{"detail": {"state": [{"exists": false}, "running"]}}"#, true),
        (r#"{"detail": {"state": [{"exists": false}, "stopped"]}}"#, false),
        (r#"{"detail": {"items": {"qty": [{"exists": true}]}}}"#, true),
        (r#"{"detail": {"items": {"price": [{"exists": false}]}}}"#, true),
        (r#"{"detail": {"items": {"name": [{"exists": false}]}}}"#, false),
        // cidr, IPv4 and IPv6
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}"#, true),
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}"#, false),
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.0.32/30"}]}}"#, true),
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.0.36/30"}]}}"#, false),
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.0.33/32"}]}}"#, true),
        (r#"{"detail": {"source-ip": [{"cidr": "10.0.0.99/24"}]}}"#, true),
        (r#"{"detail": {"source-ip": [{"cidr": "0.0.0.0/0"}]}}"#, true),
        (r#"{"detail": {"source-ip": [{"cidr": "::/0"}]}}"#, false),
        (r#"{"detail": {"source-ipv6": [{"cidr": "2001:db8::/32"}]}}"#, true),
        (r#"{"detail": {"source-ipv6": [{"cidr": "2001:db9::/32"}]}}"#, false),
        (r#"{"detail": {"source-ipv6": [{"cidr": "2001:db8::1/128"}]}}"#, true),
        (r#"{"detail": {"source-ipv6": [{"cidr": "0.0.0.0/0"}]}}"#, false),
        (r#"{"detail": {"state": [{"cidr": "0.0.0.0/0"}]}}"#, false),
        // $or at any level, with AND inside, nested, next to plain fields
        (r#"{"source": ["aws.ec2"], "$or": [{"detail": {"c-count": [9]}}, {"detail": {"d-count": [3]}}]}"#, true),
        (r#"{"source": ["aws.s3"], "$or": [{"region": ["us-east-1"]}, {"account": ["012345679012"]}]}"#, false),
        (r#"{"$or": [{"source": ["x"]}, {"region": ["y"]}]}"#, false),
        (r#"{"detail": {"$or": [{"state": ["stopped"]}, {"c-count": [{"numeric": [">", 4]}]}]}}"#, true),
        (r#"{"$or": [{"source": ["aws.ec2"], "region": ["eu-west-1"]}, {"source": ["aws.s3"]}]}"#, false),
        (r#"{"$or": [{"source": ["nope"]}, {"region": ["us-east-1"], "$or": [{"account": ["1"]}, {"detail": {"state": ["running"]}}]}]}"#, true),
        (r#"{"$or": [{"missing": [{"exists": true}]}, {"detail": {"missing": [{"exists": false}]}}]}"#, true),
        // the documented complex example
        (
            r#"{
                "time": [{"prefix": "2017-10-02"}],
                "detail": {
                    "state": [{"anything-but": "initializing"}],
                    "c-count": [{"numeric": [">", 0, "<=", 5]}],
                    "d-count": [{"numeric": ["<", 10]}],
                    "x-limit": [{"anything-but": [100, 200, 300]}],
                    "source-ip": [{"cidr": "10.0.0.0/8"}]
                }
            }"#,
            true,
        ),
    ];

    #[test]
    fn every_operator_matching_and_not() {
        let event = sample_event();
        let mut failures = Vec::new();
        for (pattern, expected) in CASES {
            let parsed = EventPattern::parse(pattern)
                .unwrap_or_else(|e| panic!("pattern {pattern} should parse: {e}"));
            if parsed.matches(&event) != *expected {
                failures.push(format!("expected {expected} for {pattern}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(CASES.len() >= 60);
    }

    /// (pattern, event, matches?) for shapes the sample event does not have.
    #[test]
    fn event_shapes() {
        let cases = [
            (
                json!({"a": [{"exists": false}]}),
                json!("not an object"),
                true,
            ),
            (json!({"a": ["x"]}), json!(5), false),
            (json!({"a": ["x"]}), json!([{"a": "y"}, {"a": "x"}]), true),
            (
                json!({"v": [{"wildcard": "ab*ba"}]}),
                json!({"v": "aba"}),
                false,
            ),
            (
                json!({"v": [{"wildcard": "ab*ba"}]}),
                json!({"v": "abba"}),
                true,
            ),
            (
                json!({"v": [{"wildcard": "ab*ba"}]}),
                json!({"v": "abXYba"}),
                true,
            ),
            (
                json!({"v": [{"wildcard": "*a*"}]}),
                json!({"v": "bab"}),
                true,
            ),
            (
                json!({"v": [{"wildcard": "*a*"}]}),
                json!({"v": "bbb"}),
                false,
            ),
            (json!({"v": [{"wildcard": "a*"}]}), json!({"v": ""}), false),
            (json!({"v": [{"wildcard": "*"}]}), json!({"v": ""}), true),
            (
                json!({"v": [{"wildcard": "*b*b"}]}),
                json!({"v": "abab"}),
                true,
            ),
            (
                json!({"v": [{"wildcard": "é*ü"}]}),
                json!({"v": "école au menü"}),
                true,
            ),
            (
                json!({"v": [{"equals-ignore-case": "ÉCOLE"}]}),
                json!({"v": "école"}),
                true,
            ),
            (
                json!({"v": [{"prefix": {"equals-ignore-case": "ÉC"}}]}),
                json!({"v": "école"}),
                true,
            ),
            (
                json!({"e": {"n": ["Anna"]}}),
                json!({"e": [[{"n": "John"}], [{"n": "Anna"}]]}),
                true,
            ),
            (
                json!({"e": {"n": ["Anna"], "l": ["Jones"]}}),
                json!({"e": [[{"n": "Anna", "l": "Smith"}], [{"n": "Peter", "l": "Jones"}]]}),
                false,
            ),
            (
                json!({"a": {"b": [{"exists": false}]}}),
                json!({"a": [1, 2]}),
                true,
            ),
            (
                json!({"a": {"b": [{"exists": false}]}}),
                json!({"a": [{"b": 1}]}),
                false,
            ),
            (
                json!({"a": {"b": [{"exists": false}]}}),
                json!({"a": [{"b": 1}, {"c": 1}]}),
                true,
            ),
            (
                json!({"a": {"b": [{"exists": false}]}}),
                json!({"a": []}),
                true,
            ),
            (
                json!({"a": [{"anything-but": "x"}]}),
                json!({"a": null}),
                true,
            ),
            (
                json!({"a": [{"anything-but": "x"}]}),
                json!({"a": []}),
                false,
            ),
            (
                json!({"a": [{"anything-but": {"prefix": "x"}}]}),
                json!({"a": 1}),
                true,
            ),
            (
                json!({"a": [-1]}),
                json!({"a": 18446744073709551615u64}),
                false,
            ),
            (
                json!({"a": [18446744073709551615u64]}),
                json!({"a": 18446744073709551615u64}),
                true,
            ),
            (
                json!({"a": [{"numeric": ["=", 0]}]}),
                json!({"a": -0.0}),
                true,
            ),
            (
                json!({"a": [{"numeric": [">", 1e300]}]}),
                json!({"a": 1.5e308}),
                true,
            ),
            (
                json!({"a": [{"cidr": "::ffff:0:0/96"}]}),
                json!({"a": "::ffff:10.0.0.1"}),
                true,
            ),
            (
                json!({"a": [{"cidr": "10.0.0.0/8"}]}),
                json!({"a": "010.0.0.1"}),
                false,
            ),
            (
                json!({"a": ["x"], "$or": [{"b": ["y"]}, {"c": ["z"]}]}),
                json!({"a": "x", "c": "z"}),
                true,
            ),
        ];
        for (pattern, event, expected) in cases {
            let parsed = EventPattern::from_value(&pattern).unwrap();
            assert_eq!(
                parsed.matches(&event),
                expected,
                "{pattern} against {event}"
            );
        }
    }

    /// (pattern, a piece of the error message)
    #[rustfmt::skip]
    const ERRORS: &[(&str, &str)] = &[
        ("", "not valid json"),
        ("{", "not valid json"),
        (r#"{"a": ["x"]} trailing"#, "not valid json"),
        ("[]", "the pattern must be a json object"),
        (r#""source""#, "the pattern must be a json object"),
        ("null", "the pattern must be a json object"),
        ("{}", "at the top level: empty objects are not allowed"),
        (r#"{"a": {}}"#, "at a: empty objects are not allowed"),
        (r#"{"a": "x"}"#, "at a: a field must be an object or an array"),
        (r#"{"a": 5}"#, "must be an object or an array"),
        (r#"{"a": null}"#, "must be an object or an array"),
        (r#"{"a": []}"#, "at a: empty arrays are not allowed"),
        (r#"{"a": [["x"]]}"#, "at a[0]: a match value must be"),
        (r#"{"a": {"b": [1, {"regex": "x"}]}}"#, r#"at a.b[1]: unknown operator "regex" (use one of prefix"#),
        (r#"{"a": [{"Prefix": "x"}]}"#, r#"unknown operator "Prefix""#),
        (r#"{"a": [{"exactly": "x"}]}"#, r#"unknown operator "exactly""#),
        (r#"{"a": [{}]}"#, "an operator object must not be empty"),
        (r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#, "exactly one key, found prefix, suffix"),
        (r#"{"a": [{"prefix": 5}]}"#, "at a[0].prefix: prefix must be a string"),
        (r#"{"a": [{"prefix": ["x"]}]}"#, "prefix must be a string"),
        (r#"{"a": [{"prefix": {"exists": true}}]}"#, r#"unsupported modifier "exists""#),
        (r#"{"a": [{"prefix": {"equals-ignore-case": 5}}]}"#, "equals-ignore-case must be a string"),
        (r#"{"a": [{"prefix": {}}]}"#, "must not be empty"),
        (r#"{"a": [{"suffix": ["x"]}]}"#, "suffix must be a string"),
        (r#"{"a": [{"suffix": {"equals-ignore-case": "x", "prefix": "y"}}]}"#, "exactly one key"),
        (r#"{"a": [{"equals-ignore-case": ["x"]}]}"#, "equals-ignore-case must be a string"),
        (r#"{"a": [{"wildcard": "a**b"}]}"#, "consecutive wildcard characters are not allowed"),
        (r#"{"a": [{"wildcard": "a\\b"}]}"#, "invalid escape"),
        (r#"{"a": [{"wildcard": "ab\\"}]}"#, "must not end with"),
        (r#"{"a": [{"wildcard": 1}]}"#, "wildcard must be a string"),
        (r#"{"a": [{"anything-but": []}]}"#, "anything-but must not be an empty list"),
        (r#"{"a": [{"anything-but": ["x", 1]}]}"#, "only strings or only numbers"),
        (r#"{"a": [{"anything-but": [null]}]}"#, "only strings or only numbers"),
        (r#"{"a": [{"anything-but": null}]}"#, "anything-but must be a string, a number"),
        (r#"{"a": [{"anything-but": true}]}"#, "anything-but must be a string, a number"),
        (r#"{"a": [{"anything-but": {"prefix": ""}}]}"#, "an anything-but prefix must not be empty"),
        (r#"{"a": [{"anything-but": {"suffix": ["x", ""]}}]}"#, "an anything-but suffix must not be empty"),
        (r#"{"a": [{"anything-but": {"prefix": [1]}}]}"#, "prefix must be a string or a list of strings"),
        (r#"{"a": [{"anything-but": {"prefix": []}}]}"#, "non-empty list"),
        (r#"{"a": [{"anything-but": {"equals-ignore-case": 5}}]}"#, "equals-ignore-case must be a string"),
        (r#"{"a": [{"anything-but": {"wildcard": "**"}}]}"#, "consecutive wildcard"),
        (r#"{"a": [{"anything-but": {"exists": true}}]}"#, r#"at a[0].anything-but: unsupported anything-but operator "exists""#),
        (r#"{"a": [{"anything-but": {"numeric": [">", 1]}}]}"#, "unsupported anything-but operator"),
        (r#"{"a": [{"numeric": 5}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": []}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": [">"]}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": [">", 1, "<"]}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": [">", 1, "<", 2, "<"]}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": [1, ">"]}]}"#, "numeric must be [op, number] with op one of"),
        (r#"{"a": [{"numeric": [">", "1"]}]}"#, "the value of > must be a number"),
        (r#"{"a": [{"numeric": ["!=", 1]}]}"#, r#"unknown numeric comparison "!=""#),
        (r#"{"a": [{"numeric": ["<", 1, ">", 0]}]}"#, "a lower bound (> or >=) followed by an upper bound"),
        (r#"{"a": [{"numeric": ["=", 1, "<", 2]}]}"#, "a lower bound (> or >=) followed by an upper bound"),
        (r#"{"a": [{"numeric": [">", 5, "<", 5]}]}"#, "must be less than its upper bound"),
        (r#"{"a": [{"exists": "yes"}]}"#, "exists must be true or false"),
        (r#"{"a": [{"exists": null}]}"#, "exists must be true or false"),
        (r#"{"a": [{"cidr": "10.0.0.0"}]}"#, "is not a cidr block"),
        (r#"{"a": [{"cidr": "10.0.0/8"}]}"#, "is not a cidr block"),
        (r#"{"a": [{"cidr": "10.0.0.0/33"}]}"#, "prefix length 33 is larger than 32"),
        (r#"{"a": [{"cidr": "::/129"}]}"#, "prefix length 129 is larger than 128"),
        (r#"{"a": [{"cidr": "10.0.0.0/+8"}]}"#, "is not a cidr block"),
        (r#"{"a": [{"cidr": "10.0.0.0/"}]}"#, "is not a cidr block"),
        (r#"{"a": [{"cidr": "host/8"}]}"#, "is not a cidr block"),
        (r#"{"a": [{"cidr": 10}]}"#, "cidr must be a string"),
        (r#"{"$or": [{"a": ["x"]}]}"#, "at $or: $or must be an array of at least two objects"),
        (r#"{"$or": {"a": ["x"]}}"#, "$or must be an array of at least two objects"),
        (r#"{"$or": [{"a": ["x"]}, "b"]}"#, "at $or[1]: $or must be an array"),
        (r#"{"$or": [{"a": ["x"]}, {}]}"#, "at $or[1]: empty objects are not allowed"),
        (r#"{"$or": [{"numeric": [">", 1]}, {"a": ["x"]}]}"#, r#"at $or[0].numeric: "numeric" is an operator"#),
        (r#"{"x": {"$or": [{"a": ["x"]}, {"b": {"prefix": ["y"]}}]}}"#, r#"at x.$or[1].b.prefix: "prefix" is an operator"#),
    ];

    #[test]
    fn invalid_patterns_are_rejected_with_a_clear_message() {
        let mut failures = Vec::new();
        for (pattern, want) in ERRORS {
            match EventPattern::parse(pattern) {
                Ok(_) => {
                    failures.push(format!("{pattern} parsed, expected an error with {want:?}"))
                }
                Err(e) => {
                    let msg = e.to_string();
                    if !msg.contains(want) {
                        failures.push(format!("{pattern}: {msg:?} lacks {want:?}"));
                    }
                    if msg.chars().next().is_some_and(char::is_uppercase) {
                        failures.push(format!("{pattern}: {msg:?} is not lowercase"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn unknown_operator_is_its_own_error_kind() {
        let err = EventPattern::parse(r#"{"detail": {"state": [{"regex": "r.*"}]}}"#).unwrap_err();
        assert_eq!(
            err,
            PatternError::UnknownOperator {
                path: "detail.state[0]".into(),
                operator: "regex".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid event pattern at detail.state[0]: unknown operator \"regex\" (use one of \
             prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr)"
        );
    }

    #[test]
    fn limits_bound_the_work() {
        let deep = format!("{}[1]{}", r#"{"a":"#.repeat(40), "}".repeat(40));
        assert_eq!(
            EventPattern::parse(&deep),
            Err(PatternError::TooDeep { max: MAX_DEPTH })
        );
        // Far deeper than the JSON parser's own recursion limit: still a clean error.
        let deeper = "[".repeat(100_000);
        assert_eq!(
            EventPattern::parse(&deeper),
            Err(PatternError::TooLarge {
                max: MAX_PATTERN_BYTES
            })
        );
        let deeper = "[".repeat(1_000);
        assert_eq!(
            EventPattern::parse(&deeper),
            Err(PatternError::TooDeep { max: MAX_DEPTH })
        );
        // Brackets inside strings do not count.
        let brackets = format!(r#"{{"a": ["{}"]}}"#, "[{".repeat(100));
        assert!(EventPattern::parse(&brackets).is_ok());
        // Just within the depth limit.
        let ok = format!(
            "{}[1]{}",
            r#"{"a":"#.repeat(MAX_DEPTH - 1),
            "}".repeat(MAX_DEPTH - 1)
        );
        assert!(
            EventPattern::parse(&ok).is_ok(),
            "depth {MAX_DEPTH} is allowed"
        );
        let big = format!(r#"{{"a": ["{}"]}}"#, "x".repeat(MAX_PATTERN_BYTES));
        assert_eq!(
            EventPattern::parse(&big),
            Err(PatternError::TooLarge {
                max: MAX_PATTERN_BYTES
            })
        );
        let many = format!(r#"{{"a": [{}1]}}"#, "1,".repeat(MAX_VALUES));
        assert_eq!(
            EventPattern::parse(&many),
            Err(PatternError::TooManyValues { max: MAX_VALUES })
        );
        // from_value checks the same bounds on values built in memory.
        let mut v = json!(["x"]);
        for _ in 0..MAX_DEPTH {
            v = json!({ "a": v });
        }
        assert_eq!(
            EventPattern::from_value(&v),
            Err(PatternError::TooDeep { max: MAX_DEPTH })
        );
        let huge = json!({ "a": ["y".repeat(MAX_PATTERN_BYTES + 1)] });
        assert_eq!(
            EventPattern::from_value(&huge),
            Err(PatternError::TooLarge {
                max: MAX_PATTERN_BYTES
            })
        );
    }

    #[test]
    fn deep_and_wide_events_are_matched_without_recursion() {
        let mut event = json!("needle");
        for _ in 0..5_000 {
            event = Value::Array(vec![event]);
        }
        // (Not `json!`: it would serialize the value, recursively.)
        let event = Value::Object(Map::from_iter([("a".to_string(), event)]));
        let p = EventPattern::parse(r#"{"a": ["needle"]}"#).unwrap();
        assert!(p.matches(&event));
        let p = EventPattern::parse(r#"{"a": [{"exists": true}]}"#).unwrap();
        assert!(p.matches(&event));
        // Worst case for the wildcard matcher stays quick: O(len * pattern).
        let p = EventPattern::parse(&format!(
            r#"{{"a": [{{"wildcard": "{}b"}}]}}"#,
            "*a".repeat(200)
        ))
        .unwrap();
        assert!(!p.matches(&json!({ "a": "a".repeat(20_000) })));
        // Dropping a 5,000-deep value recurses, so unwind it by hand.
        let mut v = event;
        while let Some(inner) = match &mut v {
            Value::Object(m) => m.remove("a"),
            Value::Array(items) => items.pop(),
            _ => None,
        } {
            v = inner;
        }
    }

    #[test]
    fn display_serde_and_from_str_round_trip() {
        let text =
            r#"{"source": ["aws.ec2"], "detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}"#;
        let p: EventPattern = text.parse().unwrap();
        let again = EventPattern::parse(&p.to_string()).unwrap();
        assert_eq!(p, again);
        assert_eq!(p.as_json(), &serde_json::from_str::<Value>(text).unwrap());
        let through_serde: EventPattern =
            serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(p, through_serde);
        assert!(through_serde.matches(&sample_event()));
        let bad = serde_json::from_value::<EventPattern>(json!({"a": "x"})).unwrap_err();
        assert!(
            bad.to_string().contains("must be an object or an array"),
            "{bad}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Property tests: the stable-Rust twin of the `event_pattern` fuzz target (fuzz/). A
    // deterministic PRNG generates valid patterns and events, checks semantic properties, then
    // mutates the pattern text and feeds the results to the parser, which must never panic.

    /// SplitMix64: tiny, deterministic, good enough to drive a generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, one_in: usize) -> bool {
            self.below(one_in) == 0
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const NAMES: &[&str] = &[
        "source", "detail", "state", "count", "ip", "tags", "items", "x",
    ];
    const STRINGS: &[&str] = &[
        "aws.ec2",
        "running",
        "Running",
        "",
        "10.0.0.7",
        "2001:db8::9",
        "a*b",
        "x/lib/y",
        "ΟΔΟΣ",
    ];
    const NUMBERS: &[f64] = &[0.0, 5.0, -3.5, 1e9, 42.0];
    const WILDCARDS: &[&str] = &["*", "a*", "*b", "a\\*b", "*lib*", "r*n*g", "\\\\*"];
    const CIDRS: &[&str] = &[
        "10.0.0.0/8",
        "10.0.0.0/30",
        "0.0.0.0/0",
        "2001:db8::/32",
        "::/0",
    ];
    const OPS: &[&str] = &["=", "<", "<=", ">", ">="];

    fn number(rng: &mut Rng) -> Value {
        json!(*rng.pick(NUMBERS))
    }

    fn string(rng: &mut Rng) -> Value {
        json!(*rng.pick(STRINGS))
    }

    fn strings(rng: &mut Rng, pool: &[&str]) -> Value {
        if rng.chance(2) {
            json!(*rng.pick(pool))
        } else {
            Value::Array(
                (0..1 + rng.below(3))
                    .map(|_| json!(*rng.pick(pool)))
                    .collect(),
            )
        }
    }

    fn gen_matcher(rng: &mut Rng) -> Value {
        let nonempty: &[&str] = &["aws", "run", "x", ".ec2", "R"];
        match rng.below(20) {
            0 => string(rng),
            1 => number(rng),
            2 => json!(rng.chance(2)),
            3 => Value::Null,
            4 => json!({"prefix": string(rng)}),
            5 => json!({"prefix": {"equals-ignore-case": string(rng)}}),
            6 => json!({"suffix": string(rng)}),
            7 => json!({"suffix": {"equals-ignore-case": string(rng)}}),
            8 => json!({"equals-ignore-case": string(rng)}),
            9 => json!({"wildcard": *rng.pick(WILDCARDS)}),
            10 => json!({"anything-but": if rng.chance(2) { string(rng) } else { number(rng) }}),
            11 => {
                let list: Vec<Value> = if rng.chance(2) {
                    (0..1 + rng.below(3)).map(|_| string(rng)).collect()
                } else {
                    (0..1 + rng.below(3)).map(|_| number(rng)).collect()
                };
                json!({"anything-but": list})
            }
            12 => json!({"anything-but": {"prefix": strings(rng, nonempty)}}),
            13 => json!({"anything-but": {"suffix": strings(rng, nonempty)}}),
            14 => json!({"anything-but": {"equals-ignore-case": strings(rng, STRINGS)}}),
            15 => json!({"anything-but": {"wildcard": strings(rng, WILDCARDS)}}),
            16 => json!({"numeric": [*rng.pick(OPS), number(rng)]}),
            17 => {
                let low = *rng.pick(NUMBERS);
                let high = low + 1.0 + rng.below(100) as f64;
                let lo = if rng.chance(2) { ">" } else { ">=" };
                let hi = if rng.chance(2) { "<" } else { "<=" };
                json!({"numeric": [lo, low, hi, high]})
            }
            18 => json!({"exists": rng.chance(2)}),
            _ => json!({"cidr": *rng.pick(CIDRS)}),
        }
    }

    fn gen_object(rng: &mut Rng, depth: usize) -> Value {
        let mut map = Map::new();
        for _ in 0..1 + rng.below(3) {
            let value = if depth < 3 && rng.chance(4) {
                gen_object(rng, depth + 1)
            } else {
                Value::Array((0..1 + rng.below(3)).map(|_| gen_matcher(rng)).collect())
            };
            map.insert(rng.pick(NAMES).to_string(), value);
        }
        if depth < 3 && rng.chance(6) {
            let branches = (0..2 + rng.below(2))
                .map(|_| gen_object(rng, depth + 1))
                .collect();
            map.insert("$or".into(), Value::Array(branches));
        }
        Value::Object(map)
    }

    fn gen_event_value(rng: &mut Rng, depth: usize) -> Value {
        match rng.below(if depth < 3 { 9 } else { 6 }) {
            0 | 1 => string(rng),
            2 => number(rng),
            3 => json!(rng.chance(2)),
            4 => Value::Null,
            5 => Value::Array(
                (0..rng.below(4))
                    .map(|_| gen_event_value(rng, depth + 1))
                    .collect(),
            ),
            _ => gen_event(rng, depth + 1),
        }
    }

    fn gen_event(rng: &mut Rng, depth: usize) -> Value {
        let mut map = Map::new();
        for _ in 0..rng.below(6) {
            map.insert(rng.pick(NAMES).to_string(), gen_event_value(rng, depth));
        }
        Value::Object(map)
    }

    /// A pattern that must match `event`: a few of its leaves (through objects, not arrays of
    /// objects), each required by a literal or by `exists: true`.
    fn pattern_from_event(rng: &mut Rng, event: &Map<String, Value>) -> Option<Value> {
        let mut map = Map::new();
        for (name, value) in event {
            if rng.chance(2) {
                continue;
            }
            let leaf = match value {
                Value::Object(nested) => {
                    if let Some(p) = pattern_from_event(rng, nested) {
                        map.insert(name.clone(), p);
                    }
                    continue;
                }
                Value::Array(items) => match items.iter().find(|v| !v.is_object() && !v.is_array())
                {
                    Some(v) => v.clone(),
                    None => continue,
                },
                scalar => scalar.clone(),
            };
            let matcher = if rng.chance(3) {
                json!({"exists": true})
            } else {
                leaf
            };
            map.insert(name.clone(), json!([matcher]));
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }

    /// Byte-level mutations with JSON-flavoured tokens, as a fuzzer's dictionary would add.
    fn mutate(rng: &mut Rng, text: &str) -> Vec<u8> {
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "*",
            "\"$or\"",
            "\"prefix\"",
            "\"suffix\"",
            "\"anything-but\"",
            "\"numeric\"",
            "\"exists\"",
            "\"cidr\"",
            "\"wildcard\"",
            "\"equals-ignore-case\"",
            "\">\"",
            "\"<=\"",
            "-1e999",
            "1e308",
            "null",
            "true",
            "[]",
            "{}",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "18446744073709551616",
            "\"::/0\"",
            "\"**\"",
        ];
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            match rng.below(5) {
                0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                1 if at < bytes.len() => {
                    let end = (at + 1 + rng.below(8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                2 if at < bytes.len() => {
                    let end = (at + 1 + rng.below(16)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len() + 1);
                    bytes.splice(to..to, chunk);
                }
                _ => {
                    let token = rng.pick(TOKENS).as_bytes();
                    bytes.splice(at..at, token.iter().copied());
                }
            }
        }
        bytes
    }

    /// What the fuzz target does with one input: parse, and if it parses, match and round-trip.
    fn exercise(data: &[u8], events: &[Value]) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        let Ok(pattern) = EventPattern::parse(text) else {
            return false;
        };
        let again = EventPattern::parse(&pattern.to_string()).expect("display output parses");
        for event in events {
            assert_eq!(pattern.matches(event), again.matches(event), "{text}");
        }
        if let Ok(itself) = serde_json::from_str::<Value>(text) {
            pattern.matches(&itself);
        }
        true
    }

    #[test]
    fn generated_patterns_parse_and_match_without_panicking() {
        let mut rng = Rng(0x5EED_F00D);
        let (mut matched, mut unmatched, mut mutants_parsed) = (0, 0, 0);
        let fixed = sample_event();
        for round in 0..3_000 {
            let events = [
                fixed.clone(),
                gen_event(&mut rng, 0),
                gen_event(&mut rng, 0),
            ];

            // A valid pattern parses, and matching it is deterministic and survives a round trip.
            let pattern_value = gen_object(&mut rng, 0);
            let text = pattern_value.to_string();
            let pattern = EventPattern::parse(&text)
                .unwrap_or_else(|e| panic!("round {round}: generated {text} is valid: {e}"));
            for event in &events {
                if pattern.matches(event) {
                    matched += 1;
                } else {
                    unmatched += 1;
                }
            }
            assert!(exercise(text.as_bytes(), &events));

            // A pattern derived from an event matches it; negating one field breaks that.
            if let Value::Object(map) = &events[1] {
                if let Some(derived) = pattern_from_event(&mut rng, map) {
                    let p = EventPattern::from_value(&derived).unwrap();
                    assert!(
                        p.matches(&events[1]),
                        "{derived} should match {}",
                        events[1]
                    );
                    let (name, _) = map
                        .iter()
                        .find(|(k, _)| derived.get(k.as_str()).is_some())
                        .unwrap();
                    let mut negated = derived.clone();
                    negated[name.as_str()] = json!([{"exists": false}]);
                    let leaf_there = leaves(map.get(name)).next().is_some();
                    let p = EventPattern::from_value(&negated).unwrap();
                    assert_eq!(
                        p.matches(&events[1]),
                        !leaf_there,
                        "{negated} vs {}",
                        events[1]
                    );
                }
            }

            // Mutants of the valid text never panic the parser or the matcher.
            for _ in 0..4 {
                let mutant = mutate(&mut rng, &text);
                if exercise(&mutant, &events) {
                    mutants_parsed += 1;
                }
            }
        }
        // The generator is worth something only if it produces both outcomes.
        assert!(
            matched > 100 && unmatched > 100,
            "matched {matched}, unmatched {unmatched}"
        );
        assert!(mutants_parsed > 100, "only {mutants_parsed} mutants parsed");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        let events = [sample_event(), json!({"a": [1, {"b": null}], "$or": "x"})];
        let alphabet = br#"{}[]:,"\ *$or-prefixsuffixanything-butnumericexistscidrwildcard0123456789.e<>=truefalsenull"#;
        for _ in 0..5_000 {
            let len = rng.below(64);
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.chance(10) {
                        rng.next() as u8
                    } else {
                        *rng.pick(alphabet)
                    }
                })
                .collect();
            exercise(&data, &events);
        }
    }
}
