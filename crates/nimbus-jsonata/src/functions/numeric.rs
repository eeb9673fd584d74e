//! Numeric functions (<https://docs.jsonata.org/numeric-functions>) and the aggregation
//! functions (<https://docs.jsonata.org/aggregation-functions>).

use rand::Rng as _;
use std::rc::Rc;

use super::{arg, bad_arg, opt_num, opt_str};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{js_number, Val};

pub(super) fn number(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    let bad = || Error::at("D3030", pos, "Unable to cast value to a number");
    Ok(match v {
        Val::Undefined => Val::Undefined,
        Val::Num(_) => v,
        Val::Bool(b) => Val::Num(if b { 1.0 } else { 0.0 }),
        Val::Str(s) => Val::Num(parse_number(&s).ok_or_else(bad)?),
        _ => return Err(bad_arg("number", 0, pos)),
    })
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let radix = |p: &str, r: u32| i64::from_str_radix(p, r).ok().map(|n| n as f64);
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return radix(h, 16);
    }
    if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        return radix(o, 8);
    }
    if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        return radix(b, 2);
    }
    // JSON number syntax only
    let ok = {
        let b = t.as_bytes();
        let mut i = 0;
        if b.first() == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_ok = i > int_start;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let f = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == f {
                return None;
            }
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let e = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == e {
                return None;
            }
        }
        int_ok && i == b.len()
    };
    if !ok {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn num1(args: &[Val], name: &str, pos: usize, f: impl FnOnce(f64) -> f64) -> Result<Val> {
    Ok(match opt_num(args, 0, name, pos)? {
        None => Val::Undefined,
        Some(n) => Val::Num(f(n)),
    })
}

pub(super) fn abs(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    num1(&args, "abs", pos, f64::abs)
}

pub(super) fn floor(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    num1(&args, "floor", pos, f64::floor)
}

pub(super) fn ceil(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    num1(&args, "ceil", pos, f64::ceil)
}

/// Shifts the decimal point of `n` by `by` places using its decimal representation (as
/// JSONata does, to avoid binary rounding errors).
fn shift(n: f64, by: i32) -> f64 {
    let s = js_number(n);
    let (m, e) = match s.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    format!("{m}e{}", e.saturating_add(by)).parse().unwrap_or(n)
}

/// JSONata's `$round`: half to even.
pub(crate) fn round_half_even(n: f64, precision: i32) -> f64 {
    // doubles have no digits beyond ±400 decimal places
    let precision = precision.clamp(-400, 400);
    let x = if precision != 0 {
        shift(n, precision)
    } else {
        n
    };
    if !x.is_finite() {
        // more decimals than a double holds: nothing to round
        return n;
    }
    let mut r = (x + 0.5).floor();
    if (r - x).abs() == 0.5 && (r % 2.0).abs() == 1.0 {
        r -= 1.0;
    }
    let r = if precision != 0 {
        shift(r, -precision)
    } else {
        r
    };
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

pub(super) fn round(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(n) = opt_num(&args, 0, "round", pos)? else {
        return Ok(Val::Undefined);
    };
    let p = opt_num(&args, 1, "round", pos)?.unwrap_or(0.0);
    Ok(Val::Num(round_half_even(n, p.trunc() as i32)))
}

pub(super) fn power(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(b) = opt_num(&args, 0, "power", pos)? else {
        return Ok(Val::Undefined);
    };
    let e = opt_num(&args, 1, "power", pos)?.ok_or_else(|| bad_arg("power", 1, pos))?;
    let r = b.powf(e);
    if !r.is_finite() {
        return Err(Error::at("D3061", pos, format!("The power function has resulted in a value that cannot be represented as a JSON number: base={b}, exponent={e}")));
    }
    Ok(Val::Num(r))
}

pub(super) fn sqrt(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(n) = opt_num(&args, 0, "sqrt", pos)? else {
        return Ok(Val::Undefined);
    };
    if n < 0.0 {
        return Err(Error::at(
            "D3060",
            pos,
            format!("The sqrt function cannot be applied to a negative number: {n}"),
        ));
    }
    Ok(Val::Num(n.sqrt()))
}

pub(super) fn random(_: &mut Evaluator<'_>, _: Vec<Val>, _: usize) -> Result<Val> {
    Ok(Val::Num(rand::rng().random::<f64>()))
}

fn numbers(v: &Val, name: &str, pos: usize) -> Result<Option<Vec<f64>>> {
    if v.is_undef() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for item in v.items() {
        match item {
            Val::Num(n) => out.push(n),
            _ => {
                return Err(Error::at(
                    "T0412",
                    pos,
                    format!("Argument 1 of function ${name} must be an array of numbers"),
                ))
            }
        }
    }
    Ok(Some(out))
}

pub(super) fn sum(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    Ok(match numbers(&arg(&args, 0), "sum", pos)? {
        None => Val::Undefined,
        Some(ns) => Val::Num(ns.iter().sum()),
    })
}

pub(super) fn max(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    Ok(match numbers(&arg(&args, 0), "max", pos)? {
        Some(ns) if !ns.is_empty() => {
            Val::Num(ns.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
        }
        _ => Val::Undefined,
    })
}

pub(super) fn min(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    Ok(match numbers(&arg(&args, 0), "min", pos)? {
        Some(ns) if !ns.is_empty() => Val::Num(ns.iter().cloned().fold(f64::INFINITY, f64::min)),
        _ => Val::Undefined,
    })
}

pub(super) fn average(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    Ok(match numbers(&arg(&args, 0), "average", pos)? {
        Some(ns) if !ns.is_empty() => Val::Num(ns.iter().sum::<f64>() / ns.len() as f64),
        _ => Val::Undefined,
    })
}

/// `$formatNumber` with the common subset of XPath pictures: `#`, `0`, `,` grouping,
/// `.`, a prefix and a suffix, `%` and `‰`, and a negative sub-picture after `;`.
pub(super) fn format_number(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(n) = opt_num(&args, 0, "formatNumber", pos)? else {
        return Ok(Val::Undefined);
    };
    let picture =
        opt_str(&args, 1, "formatNumber", pos)?.ok_or_else(|| bad_arg("formatNumber", 1, pos))?;
    let (pos_pic, neg_pic) = match picture.split_once(';') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (picture.to_string(), None),
    };
    let pic = if n < 0.0 {
        neg_pic.clone().unwrap_or_else(|| pos_pic.clone())
    } else {
        pos_pic.clone()
    };
    let is_active = |c: char| c.is_ascii_digit() || c == '#' || c == '.' || c == ',';
    let chars: Vec<char> = pic.chars().collect();
    let first = chars
        .iter()
        .position(|&c| is_active(c))
        .unwrap_or(chars.len());
    let last = chars
        .iter()
        .rposition(|&c| is_active(c))
        .map(|i| i + 1)
        .unwrap_or(first);
    let prefix: String = chars[..first].iter().collect();
    let suffix: String = chars[last..].iter().collect();
    let body: String = chars[first..last].iter().collect();
    if body.contains('e') {
        return Err(Error::at(
            "D3080",
            pos,
            "Exponent pictures are not supported by $formatNumber",
        ));
    }
    let (int_pic, frac_pic) = match body.split_once('.') {
        Some((i, f)) => (i.to_string(), f.to_string()),
        None => (body.clone(), String::new()),
    };
    let mut value = n.abs();
    if prefix.contains('%') || suffix.contains('%') {
        value *= 100.0;
    } else if prefix.contains('‰') || suffix.contains('‰') {
        value *= 1000.0;
    }
    let min_int = int_pic.chars().filter(|c| c.is_ascii_digit()).count();
    let min_frac = frac_pic.chars().filter(|c| c.is_ascii_digit()).count();
    let max_frac = frac_pic
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '#')
        .count();
    let rounded = round_half_even(value, max_frac as i32);
    let s = format!("{rounded:.max_frac$}");
    let (mut ip, fp) = match s.split_once('.') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (s, String::new()),
    };
    let mut fp = fp.trim_end_matches('0').to_string();
    while fp.len() < min_frac {
        fp.push('0');
    }
    if ip == "0" && min_int == 0 {
        ip.clear();
    }
    while ip.len() < min_int {
        ip.insert(0, '0');
    }
    // grouping: the positions of ',' in the integer picture, from the right
    let grouping: Vec<usize> = {
        let ic: Vec<char> = int_pic.chars().collect();
        ic.iter()
            .enumerate()
            .filter(|(_, c)| **c == ',')
            .map(|(i, _)| ic[i + 1..].iter().filter(|c| **c != ',').count())
            .collect()
    };
    if let Some(&g) = grouping.iter().min().filter(|&&g| g > 0) {
        let regular = grouping.iter().all(|p| p.is_multiple_of(g));
        let digits: Vec<char> = ip.chars().collect();
        let mut out = String::new();
        for (i, c) in digits.iter().enumerate() {
            let from_right = digits.len() - i;
            if i > 0
                && ((regular && from_right.is_multiple_of(g))
                    || (!regular && grouping.contains(&from_right)))
            {
                out.push(',');
            }
            out.push(*c);
        }
        ip = out;
    }
    let mut out = ip;
    if !fp.is_empty() {
        out.push('.');
        out.push_str(&fp);
    }
    let sign = if n < 0.0 && neg_pic.is_none() {
        "-"
    } else {
        ""
    };
    Ok(Val::str(format!("{sign}{prefix}{out}{suffix}")))
}

