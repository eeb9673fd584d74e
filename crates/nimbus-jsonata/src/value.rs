//! The evaluator's values: JSON plus undefined, functions and regexes, with JSONata's
//! sequence flags on arrays.

use std::rc::Rc;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::ast::Node;
use crate::error::{Error, Result};
use crate::NativeFn;

/// Array flags: JSONata tells sequences (results of paths) from arrays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub sequence: bool,
    pub cons: bool,
    pub keep_singleton: bool,
    pub outer_wrapper: bool,
}

impl Flags {
    pub const SEQ: Flags = Flags {
        sequence: true,
        cons: false,
        keep_singleton: false,
        outer_wrapper: false,
    };
}

pub(crate) type Obj = IndexMap<String, Val>;

/// One step from a JSON value to a child.
#[derive(Clone)]
pub(crate) enum Seg {
    Key(Rc<str>),
    Index(usize),
}

/// A reference to an object inside shared JSON (an input or a binding), converted only
/// when an expression needs more than field access: `$states.input.items[0].sku` reads
/// three fields of a large payload without copying it.
#[derive(Clone)]
pub(crate) struct JRef {
    root: Arc<Value>,
    path: Rc<Vec<Seg>>,
}

impl JRef {
    pub fn root(root: Arc<Value>) -> JRef {
        JRef {
            root,
            path: Rc::new(Vec::new()),
        }
    }

    pub fn resolve(&self) -> &Value {
        let mut v: &Value = &self.root;
        for s in self.path.iter() {
            v = match (s, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k.as_ref()).unwrap_or(&Value::Null),
                (Seg::Index(i), Value::Array(a)) => a.get(*i).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
        }
        v
    }

    fn child(&self, seg: Seg) -> JRef {
        let mut path = Vec::with_capacity(self.path.len() + 1);
        path.extend(self.path.iter().cloned());
        path.push(seg);
        JRef {
            root: self.root.clone(),
            path: Rc::new(path),
        }
    }

    /// The value at `key` of the referenced object.
    pub fn get(&self, key: &str) -> Val {
        match self.resolve() {
            Value::Object(m) => match m.get(key) {
                None => Val::Undefined,
                Some(Value::Object(_)) | Some(Value::Array(_)) => {
                    Val::from_ref(self.child(Seg::Key(key.into())))
                }
                Some(v) => Val::from_json(v),
            },
            _ => Val::Undefined,
        }
    }
}

/// A runtime value.
#[derive(Clone)]
pub(crate) enum Val {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Rc<str>),
    Arr(Rc<Vec<Val>>, Flags),
    Obj(Rc<Obj>),
    Func(Rc<Func>),
    /// An object inside shared JSON, not yet converted (see [`JRef`]).
    Node(JRef),
    /// A tuple stream carrying ancestry (`%`) out of a nested path; never escapes a path.
    Tuples(Rc<Vec<Tuple>>),
}

/// One item of a tuple stream: the context (`@`) and the variables bound by `@$v`, `#$i`
/// and parent steps.
#[derive(Clone)]
pub(crate) struct Tuple {
    pub at: Val,
    pub vars: Vec<(String, Val)>,
}

/// A function value.
pub(crate) enum Func {
    Lambda {
        params: Vec<String>,
        body: Arc<Node>,
        env: usize,
        input: Val,
    },
    Builtin(&'static crate::functions::Builtin),
    Native(String, NativeFn),
    Partial(Rc<Func>, Vec<Option<Val>>),
    Chain(Rc<Func>, Rc<Func>),
    Regex(Arc<regex::Regex>),
    Transform(Rc<Node>, usize),
}

impl Func {
    /// How many arguments higher-order functions pass.
    pub fn arity(&self) -> usize {
        match self {
            Func::Lambda { params, .. } => params.len(),
            Func::Builtin(b) => b.min_args.max(1),
            Func::Native(_, f) => f.arity,
            Func::Partial(_, args) => args.iter().filter(|a| a.is_none()).count(),
            Func::Chain(..) | Func::Regex(_) | Func::Transform(..) => 1,
        }
    }
}

impl Val {
    pub fn seq(items: Vec<Val>) -> Val {
        Val::Arr(Rc::new(items), Flags::SEQ)
    }

