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
        let (marker, next) = picture_marker(&chars, i, pos)?;
        i = next;
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
        })
        .or_else(|| {
            // a year alone
            let y: i32 = s
                .parse()
                .ok()
                .filter(|_| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))?;
            Date::from_calendar_date(y, time::Month::January, 1)
                .ok()
                .map(|d| d.midnight().assume_utc())
        })?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The UTC date of an evaluation's `$now`.
fn date_of(millis: i64) -> Date {
    OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .map(|d| d.date())
        .unwrap_or_else(|_| OffsetDateTime::now_utc().date())
}

/// Parses `s` with an XPath picture: numeric components (`Y M D d H h m s f`, with
/// ordinals `[D1o]`), month names (`[MNn]`, `[MN,3-3]`), day names (ignored), `P` and
/// time zones (`Z`, `z`). No match is undefined, as in JSONata.
fn parse_picture(s: &str, picture: &str, today: Date, pos: usize) -> Result<Option<i64>> {
    let chars: Vec<char> = picture.chars().collect();
    let mut re = String::from("^");
    let mut comps: Vec<(char, bool)> = Vec::new(); // component, named
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if (c == '[' || c == ']') && chars.get(i + 1) == Some(&c) {
            re.push_str(&regex::escape(&c.to_string()));
            i += 2;
            continue;
        }
        if c != '[' {
            re.push_str(&regex::escape(&c.to_string()));
            i += 1;
            continue;
        }
        let (marker, next) = picture_marker(&chars, i, pos)?;
        i = next;
        let mut mc = marker.chars();
        let Some(component) = mc.next() else { continue };
        let modifier: String = mc
            .collect::<String>()
            .split(',')
            .next()
            .unwrap_or("")
            .to_string();
        let named = modifier.starts_with('N') || modifier.starts_with('n');
        let ordinal = modifier.ends_with('o');
        let digits = modifier.chars().filter(|c| c.is_ascii_digit()).count();
        let number = if digits >= 2 {
            format!("([0-9]{{{digits}}})")
        } else {
            "([0-9]+)".to_string()
        };
        let number = if ordinal {
            format!("{number}(?:st|nd|rd|th)")
        } else {
            number
        };
        let part = match component {
            'Y' if named => {
                return Err(Error::at("D3133", pos, "The 'name' modifier can only be applied to months and days in the date/time picture string"))
            }
            'X' | 'x' | 'W' | 'w' | 'E' | 'C' => {
                return Err(Error::at("D3136", pos, format!("The [{marker}] component cannot be used to parse a timestamp")))
            }
            'Y' | 'D' | 'd' | 'H' | 'h' | 'm' | 's' | 'f' if !named && !modifier.contains(['I', 'i', 'w', 'W', 'a', 'A']) => number,
            'M' if named => "([A-Za-z]+)".to_string(),
            'M' if !modifier.contains(['I', 'i', 'w', 'W', 'a', 'A']) => number,
            'F' => "(?:[A-Za-z]+|[0-9]+)".to_string(),
            'P' => "([AaPp]\\.?[Mm]\\.?)".to_string(),
            'Z' => "(Z|[+-][0-9]{2}:?[0-9]{2})".to_string(),
            'z' => "GMT([+-][0-9]{2}:?[0-9]{2})".to_string(),
            'Y' | 'D' | 'd' | 'M' | 'H' | 'h' | 'm' | 's' | 'f' => {
                return Err(Error::at("D3136", pos, format!("Unsupported presentation modifier in [{marker}] for $toMillis")))
            }
            other => {
                return Err(Error::at("D3132", pos, format!("Unknown component specifier {other} in date/time picture string")))
            }
        };
        re.push_str(&part);
        if component != 'F' {
            comps.push((component, named));
        }
    }
    if comps.is_empty() {
        return Ok(None);
    }
    re.push('$');
    let re = regex::RegexBuilder::new(&re)
        .case_insensitive(true)
        .build()
        .map_err(|e| Error::at("D3136", pos, format!("Invalid date/time picture: {e}")))?;
    let Some(caps) = re.captures(s) else {
        return Ok(None);
    };
    let has = |c: char| comps.iter().any(|(k, _)| *k == c);
    // the specified date and time parts must not leave gaps
    let date_gap =
        (has('Y') && !has('M') && has('D')) || (!has('Y') && has('M') && !has('D') && !has('d'));
    let time_gap = (has('m') && !has('H') && !has('h')) || (has('s') && !has('m'));
    if date_gap || time_gap {
        return Err(Error::at(
            "D3136",
            pos,
            "The date/time picture string is missing specifiers required to parse the timestamp",
        ));
    }
    let (mut year, mut month, mut day, mut doy) = (None, None, None, None);
    let (mut hour, mut minute, mut second, mut milli, mut pm, mut offset) =
        (0i64, 0i64, 0i64, 0i64, None, 0i64);
    for (idx, (c, named)) in comps.iter().enumerate() {
        let Some(m) = caps.get(idx + 1) else { continue };
        let text = m.as_str();
        let num = || text.parse::<i64>().ok();
        match c {
            'Y' => year = num(),
            'M' if *named => {
                let lower = text.to_lowercase();
                month = MONTHS
                    .iter()
                    .position(|name| name.to_lowercase().starts_with(&lower) && lower.len() >= 3)
                    .map(|p| p as i64 + 1);
            }
            'M' => month = num(),
            'D' => day = num(),
            'd' => doy = num(),
            'H' | 'h' => hour = num().unwrap_or(0),
            'm' => minute = num().unwrap_or(0),
            's' => second = num().unwrap_or(0),
            'f' => {
                milli = text
                    .chars()
                    .chain("000".chars())
                    .take(3)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            }
            'P' => pm = Some(text.to_lowercase().starts_with('p')),
            'Z' | 'z' if text != "Z" => {
                let t = text.replace(':', "");
                let sign = if t.starts_with('-') { -1 } else { 1 };
                let h: i64 = t.get(1..3).and_then(|v| v.parse().ok()).unwrap_or(0);
                let mm: i64 = t.get(3..5).and_then(|v| v.parse().ok()).unwrap_or(0);
                offset = sign * (h * 60 + mm);
            }
            _ => {}
        }
    }
    if let Some(pm) = pm {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let date_given = year.is_some() || month.is_some() || day.is_some() || doy.is_some();
    let date = if !date_given {
        today
    } else if let Some(d) = doy {
        let y = year.unwrap_or(today.year() as i64) as i32;
        match Date::from_ordinal_date(y, d.clamp(1, 366) as u16) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        }
    } else {
        let y = year.unwrap_or(today.year() as i64) as i32;
        let mo = month.unwrap_or(1);
        let Ok(mo) = time::Month::try_from(mo.clamp(1, 12) as u8) else {
            return Ok(None);
        };
        match Date::from_calendar_date(y, mo, day.unwrap_or(1).clamp(1, 31) as u8) {
            Ok(d) => d,
            Err(_) => return Ok(None),
        }
    };
    let days = (date - Date::from_calendar_date(1970, time::Month::January, 1).expect("epoch"))
        .whole_days();
    let ms = days * 86_400_000 + ((hour * 60 + minute - offset) * 60 + second) * 1000 + milli;
    Ok(Some(ms))
}

pub(super) fn to_millis(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Some(s) = opt_str(&args, 0, "toMillis", pos)? else {
        return Ok(Val::Undefined);
    };
    if args.len() > 1 && !args[1].is_undef() {
        let Val::Str(picture) = &args[1] else {
            return Err(bad_arg("toMillis", 1, pos));
        };
        return Ok(parse_picture(&s, picture, date_of(ev.now_millis), pos)?
            .map(|ms| Val::Num(ms as f64))
            .unwrap_or(Val::Undefined));
    }
    parse_iso(&s).map(|ms| Val::Num(ms as f64)).ok_or_else(|| {
        Error::at(
            "D3110",
            pos,
            format!("The timestamp {s} cannot be parsed as ISO 8601"),
        )
    })
}

/// The variable marker of a date/time picture starting at `chars[i]` (`[`): its text
/// without whitespace, and the index after its `]`.
fn picture_marker(chars: &[char], i: usize, pos: usize) -> Result<(String, usize)> {
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
    let marker = chars[i + 1..end]
        .iter()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok((marker, end + 1))
}