pub(super) fn format_base(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(n) = opt_num(&args, 0, "formatBase", pos)? else {
        return Ok(Val::Undefined);
    };
    let radix = opt_num(&args, 1, "formatBase", pos)?.unwrap_or(10.0);
    if !(2.0..=36.0).contains(&radix) {
        return Err(Error::at("D3100", pos, format!("The radix of the formatBase function must be between 2 and 36.  It was given {radix}")));
    }
    let radix = radix as u32;
    let v = round_half_even(n, 0);
    let mut m = v.abs() as u128;
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((m % radix as u128) as u32, radix).unwrap_or('0'));
        m /= radix as u128;
        if m == 0 {
            break;
        }
    }
    if v < 0.0 {
        digits.push('-');
    }
    Ok(Val::str(digits.iter().rev().collect::<String>()))
}

/// The picture argument (1) of `$formatInteger`/`$parseInteger` `name`: decimal digit
/// pictures (`0`, `000`, `#,##0`) are the only ones supported.
fn decimal_picture(args: &[Val], name: &str, pos: usize) -> Result<Rc<str>> {
    let picture = opt_str(args, 1, name, pos)?.ok_or_else(|| bad_arg(name, 1, pos))?;
    if !picture
        .chars()
        .all(|c| c.is_ascii_digit() || c == '#' || c == ',')
    {
        return Err(Error::at(
            "D3130",
            pos,
            format!("Unsupported ${name} picture: {picture}"),
        ));
    }
    Ok(picture)
}

/// `$formatInteger` for decimal digit pictures (`0`, `000`, `#,##0`) only.
pub(super) fn format_integer(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(n) = opt_num(&args, 0, "formatInteger", pos)? else {
        return Ok(Val::Undefined);
    };
    let picture = decimal_picture(&args, "formatInteger", pos)?;
    format_number(
        ev,
        vec![Val::Num(n.trunc()), Val::str(picture.as_ref())],
        pos,
    )
}

/// `$parseInteger` for decimal digit pictures only.
pub(super) fn parse_integer(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "parseInteger", pos)? else {
        return Ok(Val::Undefined);
    };
    decimal_picture(&args, "parseInteger", pos)?;
    let digits: String = s.chars().filter(|c| *c != ',').collect();
    digits
        .parse::<i64>()
        .map(|i| Val::Num(i as f64))
        .map_err(|_| Error::at("D3137", pos, format!("Unable to parse {s} as an integer")))
}