    pub fn arr(items: Vec<Val>) -> Val {
        Val::Arr(Rc::new(items), Flags::default())
    }

    pub fn str(s: impl Into<Rc<str>>) -> Val {
        Val::Str(s.into())
    }

    pub fn is_undef(&self) -> bool {
        matches!(self, Val::Undefined)
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Undefined => "undefined",
            Val::Null => "null",
            Val::Bool(_) => "boolean",
            Val::Num(_) => "number",
            Val::Str(_) => "string",
            Val::Arr(..) => "array",
            Val::Obj(_) => "object",
            Val::Func(_) => "function",
            Val::Node(_) => "object",
            Val::Tuples(_) => "array",
        }
    }

    /// The items of an array, or the value as a one-item list (none if undefined).
    pub fn items(&self) -> Vec<Val> {
        match self {
            Val::Undefined => Vec::new(),
            Val::Arr(a, _) => a.as_ref().clone(),
            v => vec![v.clone()],
        }
    }

    /// A value from shared JSON: objects stay references, arrays become arrays of
    /// references, scalars are converted.
    pub fn from_ref(r: JRef) -> Val {
        match r.resolve() {
            Value::Object(_) => Val::Node(r),
            Value::Array(a) => {
                let items = a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Object(_) | Value::Array(_) => Val::from_ref(r.child(Seg::Index(i))),
                        v => Val::from_json(v),
                    })
                    .collect();
                Val::arr(items)
            }
            v => Val::from_json(v),
        }
    }

    pub fn from_json(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(s.as_str().into()),
            Value::Array(a) => Val::arr(a.iter().map(Val::from_json).collect()),
            Value::Object(o) => Val::Obj(Rc::new(
                o.iter()
                    .map(|(k, v)| (k.clone(), Val::from_json(v)))
                    .collect(),
            )),
        }
    }

    /// Converts to JSON; undefined and functions become `None` (dropped from objects,
    /// `null` in arrays, as `JSON.stringify` does).
    pub fn to_json(&self) -> Result<Option<Value>> {
        Ok(match self {
            Val::Node(r) => Some(r.resolve().clone()),
            Val::Tuples(_) => materialize(self.clone()).to_json()?,
            Val::Undefined | Val::Func(_) => None,
            Val::Null => Some(Value::Null),
            Val::Bool(b) => Some(Value::Bool(*b)),
            Val::Num(n) => Some(num_to_json(*n)?),
            Val::Str(s) => Some(Value::String(s.to_string())),
            Val::Arr(a, _) => {
                let mut out = Vec::with_capacity(a.len());
                for v in a.iter() {
                    out.push(v.to_json()?.unwrap_or(Value::Null));
                }
                Some(Value::Array(out))
            }
            Val::Obj(o) => {
                let mut m = serde_json::Map::new();
                for (k, v) in o.iter() {
                    if let Some(j) = v.to_json()? {
                        m.insert(k.clone(), j);
                    }
                }
                Some(Value::Object(m))
            }
        })
    }
}

pub(crate) fn num_to_json(n: f64) -> Result<Value> {
    if !n.is_finite() {
        return Err(Error::new("D1001", "Number out of range", None));
    }
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        return Ok(Value::from(n as i64));
    }
    Ok(serde_json::Number::from_f64(n)
        .map(Value::Number)
        .unwrap_or(Value::Null))
}

/// JSONata's effective Boolean value (`$boolean`).
pub(crate) fn truthy(v: &Val) -> bool {
    match v {
        Val::Undefined | Val::Null => false,
        Val::Bool(b) => *b,
        Val::Num(n) => *n != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Arr(a, _) => match a.len() {
            0 => false,
            1 => truthy(&a[0]),
            _ => a.iter().any(truthy),
        },
        Val::Obj(o) => !o.is_empty(),
        Val::Node(r) => r.resolve().as_object().is_some_and(|o| !o.is_empty()),
        Val::Tuples(_) => truthy(&materialize(v.clone())),
        Val::Func(_) => false,
    }
}

