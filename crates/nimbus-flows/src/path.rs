//! JSONPath as Step Functions uses it.
//!
//! - A [`ReferencePath`] names a single node with `.field`, `['field']` and `[index]` steps
//!   only; `ResultPath`, `ItemsPath`, Choice `Variable`s and the `…Path` fields use them.
//! - A [`Path`] is any JSONPath (RFC 9535 through `serde_json_path`: wildcards, slices,
//!   filters, `..`) used by `InputPath`, `OutputPath` and `.$` template values. A path that
//!   is a reference path selects one value; any other selects the array of its matches.
//! - Paths starting with `$$` read the context object instead of the state input.
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html>.

use serde_json::Value;

use crate::errors::{names, Error, Result};

/// Which document a path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `$…`: the state's (effective) input.
    Input,
    /// `$$…`: the context object (Execution, State, StateMachine, Task, Map).
    Context,
}

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.name` or `['name']`.
    Field(String),
    /// `[n]`.
    Index(usize),
}

/// A path that names at most one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencePath {
    /// Which document it reads.
    pub root: Root,
    /// The steps after the root, in order.
    pub steps: Vec<Step>,
    text: String,
}

impl ReferencePath {
    /// Parses a reference path (`$`, `$.a.b`, `$['a b'][0]`, `$.a.['b']`, `$$.Execution.Id`).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::PathSyntax {
            path: text.to_string(),
            reason: reason.to_string(),
        };
        let (root, rest) = split_root(text).ok_or_else(|| bad("a path must start with '$'"))?;
        let chars: Vec<char> = rest.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    if chars.get(i) == Some(&'[') {
                        continue; // `$.a.['b']`, accepted by Step Functions
                    }
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    if name.is_empty() {
                        return Err(bad("empty field name"));
                    }
                    if name.chars().any(|c| {
                        matches!(
                            c,
                            '*' | '@' | ',' | ':' | '?' | '(' | ')' | ']' | ' ' | '\'' | '"'
                        )
                    }) {
                        return Err(bad(
                            "reference paths allow only plain field names after '.'",
                        ));
                    }
                    steps.push(Step::Field(name));
                }
                '[' => {
                    i += 1;
                    match chars.get(i) {
                        Some(&q @ ('\'' | '"')) => {
                            i += 1;
                            let mut name = String::new();
                            loop {
                                match chars.get(i) {
                                    None => return Err(bad("unterminated quoted name")),
                                    Some('\\') => {
                                        let c = chars
                                            .get(i + 1)
                                            .ok_or_else(|| bad("dangling escape"))?;
                                        name.push(*c);
                                        i += 2;
                                    }
                                    Some(c) if *c == q => {
                                        i += 1;
                                        break;
                                    }
                                    Some(c) => {
                                        name.push(*c);
                                        i += 1;
                                    }
                                }
                            }
                            steps.push(Step::Field(name));
                        }
                        _ => {
                            let start = i;
                            while i < chars.len() && chars[i].is_ascii_digit() {
                                i += 1;
                            }
                            let digits: String = chars[start..i].iter().collect();
                            let n = digits.parse::<usize>().map_err(|_| bad("reference paths allow only a quoted name or a non-negative index in brackets"))?;
                            steps.push(Step::Index(n));
                        }
                    }
                    if chars.get(i) != Some(&']') {
                        return Err(bad("expected ']'"));
                    }
                    i += 1;
                }
                _ => return Err(bad("expected '.' or '['")),
            }
        }
        Ok(ReferencePath {
            root,
            steps,
            text: text.to_string(),
        })
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The node the path names in `doc`, if present.
    pub fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.steps.iter().try_fold(doc, |node, step| match step {
            Step::Field(name) => node.as_object()?.get(name),
            Step::Index(n) => node.as_array()?.get(*n),
        })
    }

    /// The node the path names, reading the input or the context object by its root.
    pub fn resolve<'v>(&self, input: &'v Value, context: &'v Value) -> Option<&'v Value> {
        self.get(match self.root {
            Root::Input => input,
            Root::Context => context,
        })
    }

    /// Writes `value` at this path inside `doc` as `ResultPath` does: `$` replaces the whole
    /// document, missing objects on the way are created, an existing non-object (or an
    /// array index out of range) on the way fails with `States.ResultPathMatchFailure`.
    pub fn insert(&self, doc: Value, value: Value) -> Result<Value> {
        let fail = |doc: &Value| {
            Error::states(
                names::RESULT_PATH_MATCH_FAILURE,
                format!(
                    "Unable to apply ReferencePath {} to input {}",
                    self.text, doc
                ),
            )
        };
        if self.steps.is_empty() {
            return Ok(value);
        }
        let mut doc = doc;
        let original = doc.clone();
        let mut node = &mut doc;
        let last = self.steps.len() - 1;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Field(name) => {
                    let obj = node.as_object_mut().ok_or_else(|| fail(&original))?;
                    if i == last {
                        obj.insert(name.clone(), value);
                        return Ok(doc);
                    }
                    node = obj
                        .entry(name.clone())
                        .or_insert_with(|| Value::Object(Default::default()));
                }
                Step::Index(n) => {
                    let slot = node
                        .as_array_mut()
                        .and_then(|a| a.get_mut(*n))
                        .ok_or_else(|| fail(&original))?;
                    if i == last {
                        *slot = value;
                        return Ok(doc);
                    }
                    node = slot;
                }
            }
        }
        Ok(doc)
    }
}

/// Any JSONPath Step Functions accepts in `InputPath`, `OutputPath` and `.$` values.
#[derive(Debug, Clone)]
pub enum Path {
    /// A path naming a single node; selects that node.
    Reference(ReferencePath),
    /// Any other JSONPath; selects the array of its matches (possibly empty).
    Query {
        /// Which document it reads.
        root: Root,
        /// The compiled RFC 9535 query, rooted at `$`.
        query: serde_json_path::JsonPath,
        /// The text the path was parsed from.
        text: String,
    },
}

impl Path {
    /// Parses a path; a reference path when it is one, else a general JSONPath query.
    pub fn parse(text: &str) -> Result<Self> {
        if let Ok(r) = ReferencePath::parse(text) {
            return Ok(Path::Reference(r));
        }
        let (root, rest) = split_root(text).ok_or_else(|| Error::PathSyntax {
            path: text.to_string(),
            reason: "a path must start with '$'".to_string(),
        })?;
        // Step Functions (Jayway) accepts `.[` where RFC 9535 wants `[`.
        let normalised = format!("${}", normalise_dot_bracket(rest));
        let query =
            serde_json_path::JsonPath::parse(&normalised).map_err(|e| Error::PathSyntax {
                path: text.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Path::Query {
            root,
            query,
            text: text.to_string(),
        })
    }

    /// The text the path was parsed from.
    pub fn as_str(&self) -> &str {
        match self {
            Path::Reference(r) => r.as_str(),
            Path::Query { text, .. } => text,
        }
    }

    /// Selects from the input or context object; `None` when a reference path names
    /// nothing (a general query with no match selects `[]`).
    pub fn select(&self, input: &Value, context: &Value) -> Option<Value> {
        match self {
            Path::Reference(r) => r.resolve(input, context).cloned(),
            Path::Query { root, query, .. } => {
                let doc = match root {
                    Root::Input => input,
                    Root::Context => context,
                };
                Some(Value::Array(
                    query.query(doc).all().into_iter().cloned().collect(),
                ))
            }
        }
    }
}

/// Whether `text` parses as a path (reference or general).
pub fn is_valid_path(text: &str) -> bool {
    Path::parse(text).is_ok()
}

fn split_root(text: &str) -> Option<(Root, &str)> {
    if let Some(rest) = text.strip_prefix("$$") {
        Some((Root::Context, rest))
    } else {
        text.strip_prefix('$').map(|rest| (Root::Input, rest))
    }
}

fn normalise_dot_bracket(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' {
                    out.push(c);
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                    continue;
                }
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == '.' && chars.peek() == Some(&'[') {
                    continue;
                }
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reference_paths_parse_and_resolve() {
        // https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html
        let input = json!({ "foo": 123, "bar": ["a", "b", "c"], "car": { "cdr": true } });
        for (path, want) in [
            ("$.foo", json!(123)),
            ("$.bar", json!(["a", "b", "c"])),
            ("$.car.cdr", json!(true)),
        ] {
            let p = ReferencePath::parse(path).unwrap();
            assert_eq!(p.get(&input), Some(&want), "{path}");
        }
        let p = ReferencePath::parse("$.abc.['def ghi']").unwrap();
        assert_eq!(
            p.steps,
            vec![Step::Field("abc".into()), Step::Field("def ghi".into())]
        );
        assert_eq!(
            ReferencePath::parse("$$.Execution.Id").unwrap().root,
            Root::Context
        );
        for bad in [
            "foo",
            "$.a[*]",
            "$..a",
            "$.a[?(@.x)]",
            "$.a[0:1]",
            "$.",
            "$.a[",
            "$.a[-1]",
        ] {
            assert!(ReferencePath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn general_paths_select_arrays() {
        // https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html
        // ("Flattening an array of arrays": "$[*][*]").
        let input = json!([[1, 2], [3]]);
        let p = Path::parse("$[*][*]").unwrap();
        assert_eq!(p.select(&input, &Value::Null), Some(json!([1, 2, 3])));
        let books = json!({ "b": [{ "p": 5 }, { "p": 15 }] });
        let p = Path::parse("$.b[?(@.p < 10)]").unwrap();
        assert_eq!(p.select(&books, &Value::Null), Some(json!([{ "p": 5 }])));
        assert!(Path::parse("$.a[").is_err());
        assert!(Path::parse("a.b").is_err());
    }
}
