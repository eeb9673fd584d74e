//! Choice rules: parsing from ASL JSON and evaluation.
//!
//! A comparison of values of the wrong type is false, not an error; a `Variable` (or a
//! `…Path` operand) that names nothing fails with `States.Runtime`, except under
//! `IsPresent`, which is then false.
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html>.

use std::cmp::Ordering;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::definition::Choice;
use crate::errors::{names, Error, Result};
use crate::path::ReferencePath;

/// The comparison operators, without their `Path` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `StringEquals`.
    StringEquals,
    /// `StringLessThan`.
    StringLessThan,
    /// `StringGreaterThan`.
    StringGreaterThan,
    /// `StringLessThanEquals`.
    StringLessThanEquals,
    /// `StringGreaterThanEquals`.
    StringGreaterThanEquals,
    /// `StringMatches` (`*` wildcard; `\*` and `\\` escapes).
    StringMatches,
    /// `NumericEquals`.
    NumericEquals,
    /// `NumericLessThan`.
    NumericLessThan,
    /// `NumericGreaterThan`.
    NumericGreaterThan,
    /// `NumericLessThanEquals`.
    NumericLessThanEquals,
    /// `NumericGreaterThanEquals`.
    NumericGreaterThanEquals,
    /// `BooleanEquals`.
    BooleanEquals,
    /// `TimestampEquals`.
    TimestampEquals,
    /// `TimestampLessThan`.
    TimestampLessThan,
    /// `TimestampGreaterThan`.
    TimestampGreaterThan,
    /// `TimestampLessThanEquals`.
    TimestampLessThanEquals,
    /// `TimestampGreaterThanEquals`.
    TimestampGreaterThanEquals,
    /// `IsNull`.
    IsNull,
    /// `IsPresent`.
    IsPresent,
    /// `IsNumeric`.
    IsNumeric,
    /// `IsString`.
    IsString,
    /// `IsBoolean`.
    IsBoolean,
    /// `IsTimestamp`.
    IsTimestamp,
}

const OPERATORS: &[(&str, Operator, bool)] = &[
    // (name, operator, has a `…Path` variant)
    ("StringEquals", Operator::StringEquals, true),
    ("StringLessThan", Operator::StringLessThan, true),
    ("StringGreaterThan", Operator::StringGreaterThan, true),
    ("StringLessThanEquals", Operator::StringLessThanEquals, true),
    (
        "StringGreaterThanEquals",
        Operator::StringGreaterThanEquals,
        true,
    ),
    ("StringMatches", Operator::StringMatches, false),
    ("NumericEquals", Operator::NumericEquals, true),
    ("NumericLessThan", Operator::NumericLessThan, true),
    ("NumericGreaterThan", Operator::NumericGreaterThan, true),
    (
        "NumericLessThanEquals",
        Operator::NumericLessThanEquals,
        true,
    ),
    (
        "NumericGreaterThanEquals",
        Operator::NumericGreaterThanEquals,
        true,
    ),
    ("BooleanEquals", Operator::BooleanEquals, true),
    ("TimestampEquals", Operator::TimestampEquals, true),
    ("TimestampLessThan", Operator::TimestampLessThan, true),
    ("TimestampGreaterThan", Operator::TimestampGreaterThan, true),
    (
        "TimestampLessThanEquals",
        Operator::TimestampLessThanEquals,
        true,
    ),
    (
        "TimestampGreaterThanEquals",
        Operator::TimestampGreaterThanEquals,
        true,
    ),
    ("IsNull", Operator::IsNull, false),
    ("IsPresent", Operator::IsPresent, false),
    ("IsNumeric", Operator::IsNumeric, false),
    ("IsString", Operator::IsString, false),
    ("IsBoolean", Operator::IsBoolean, false),
    ("IsTimestamp", Operator::IsTimestamp, false),
];

/// Looks up an operator field name: the operator and whether it is the `…Path` variant.
pub fn operator_by_name(name: &str) -> Option<(Operator, bool)> {
    OPERATORS.iter().find_map(|(n, op, has_path)| {
        if *n == name {
            Some((*op, false))
        } else if *has_path && name.strip_prefix(n) == Some("Path") {
            Some((*op, true))
        } else {
            None
        }
    })
}

/// What a comparison compares against.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A literal of the operator's type.
    Literal(Value),
    /// A reference path (`…Path` operators) into the input or context object.
    Path(ReferencePath),
}

/// A Choice condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// All must hold.
    And(Vec<Condition>),
    /// One must hold.
    Or(Vec<Condition>),
    /// Must not hold.
    Not(Box<Condition>),
    /// A JSONata `Condition` (`"{% … %}"`, JSONata states only), evaluated by
    /// [`crate::jsonata::choose`].
    Jsonata(String),
    /// A comparison of `Variable` with an operand.
    Compare {
        /// The reference path compared.
        variable: ReferencePath,
        /// The operator.
        operator: Operator,
        /// The operand.
        operand: Operand,
    },
}

