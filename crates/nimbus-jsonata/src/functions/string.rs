//! String functions (<https://docs.jsonata.org/string-functions>).

use std::rc::Rc;

use base64::Engine as _;
use indexmap::IndexMap;
use regex::Regex;

use super::{arg, bad_arg, opt_num, opt_str};
use crate::error::{Error, Result};
use crate::eval::{string_of, Evaluator};
use crate::value::{Func, Val};

/// `$string` semantics.
pub(crate) fn to_string(v: &Val) -> Result<String> {
    string_of(v)
}

pub(super) fn string(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    let pretty = match arg(&args, 1) {
        Val::Undefined => false,
        Val::Bool(b) => b,
        _ => return Err(bad_arg("string", 1, pos)),
    };
    Ok(match v {
        Val::Undefined => Val::Undefined,
        Val::Str(_) => v,
        Val::Num(n) if !n.is_finite() => {
            return Err(Error::at(
                "D3001",
                pos,
                "Attempting to invoke string function on Infinity or NaN",
            ))
        }
        v => Val::str(if matches!(v, Val::Func(_)) {
            String::new()
        } else {
            crate::value::stringify(&v, pretty).map_err(|mut e| {
                e.position = Some(pos);
                e
            })?
        }),
    })
}

fn with_str(args: &[Val], name: &str, pos: usize, f: impl FnOnce(&str) -> Val) -> Result<Val> {
    Ok(match opt_str(args, 0, name, pos)? {
        None => Val::Undefined,
        Some(s) => f(&s),
    })
}

pub(super) fn length(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    match arg(&args, 0) {
        Val::Str(s) => Ok(Val::Num(s.chars().count() as f64)),
        Val::Undefined => Ok(Val::Undefined),
        _ => Err(bad_arg("length", 0, pos)),
    }
}

pub(super) fn substring(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "substring", pos)? else {
        return Ok(Val::Undefined);
    };
    let start = opt_num(&args, 1, "substring", pos)?.ok_or_else(|| bad_arg("substring", 1, pos))?;
    let len = opt_num(&args, 2, "substring", pos)?;
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len() as f64;
    let mut start = start.trunc();
    if start < 0.0 {
        start = (n + start).max(0.0);
    }
    let start = start.min(n) as usize;
    let end = match len {
        None => chars.len(),
        Some(l) if l <= 0.0 => return Ok(Val::str("")),
        Some(l) => (start as f64 + l.trunc()).min(n) as usize,
    };
    Ok(Val::str(
        chars[start..end.max(start)].iter().collect::<String>(),
    ))
}

pub(super) fn substring_before(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "substringBefore", pos)? else {
        return Ok(Val::Undefined);
    };
    let c = opt_str(&args, 1, "substringBefore", pos)?
        .ok_or_else(|| bad_arg("substringBefore", 1, pos))?;
    Ok(Val::str(match s.find(c.as_ref()) {
        Some(i) => &s[..i],
        None => &s[..],
    }))
}

pub(super) fn substring_after(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "substringAfter", pos)? else {
        return Ok(Val::Undefined);
    };
    let c = opt_str(&args, 1, "substringAfter", pos)?
        .ok_or_else(|| bad_arg("substringAfter", 1, pos))?;
    Ok(Val::str(match s.find(c.as_ref()) {
        Some(i) => &s[i + c.len()..],
        None => &s[..],
    }))
}

pub(super) fn uppercase(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    with_str(&args, "uppercase", pos, |s| Val::str(s.to_uppercase()))
}

pub(super) fn lowercase(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    with_str(&args, "lowercase", pos, |s| Val::str(s.to_lowercase()))
}

pub(super) fn trim(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    with_str(&args, "trim", pos, |s| {
        let words: Vec<&str> = s
            .split([' ', '\t', '\n', '\r'])
            .filter(|w| !w.is_empty())
            .collect();
        Val::str(words.join(" "))
    })
}

pub(super) fn pad(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "pad", pos)? else {
        return Ok(Val::Undefined);
    };
    let width = opt_num(&args, 1, "pad", pos)?
        .ok_or_else(|| bad_arg("pad", 1, pos))?
        .trunc();
    let ch = opt_str(&args, 2, "pad", pos)?
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| " ".into());
    let len = s.chars().count() as f64;
    let pad_len = width.abs() - len;
    if pad_len <= 0.0 {
        return Ok(Val::Str(s));
    }
    ev.tick(pad_len as u64, pos)?;
    let padding: String = ch.chars().cycle().take(pad_len as usize).collect();
    Ok(Val::str(if width > 0.0 {
        format!("{s}{padding}")
    } else {
        format!("{padding}{s}")
    }))
}

/// A pattern argument: a string or a regex.
enum Pattern {
    Str(Rc<str>),
    Re(std::sync::Arc<Regex>),
}