/// Converts every [`Val::Node`] in a value to ordinary values.
pub(crate) fn materialize(v: Val) -> Val {
    fn has_node(v: &Val) -> bool {
        match v {
            Val::Node(_) => true,
            Val::Arr(a, _) => a.iter().any(has_node),
            _ => false,
        }
    }
    match v {
        Val::Node(r) => Val::from_json(r.resolve()),
        Val::Tuples(t) => materialize(Val::seq(t.iter().map(|t| t.at.clone()).collect())),
        Val::Arr(a, f) if a.iter().any(has_node) => {
            Val::Arr(Rc::new(a.iter().cloned().map(materialize).collect()), f)
        }
        v => v,
    }
}

/// Deep equality (`=`).
pub(crate) fn deep_equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Node(x), Val::Node(y)) => x.resolve() == y.resolve(),
        (Val::Node(_) | Val::Tuples(_), _) | (_, Val::Node(_) | Val::Tuples(_)) => {
            deep_equal(&materialize(a.clone()), &materialize(b.clone()))
        }
        (Val::Null, Val::Null) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Arr(x, _), Val::Arr(y, _)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| deep_equal(p, q))
        }
        (Val::Obj(x), Val::Obj(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_equal(v, w)))
        }
        (Val::Func(x), Val::Func(y)) => Rc::ptr_eq(x, y),
        _ => false,
    }
}

/// Formats a number as JavaScript's `Number.prototype.toString` does, after rounding to
/// 15 significant digits as JSONata's `$string` does.
pub(crate) fn format_number(n: f64) -> String {
    if n == 0.0 {
        return "0".into();
    }
    let rounded: f64 = format!("{n:.14e}").parse().unwrap_or(n);
    js_number(rounded)
}

/// JavaScript's shortest round-trip number formatting.
pub(crate) fn js_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if n == 0.0 {
        return "0".into();
    }
    // shortest digits and exponent from Rust's `{:e}` formatting
    let e = format!("{:e}", n.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;
    let sign = if n < 0.0 { "-" } else { "" };
    let nexp = exp + 1; // position of the decimal point
    let body = if k <= nexp && nexp <= 21 {
        format!("{digits}{}", "0".repeat((nexp - k) as usize))
    } else if 0 < nexp && nexp <= 21 {
        format!("{}.{}", &digits[..nexp as usize], &digits[nexp as usize..])
    } else if -6 < nexp && nexp <= 0 {
        format!("0.{}{digits}", "0".repeat((-nexp) as usize))
    } else {
        let e = nexp - 1;
        let es = if e >= 0 {
            format!("+{e}")
        } else {
            e.to_string()
        };
        if k == 1 {
            format!("{digits}e{es}")
        } else {
            format!("{}.{}e{es}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

/// `JSON.stringify`-like serialization with JSONata's number precision; functions
/// become `""`.
pub(crate) fn stringify(v: &Val, pretty: bool) -> Result<String> {
    let mut out = String::new();
    write_json(v, pretty, 0, &mut out)?;
    Ok(out)
}

fn write_json(v: &Val, pretty: bool, indent: usize, out: &mut String) -> Result<()> {
    match v {
        Val::Node(_) | Val::Tuples(_) => write_json(&materialize(v.clone()), pretty, indent, out)?,
        Val::Undefined | Val::Null => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => {
            if !n.is_finite() {
                return Err(Error::new("D1001", "Number out of range", None));
            }
            out.push_str(&format_number(*n))
        }
        Val::Str(s) => out.push_str(&Value::String(s.to_string()).to_string()),
        Val::Func(_) => out.push_str("\"\""),
        Val::Arr(a, _) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(pretty, indent + 1, out);
                write_json(item, pretty, indent + 1, out)?;
            }
            if !a.is_empty() {
                newline(pretty, indent, out);
            }
            out.push(']');
        }
        Val::Obj(o) => {
            out.push('{');
            let mut first = true;
            for (k, item) in o.iter() {
                if item.is_undef() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                newline(pretty, indent + 1, out);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write_json(item, pretty, indent + 1, out)?;
            }
            if !first {
                newline(pretty, indent, out);
            }
            out.push('}');
        }
    }
    Ok(())
}

fn newline(pretty: bool, indent: usize, out: &mut String) {
    if pretty {
        out.push('\n');
        out.push_str(&"  ".repeat(indent));
    }
}
