//! JSONata's standard function library.
//!
//! Each built-in has a name, an argument count range and, when its signature lets the
//! context stand in for the first argument (`-` in JSONata signatures), the type of that
//! argument.

mod array;
mod datetime;
mod hof;
mod numeric;
mod object;
mod string;

use std::rc::Rc;

use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{Func, Val};

pub(crate) use string::{regex_first_match, to_string};

/// A built-in function's implementation.
pub(crate) type BuiltinFn = fn(&mut Evaluator<'_>, Vec<Val>, usize) -> Result<Val>;

/// A built-in function.
pub(crate) struct Builtin {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
    /// The context is used as the first argument when it is missing (JSONata's `-`).
    pub ctx: Option<char>,
    pub f: BuiltinFn,
}

const fn b(
    name: &'static str,
    min_args: usize,
    max_args: usize,
    ctx: Option<char>,
    f: BuiltinFn,
) -> Builtin {
    Builtin {
        name,
        min_args,
        max_args,
        ctx,
        f,
    }
}

const S: Option<char> = Some('s');
const N: Option<char> = Some('n');
const X: Option<char> = Some('x');
const O: Option<char> = Some('o');

static BUILTINS: &[Builtin] = &[
    // string
    b("string", 1, 2, X, string::string),
    b("length", 1, 1, S, string::length),
    b("substring", 2, 3, S, string::substring),
    b("substringBefore", 2, 2, S, string::substring_before),
    b("substringAfter", 2, 2, S, string::substring_after),
    b("uppercase", 1, 1, S, string::uppercase),
    b("lowercase", 1, 1, S, string::lowercase),
    b("trim", 1, 1, S, string::trim),
    b("pad", 2, 3, S, string::pad),
    b("contains", 2, 2, S, string::contains),
    b("split", 2, 3, S, string::split),
    b("join", 1, 2, None, string::join),
    b("match", 2, 3, S, string::match_),
    b("replace", 3, 4, S, string::replace),
    b("base64encode", 1, 1, S, string::base64encode),
    b("base64decode", 1, 1, S, string::base64decode),
    b("encodeUrlComponent", 1, 1, S, string::encode_url_component),
    b("encodeUrl", 1, 1, S, string::encode_url),
    b("decodeUrlComponent", 1, 1, S, string::decode_url_component),
    b("decodeUrl", 1, 1, S, string::decode_url),
    b("eval", 1, 2, None, string::eval),
    // numeric
    b("number", 1, 1, X, numeric::number),
    b("abs", 1, 1, N, numeric::abs),
    b("floor", 1, 1, N, numeric::floor),
    b("ceil", 1, 1, N, numeric::ceil),
    b("round", 1, 2, N, numeric::round),
    b("power", 2, 2, N, numeric::power),
    b("sqrt", 1, 1, N, numeric::sqrt),
    b("random", 0, 0, None, numeric::random),
    b("sum", 1, 1, None, numeric::sum),
    b("max", 1, 1, None, numeric::max),
    b("min", 1, 1, None, numeric::min),
    b("average", 1, 1, None, numeric::average),
    b("formatNumber", 2, 3, N, numeric::format_number),
    b("formatBase", 1, 2, N, numeric::format_base),
    b("formatInteger", 2, 2, N, numeric::format_integer),
    b("parseInteger", 2, 2, S, numeric::parse_integer),
    // boolean
    b("boolean", 1, 1, X, object::boolean),
    b("not", 1, 1, X, object::not),
    b("exists", 1, 1, None, object::exists),
    // array
    b("count", 0, 1, None, array::count),
    b("append", 2, 2, None, array::append),
    b("sort", 1, 2, None, array::sort),
    b("reverse", 1, 1, None, array::reverse),
    b("shuffle", 1, 1, None, array::shuffle),
    b("distinct", 1, 1, None, array::distinct),
    b("zip", 0, usize::MAX, None, array::zip),
    // object
    b("keys", 1, 1, X, object::keys),
    b("lookup", 2, 2, X, object::lookup),
    b("spread", 1, 1, X, object::spread),
    b("merge", 1, 1, None, object::merge),
    b("each", 2, 2, O, hof::each),
    b("sift", 2, 2, O, hof::sift),
    b("type", 1, 1, None, object::type_),
    b("error", 0, 1, None, object::error),
    b("assert", 1, 2, None, object::assert),
    // higher-order
    b("map", 2, 2, None, hof::map),
    b("filter", 2, 2, None, hof::filter),
    b("single", 1, 2, None, hof::single),
    b("reduce", 2, 3, None, hof::reduce),
    // date/time
    b("now", 0, 2, None, datetime::now),
    b("millis", 0, 0, None, datetime::millis),
    b("fromMillis", 1, 3, N, datetime::from_millis),
    b("toMillis", 1, 2, S, datetime::to_millis),
];

/// Finds a built-in by name.
pub(crate) fn lookup(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The names of every built-in function.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// Whether a value matches a signature type letter.
pub(crate) fn type_matches(t: char, v: &Val) -> bool {
    match t {
        's' => matches!(v, Val::Str(_)),
        'n' => matches!(v, Val::Num(_)),
        'o' => matches!(v, Val::Obj(_)),
        _ => true,
    }
}

pub(crate) fn bad_arg(name: &str, i: usize, pos: usize) -> Error {
    Error::at(
        "T0410",
        pos,
        format!(
            "Argument {} of function ${name} does not match function signature",
            i + 1
        ),
    )
}

pub(crate) fn arg(args: &[Val], i: usize) -> Val {
    args.get(i).cloned().unwrap_or(Val::Undefined)
}

pub(crate) fn opt_str(args: &[Val], i: usize, name: &str, pos: usize) -> Result<Option<Rc<str>>> {
    match args.get(i) {
        None | Some(Val::Undefined) => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_arg(name, i, pos)),
    }
}

pub(crate) fn opt_num(args: &[Val], i: usize, name: &str, pos: usize) -> Result<Option<f64>> {
    match args.get(i) {
        None | Some(Val::Undefined) => Ok(None),
        Some(Val::Num(n)) => Ok(Some(*n)),
        Some(_) => Err(bad_arg(name, i, pos)),
    }
}

pub(crate) fn opt_func(args: &[Val], i: usize, name: &str, pos: usize) -> Result<Option<Rc<Func>>> {
    match args.get(i) {
        None | Some(Val::Undefined) => Ok(None),
        Some(Val::Func(f)) => Ok(Some(f.clone())),
        Some(_) => Err(bad_arg(name, i, pos)),
    }
}

pub(crate) fn req_func(args: &[Val], i: usize, name: &str, pos: usize) -> Result<Rc<Func>> {
    opt_func(args, i, name, pos)?.ok_or_else(|| bad_arg(name, i, pos))
}

/// Calls a function with as many of `(value, index, array)` as it takes.
pub(crate) fn hof_call(
    ev: &mut Evaluator<'_>,
    f: &Rc<Func>,
    full: [Val; 3],
    pos: usize,
) -> Result<Val> {
    let n = f.arity().clamp(1, 3);
    let args: Vec<Val> = full.into_iter().take(n).collect();
    ev.apply(f, args, &Val::Undefined, pos)
}