fn pattern(args: &[Val], i: usize, name: &str, pos: usize) -> Result<Pattern> {
    match args.get(i) {
        Some(Val::Str(s)) => Ok(Pattern::Str(s.clone())),
        Some(Val::Func(f)) => match f.as_ref() {
            Func::Regex(re) => Ok(Pattern::Re(re.clone())),
            _ => Err(bad_arg(name, i, pos)),
        },
        _ => Err(bad_arg(name, i, pos)),
    }
}

pub(super) fn contains(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "contains", pos)? else {
        return Ok(Val::Undefined);
    };
    Ok(Val::Bool(match pattern(&args, 1, "contains", pos)? {
        Pattern::Str(p) => s.contains(p.as_ref()),
        Pattern::Re(re) => re.is_match(&s),
    }))
}

pub(super) fn split(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "split", pos)? else {
        return Ok(Val::Undefined);
    };
    let p = pattern(&args, 1, "split", pos)?;
    let limit = opt_num(&args, 2, "split", pos)?;
    if limit.is_some_and(|l| l < 0.0) {
        return Err(Error::at(
            "D3020",
            pos,
            "Third argument of split function must evaluate to a positive number",
        ));
    }
    let parts: Vec<String> = match p {
        Pattern::Str(p) if p.is_empty() => s.chars().map(|c| c.to_string()).collect(),
        Pattern::Str(p) => s.split(p.as_ref()).map(str::to_string).collect(),
        Pattern::Re(re) => re.split(&s).map(str::to_string).collect(),
    };
    let take = limit.map(|l| l.floor() as usize).unwrap_or(usize::MAX);
    Ok(Val::arr(
        parts.into_iter().take(take).map(Val::str).collect(),
    ))
}

pub(super) fn join(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let sep = opt_str(&args, 1, "join", pos)?.unwrap_or_else(|| "".into());
    let mut parts = Vec::new();
    for item in v.items() {
        match item {
            Val::Str(s) => parts.push(s.to_string()),
            _ => {
                return Err(Error::at(
                    "T0412",
                    pos,
                    "Argument 1 of function $join must be an array of strings",
                ))
            }
        }
    }
    Ok(Val::str(parts.join(&sep)))
}

fn match_object(re: &Regex, caps: &regex::Captures<'_>, s: &str) -> Val {
    let m = caps.get(0).expect("group 0");
    let mut o = IndexMap::new();
    o.insert("match".to_string(), Val::str(m.as_str()));
    o.insert(
        "index".to_string(),
        Val::Num(s[..m.start()].chars().count() as f64),
    );
    let groups: Vec<Val> = (1..re.captures_len())
        .map(|i| Val::str(caps.get(i).map(|g| g.as_str()).unwrap_or("")))
        .collect();
    o.insert("groups".to_string(), Val::arr(groups));
    Val::Obj(Rc::new(o))
}

/// Applies a regex value to a string: the first match object, or undefined.
pub(crate) fn regex_first_match(re: &Regex, s: &str) -> Val {
    match re.captures(s) {
        Some(c) => match_object(re, &c, s),
        None => Val::Undefined,
    }
}

pub(super) fn match_(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "match", pos)? else {
        return Ok(Val::Undefined);
    };
    let Pattern::Re(re) = pattern(&args, 1, "match", pos)? else {
        return Err(bad_arg("match", 1, pos));
    };
    let limit = opt_num(&args, 2, "match", pos)?;
    if limit.is_some_and(|l| l < 0.0) {
        return Err(Error::at(
            "D3040",
            pos,
            "Third argument of match function must evaluate to a positive number",
        ));
    }
    let take = limit.map(|l| l.floor() as usize).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for caps in re.captures_iter(&s).take(take) {
        ev.tick(1, pos)?;
        out.push(match_object(&re, &caps, &s));
    }
    Ok(Val::seq(out))
}

fn substitute(replacement: &str, caps: &regex::Captures<'_>, ngroups: usize) -> String {
    let r: Vec<char> = replacement.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < r.len() {
        if r[i] != '$' {
            out.push(r[i]);
            i += 1;
            continue;
        }
        i += 1;
        match r.get(i) {
            Some('$') => {
                out.push('$');
                i += 1;
            }
            Some('0') => {
                out.push_str(caps.get(0).map(|m| m.as_str()).unwrap_or(""));
                i += 1;
            }
            Some(c) if c.is_ascii_digit() => {
                let max_digits = if ngroups == 0 {
                    1
                } else {
                    (ngroups as f64).log10().floor() as usize + 1
                };
                let mut digits: String = r[i..]
                    .iter()
                    .take(max_digits)
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                let mut idx: usize = digits.parse().unwrap_or(0);
                if digits.len() > 1 && idx > ngroups {
                    digits.pop();
                    idx = digits.parse().unwrap_or(0);
                }
                if ngroups > 0 && idx >= 1 {
                    if let Some(g) = caps.get(idx) {
                        out.push_str(g.as_str());
                    }
                }
                i += digits.len();
            }
            _ => out.push('$'),
        }
    }
    out
}

