//! Date/time functions (<https://docs.jsonata.org/date-time-functions>): ISO 8601 and a
//! subset of XPath picture strings for `$fromMillis`/`$now`.

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::{bad_arg, opt_num, opt_str};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::Val;

const DEFAULT_PICTURE: &str = "[Y0001]-[M01]-[D01]T[H01]:[m01]:[s01].[f001][Z01:01t]";
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

pub(super) fn millis(ev: &mut Evaluator<'_>, _: Vec<Val>, _: usize) -> Result<Val> {
    Ok(Val::Num(ev.now_millis as f64))
}

pub(super) fn now(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let mut a = vec![Val::Num(ev.now_millis as f64)];
    a.extend(args);
    from_millis(ev, a, pos)
}

fn parse_tz(tz: &str, pos: usize) -> Result<UtcOffset> {
    let bad = || Error::at("D3134", pos, format!("Invalid timezone: {tz}"));
    let t = tz.replace(':', "");
    if t.len() != 5 || !t.is_ascii() {
        return Err(bad());
    }
    let sign: i32 = match &t[..1] {
        "+" => 1,
        "-" => -1,
        _ => return Err(bad()),
    };
    let h: i32 = t[1..3].parse().map_err(|_| bad())?;
    let m: i32 = t[3..5].parse().map_err(|_| bad())?;
    UtcOffset::from_whole_seconds(sign * (h * 3600 + m * 60)).map_err(|_| bad())
}

pub(super) fn from_millis(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(ms) = opt_num(&args, 0, "fromMillis", pos)? else {
        return Ok(Val::Undefined);
    };
    let picture = opt_str(&args, 1, "fromMillis", pos)?;
    let tz = opt_str(&args, 2, "fromMillis", pos)?;
    let offset = match &tz {
        Some(t) => parse_tz(t, pos)?,
        None => UtcOffset::UTC,
    };
    // beyond ±1e15 ms (±31,000 years) no date can be represented anyway
    if ms.is_nan() || ms.abs() >= 1e15 {
        return Err(Error::at("D3110", pos, "The timestamp is out of range"));
    }
    let nanos = (ms.trunc() as i128) * 1_000_000;
    let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| Error::at("D3110", pos, "The timestamp is out of range"))?
        .to_offset(offset);
    let picture = picture.as_deref().unwrap_or(DEFAULT_PICTURE);
    Ok(Val::str(format_picture(&dt, picture, pos)?))
}

fn pad_num(n: i64, width: usize) -> String {
    let s = n.abs().to_string();
    let s = if s.len() < width {
        format!("{}{s}", "0".repeat(width - s.len()))
    } else {
        s
    };
    if n < 0 {
        format!("-{s}")
    } else {
        s
    }
}

fn name_case(name: &str, modifier: &str, max: Option<usize>) -> String {
    let n: String = match max {
        Some(m) => name.chars().take(m).collect(),
        None => name.to_string(),
    };
    if modifier.starts_with("Nn") {
        n
    } else if modifier.starts_with('N') {
        n.to_uppercase()
    } else {
        n.to_lowercase()
    }
}