impl Condition {
    /// Parses a rule object (the `Next`, `Comment`, `Assign` and `Output` fields are
    /// allowed and ignored); errors are messages naming the offending field.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let obj = v.as_object().ok_or("a Choice rule must be an object")?;
        let allowed_meta = |k: &str| matches!(k, "Next" | "Comment" | "Assign" | "Output");
        if let Some(cond) = obj.get("Condition") {
            if let Some(extra) = obj.keys().find(|k| *k != "Condition" && !allowed_meta(k)) {
                return Err(format!(
                    "Field '{extra}' is not supported beside 'Condition'"
                ));
            }
            let text = cond.as_str().ok_or("'Condition' must be a string")?;
            return Ok(Condition::Jsonata(text.to_string()));
        }
        for (key, ctor) in [("And", 0), ("Or", 1)] {
            if let Some(list) = obj.get(key) {
                if let Some(extra) = obj.keys().find(|k| *k != key && !allowed_meta(k)) {
                    return Err(format!("Field '{extra}' is not supported beside '{key}'"));
                }
                let items = list
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or(format!("'{key}' must be a non-empty array of rules"))?;
                let parsed = items
                    .iter()
                    .map(Condition::from_json)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                return Ok(if ctor == 0 {
                    Condition::And(parsed)
                } else {
                    Condition::Or(parsed)
                });
            }
        }
        if let Some(inner) = obj.get("Not") {
            if let Some(extra) = obj.keys().find(|k| *k != "Not" && !allowed_meta(k)) {
                return Err(format!("Field '{extra}' is not supported beside 'Not'"));
            }
            return Ok(Condition::Not(Box::new(Condition::from_json(inner)?)));
        }
        let variable = obj
            .get("Variable")
            .ok_or("a Choice rule needs 'Variable' or one of 'And', 'Or', 'Not'")?;
        let variable = variable.as_str().ok_or("'Variable' must be a string")?;
        let variable = ReferencePath::parse(variable).map_err(|e| format!("'Variable': {e}"))?;
        let mut ops = Vec::new();
        for (k, val) in obj {
            if k == "Variable" || allowed_meta(k) {
                continue;
            }
            match operator_by_name(k) {
                Some((op, is_path)) => ops.push((k.as_str(), op, is_path, val)),
                None => return Err(format!("Field '{k}' is not supported in a Choice rule")),
            }
        }
        let (name, operator, is_path, val) = match ops.as_slice() {
            [one] => *one,
            [] => {
                return Err(
                    "a Choice rule needs exactly one comparison operator, found none".to_string(),
                )
            }
            many => {
                let names: Vec<&str> = many.iter().map(|o| o.0).collect();
                return Err(format!(
                    "a Choice rule needs exactly one comparison operator, found {}",
                    names.join(", ")
                ));
            }
        };
        let operand = if is_path {
            let p = val.as_str().ok_or(format!("'{name}' must be a string"))?;
            Operand::Path(ReferencePath::parse(p).map_err(|e| format!("'{name}': {e}"))?)
        } else {
            use Operator::*;
            let ok = match operator {
                StringEquals
                | StringLessThan
                | StringGreaterThan
                | StringLessThanEquals
                | StringGreaterThanEquals
                | StringMatches => val.is_string(),
                NumericEquals
                | NumericLessThan
                | NumericGreaterThan
                | NumericLessThanEquals
                | NumericGreaterThanEquals => val.is_number(),
                TimestampEquals
                | TimestampLessThan
                | TimestampGreaterThan
                | TimestampLessThanEquals
                | TimestampGreaterThanEquals => {
                    val.as_str().is_some_and(|s| parse_timestamp(s).is_some())
                }
                BooleanEquals | IsNull | IsPresent | IsNumeric | IsString | IsBoolean
                | IsTimestamp => val.is_boolean(),
            };
            if !ok {
                let want = match operator {
                    StringEquals
                    | StringLessThan
                    | StringGreaterThan
                    | StringLessThanEquals
                    | StringGreaterThanEquals
                    | StringMatches => "a string",
                    NumericEquals
                    | NumericLessThan
                    | NumericGreaterThan
                    | NumericLessThanEquals
                    | NumericGreaterThanEquals => "a number",
                    TimestampEquals
                    | TimestampLessThan
                    | TimestampGreaterThan
                    | TimestampLessThanEquals
                    | TimestampGreaterThanEquals => "an RFC 3339 timestamp string",
                    _ => "a boolean",
                };
                return Err(format!("'{name}' must be {want}, got {val}"));
            }
            Operand::Literal(val.clone())
        };
        Ok(Condition::Compare {
            variable,
            operator,
            operand,
        })
    }

    /// Evaluates the condition against the (effective) input and the context object.
    pub fn eval(&self, input: &Value, context: &Value) -> Result<bool> {
        match self {
            Condition::And(all) => {
                for c in all {
                    if !c.eval(input, context)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Or(any) => {
                for c in any {
                    if c.eval(input, context)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::Not(c) => Ok(!c.eval(input, context)?),
            Condition::Jsonata(text) => Err(Error::states(
                names::RUNTIME,
                format!(
                    "The JSONata Condition '{text}' needs the JSONata evaluator (jsonata::choose)"
                ),
            )),
            Condition::Compare {
                variable,
                operator,
                operand,
            } => {
                let value = variable.resolve(input, context);
                if *operator == Operator::IsPresent {
                    return Ok(
                        value.is_some() == (operand_literal(operand) == Some(&Value::Bool(true)))
                    );
                }
                let value = value.ok_or_else(|| invalid_path(variable))?;
                let rhs = match operand {
                    Operand::Literal(v) => v,
                    Operand::Path(p) => p.resolve(input, context).ok_or_else(|| invalid_path(p))?,
                };
                Ok(compare(*operator, value, rhs))
            }
        }
    }
}

fn operand_literal(o: &Operand) -> Option<&Value> {
    match o {
        Operand::Literal(v) => Some(v),
        Operand::Path(_) => None,
    }
}

fn invalid_path(p: &ReferencePath) -> Error {
    Error::states(
        names::RUNTIME,
        format!(
            "Invalid path '{}': The choice state's condition path references an invalid value.",
            p.as_str()
        ),
    )
}

/// Parses an RFC 3339 timestamp as the States Language requires (uppercase `T`, and `Z`
/// or a numeric offset).
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    if s.as_bytes().get(10) != Some(&b'T') || s.contains('z') {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn cmp_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn ordering_holds(op: Operator, ord: Ordering) -> bool {
    use Operator::*;
    match op {
        StringEquals | NumericEquals | TimestampEquals => ord == Ordering::Equal,
        StringLessThan | NumericLessThan | TimestampLessThan => ord == Ordering::Less,
        StringGreaterThan | NumericGreaterThan | TimestampGreaterThan => ord == Ordering::Greater,
        StringLessThanEquals | NumericLessThanEquals | TimestampLessThanEquals => {
            ord != Ordering::Greater
        }
        StringGreaterThanEquals | NumericGreaterThanEquals | TimestampGreaterThanEquals => {
            ord != Ordering::Less
        }
        _ => false,
    }
}

fn compare(op: Operator, value: &Value, rhs: &Value) -> bool {
    use Operator::*;
    let want = rhs.as_bool();
    match op {
        StringEquals
        | StringLessThan
        | StringGreaterThan
        | StringLessThanEquals
        | StringGreaterThanEquals => match (value.as_str(), rhs.as_str()) {
            (Some(a), Some(b)) => ordering_holds(op, a.cmp(b)),
            _ => false,
        },
        StringMatches => match (value.as_str(), rhs.as_str()) {
            (Some(a), Some(pattern)) => string_matches(a, pattern),
            _ => false,
        },
        NumericEquals
        | NumericLessThan
        | NumericGreaterThan
        | NumericLessThanEquals
        | NumericGreaterThanEquals => match (value.as_number(), rhs.as_number()) {
            (Some(a), Some(b)) => cmp_numbers(a, b).is_some_and(|o| ordering_holds(op, o)),
            _ => false,
        },
        BooleanEquals => match (value.as_bool(), rhs.as_bool()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        TimestampEquals
        | TimestampLessThan
        | TimestampGreaterThan
        | TimestampLessThanEquals
        | TimestampGreaterThanEquals => {
            match (
                value.as_str().and_then(parse_timestamp),
                rhs.as_str().and_then(parse_timestamp),
            ) {
                (Some(a), Some(b)) => ordering_holds(op, a.cmp(&b)),
                _ => false,
            }
        }
        IsNull => want == Some(value.is_null()),
        IsNumeric => want == Some(value.is_number()),
        IsString => want == Some(value.is_string()),
        IsBoolean => want == Some(value.is_boolean()),
        IsTimestamp => want == Some(value.as_str().and_then(parse_timestamp).is_some()),
        IsPresent => want == Some(true),
    }
}

/// `StringMatches`: `*` matches any run of characters; `\*` is a literal `*` and `\\` a
/// literal backslash.
pub fn string_matches(text: &str, pattern: &str) -> bool {
    #[derive(PartialEq)]
    enum Tok {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(n) => toks.push(Tok::Char(n)),
                None => toks.push(Tok::Char('\\')),
            },
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with backtracking to the last star.
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

/// Picks a Choice state's next state: the first rule that holds, else `Default`, else
/// `States.NoChoiceMatched`.
pub fn choose<'c>(choice: &'c Choice, input: &Value, context: &Value) -> Result<&'c str> {
    for rule in &choice.choices {
        if rule.condition.eval(input, context)? {
            return Ok(&rule.next);
        }
    }
    choice
        .default
        .as_deref()
        .ok_or_else(|| Error::states(names::NO_CHOICE_MATCHED, "No Matches!"))
}