pub(super) fn replace(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "replace", pos)? else {
        return Ok(Val::Undefined);
    };
    let p = pattern(&args, 1, "replace", pos)?;
    let limit = opt_num(&args, 3, "replace", pos)?;
    if limit.is_some_and(|l| l < 0.0) {
        return Err(Error::at(
            "D3011",
            pos,
            "Fourth argument of replace function must evaluate to a positive number",
        ));
    }
    let limit = limit.map(|l| l.floor() as usize).unwrap_or(usize::MAX);
    let replacement = arg(&args, 2);
    let re = match p {
        Pattern::Str(p) if p.is_empty() => {
            return Err(Error::at(
                "D3010",
                pos,
                "Second argument of replace function cannot be an empty string",
            ))
        }
        Pattern::Str(p) => std::sync::Arc::new(
            Regex::new(&regex::escape(&p)).map_err(|e| Error::at("S0303", pos, e.to_string()))?,
        ),
        Pattern::Re(re) => re,
    };
    let mut out = String::new();
    let mut last = 0;
    for (n, caps) in re.captures_iter(&s).enumerate() {
        if n >= limit {
            break;
        }
        ev.tick(1, pos)?;
        let m = caps.get(0).expect("group 0");
        if m.as_str().is_empty() {
            return Err(Error::at(
                "D1004",
                pos,
                "Regular expression matches zero length string",
            ));
        }
        out.push_str(&s[last..m.start()]);
        match &replacement {
            Val::Str(r) => out.push_str(&substitute(r, &caps, re.captures_len() - 1)),
            Val::Func(f) => {
                let mo = match_object(&re, &caps, &s);
                match ev.apply(f, vec![mo], &Val::Undefined, pos)? {
                    Val::Str(r) => out.push_str(&r),
                    _ => {
                        return Err(Error::at(
                            "D3012",
                            pos,
                            "Attempted to replace a matched string with a non-string value",
                        ))
                    }
                }
            }
            _ => return Err(bad_arg("replace", 2, pos)),
        }
        last = m.end();
    }
    out.push_str(&s[last..]);
    Ok(Val::str(out))
}

pub(super) fn base64encode(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    with_str(&args, "base64encode", pos, |s| {
        Val::str(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
    })
}

pub(super) fn base64decode(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "base64decode", pos)? else {
        return Ok(Val::Undefined);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim().as_bytes())
        .map_err(|e| Error::at("D3137", pos, format!("Invalid base64: {e}")))?;
    Ok(Val::str(String::from_utf8_lossy(&bytes).into_owned()))
}

const COMPONENT_SAFE: &str = "-_.!~*'()";
const URI_SAFE: &str = "-_.!~*'();/?:@&=+$,#";

fn encode(s: &str, safe: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || safe.contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn decode(s: &str, keep: &str, name: &str, pos: usize) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let bad = || {
        Error::at(
            "D3140",
            pos,
            format!("Malformed URL passed to ${name}(): \"{s}\""),
        )
    };
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
            if b < 0x80 && keep.contains(b as char) {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

pub(super) fn encode_url_component(
    _: &mut Evaluator<'_>,
    args: Vec<Val>,
    pos: usize,
) -> Result<Val> {
    with_str(&args, "encodeUrlComponent", pos, |s| {
        Val::str(encode(s, COMPONENT_SAFE))
    })
}

pub(super) fn encode_url(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    with_str(&args, "encodeUrl", pos, |s| Val::str(encode(s, URI_SAFE)))
}

pub(super) fn decode_url_component(
    _: &mut Evaluator<'_>,
    args: Vec<Val>,
    pos: usize,
) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "decodeUrlComponent", pos)? else {
        return Ok(Val::Undefined);
    };
    Ok(Val::str(decode(&s, "", "decodeUrlComponent", pos)?))
}

pub(super) fn decode_url(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "decodeUrl", pos)? else {
        return Ok(Val::Undefined);
    };
    Ok(Val::str(decode(&s, ";/?:@&=+$,#", "decodeUrl", pos)?))
}

pub(super) fn eval(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(src) = opt_str(&args, 0, "eval", pos)? else {
        return Ok(Val::Undefined);
    };
    let node = crate::parser::parse(&src).map_err(|e| {
        Error::at(
            "D3120",
            pos,
            format!(
                "Syntax error in expression passed to function eval: {}",
                e.message
            ),
        )
    })?;
    let input = match args.get(1) {
        Some(v) => v.clone(),
        None => ev.ctx_input.clone(),
    };
    ev.eval(&node, &input, 0).map_err(|e| {
        if e.code.starts_with('U') {
            // budgets stay budgets
            e
        } else {
            Error::at(
                "D3121",
                pos,
                format!(
                    "Dynamic error evaluating the expression passed to function eval: {}",
                    e.message
                ),
            )
        }
    })
}