fn format_picture(dt: &OffsetDateTime, picture: &str, pos: usize) -> Result<String> {
    let chars: Vec<char> = picture.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '[' && chars.get(i + 1) == Some(&'[') {
            out.push('[');
            i += 2;
            continue;
        }
        if c == ']' && chars.get(i + 1) == Some(&']') {
            out.push(']');
            i += 2;
            continue;
        }
        if c != '[' {
            out.push(c);
            i += 1;
            continue;
        }
        let end = chars[i..]
            .iter()
            .position(|&c| c == ']')
            .map(|p| p + i)
            .ok_or_else(|| {
                Error::at(
                    "D3135",
                    pos,
                    "No matching closing bracket ']' in date/time picture string",
                )
            })?;
        let marker: String = chars[i + 1..end]
            .iter()
            .filter(|c| !c.is_whitespace())
            .collect();
        i = end + 1;
        let mut mc = marker.chars();
        let Some(component) = mc.next() else { continue };
        let rest: String = mc.collect();
        let (modifier, width) = match rest.split_once(',') {
            Some((m, w)) => (m.to_string(), Some(w.to_string())),
            None => (rest, None),
        };
        let max_width = width.as_deref().and_then(|w| {
            w.split('-')
                .nth(1)
                .or(Some(w))
                .and_then(|m| m.parse::<usize>().ok())
        });
        let min_width = width
            .as_deref()
            .and_then(|w| w.split('-').next())
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(0);
        let digits = modifier
            .chars()
            .filter(|c| c.is_ascii_digit())
            .count()
            .max(min_width);
        let named = modifier.starts_with('N') || modifier.starts_with('n');
        let num = |n: i64, default_width: usize| {
            pad_num(n, if digits > 0 { digits } else { default_width })
        };
        let s = match component {
            'Y' => {
                let y = dt.year() as i64;
                match max_width {
                    Some(2) => pad_num(y % 100, 2),
                    _ => num(y, 1),
                }
            }
            'M' if named => name_case(MONTHS[dt.month() as usize - 1], &modifier, max_width),
            'M' => num(dt.month() as i64, 1),
            'D' => num(dt.day() as i64, 1),
            'd' => num(dt.ordinal() as i64, 1),
            'F' if named || modifier.is_empty() => name_case(
                DAYS[dt.weekday().number_days_from_monday() as usize],
                if modifier.is_empty() { "n" } else { &modifier },
                max_width,
            ),
            'F' => num(dt.weekday().number_from_monday() as i64, 1),
            'H' => num(dt.hour() as i64, 1),
            'h' => {
                let h = dt.hour() % 12;
                num(if h == 0 { 12 } else { h as i64 }, 1)
            }
            'P' => {
                let p = if dt.hour() < 12 { "am" } else { "pm" };
                if modifier.starts_with('N') {
                    p.to_uppercase()
                } else {
                    p.to_string()
                }
            }
            'm' => num(dt.minute() as i64, 2),
            's' => num(dt.second() as i64, 2),
            'f' => {
                let ms = dt.millisecond() as i64;
                let w = if digits > 0 { digits } else { 3 };
                let s = pad_num(ms, 3);
                if w <= 3 {
                    s[..w].to_string()
                } else {
                    format!("{s}{}", "0".repeat(w - 3))
                }
            }
            'Z' | 'z' => {
                let off = dt.offset().whole_seconds();
                if modifier.ends_with('t') && off == 0 {
                    "Z".to_string()
                } else {
                    let sign = if off < 0 { '-' } else { '+' };
                    let (h, m) = (off.abs() / 3600, (off.abs() % 3600) / 60);
                    let body = if modifier.contains(':') || modifier.is_empty() {
                        format!("{sign}{h:02}:{m:02}")
                    } else {
                        format!("{sign}{h:02}{m:02}")
                    };
                    if component == 'z' {
                        format!("GMT{body}")
                    } else {
                        body
                    }
                }
            }
            other => {
                return Err(Error::at(
                    "D3132",
                    pos,
                    format!("Unknown component specifier {other} in date/time picture string"),
                ))
            }
        };
        out.push_str(&s);
    }
    Ok(out)
}

/// Parses an ISO 8601 timestamp to milliseconds since the epoch (UTC when no offset).
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    let dt = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(s, &Iso8601::DEFAULT))
        .or_else(|_| PrimitiveDateTime::parse(s, &Iso8601::DEFAULT).map(|p| p.assume_utc()))
        .ok()
        .or_else(|| {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            Date::parse(s, &fmt).ok().map(|d| d.midnight().assume_utc())
        })?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(super) fn to_millis(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "toMillis", pos)? else {
        return Ok(Val::Undefined);
    };
    if args.len() > 1 && !args[1].is_undef() {
        if !matches!(args[1], Val::Str(_)) {
            return Err(bad_arg("toMillis", 1, pos));
        }
        return Err(Error::at(
            "D3136",
            pos,
            "Picture strings are not supported by $toMillis; use ISO 8601 timestamps",
        ));
    }
    parse_iso(&s).map(|ms| Val::Num(ms as f64)).ok_or_else(|| {
        Error::at(
            "D3110",
            pos,
            format!("The timestamp {s} cannot be parsed as ISO 8601"),
        )
    })
}
