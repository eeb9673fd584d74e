//! EventBridge schedule expressions, evaluated in an IANA time zone.
//!
//! Three kinds, with the syntax EventBridge (rules and Scheduler) documents:
//!
//! - `rate(value unit)`: a fixed period. The unit is `minute`, `hour` or `day` with the value
//!   1 and `minutes`, `hours` or `days` otherwise; the value is a whole number, at least 1.
//!   Firings are `anchor + k·period` for `k = 0, 1, 2, …`, where the anchor is passed in by
//!   the caller (the schedule's start date or creation time). A rate is a real duration: a
//!   `rate(1 day)` stays 24 hours apart across daylight-saving changes.
//! - `cron(minutes hours day-of-month month day-of-week year)`: six fields with `,` `-` `*`
//!   `/` in every field except that `/` is not allowed in day-of-week; `?` in exactly one of
//!   day-of-month and day-of-week (you cannot specify both); `L` (last day of the month in
//!   day-of-month, `L` alone = Saturday and `5L` = the last Thursday in day-of-week), `W`
//!   (`15W`: the weekday nearest the 15th, never leaving the month; `LW`: the last weekday),
//!   `#` (`3#2`: the second Tuesday; alone in its field). Months are `1-12` or `JAN-DEC`,
//!   days of the week `1-7` or `SUN-SAT` (1 = Sunday), years `1970-2199`. Names are
//!   case-insensitive. A range may wrap around (`22-2` hours, `FRI-MON`), except in the
//!   year field.
//! - `at(yyyy-mm-ddThh:mm:ss)`: one firing at that wall-clock time.
//!
//! Cron and `at` times are wall-clock times in the schedule's time zone (default
//! [`DEFAULT_TIME_ZONE`]). Where a daylight-saving change makes a wall-clock time
//! ambiguous:
//!
//! - a time that does not exist (spring forward) fires at the next valid instant, the moment
//!   the clocks jump; several such times (`0/15` over the skipped hour) fire once together;
//! - a time that occurs twice (fall back) fires once, at its first occurrence.
//!
//! (EventBridge Scheduler documents a different choice for the first case: it skips a firing
//! whose time does not exist.)
//!
//! Every firing is a pure function of (expression, time zone, anchor), so a scheduler keeps
//! one durable watermark per schedule: [`Schedule::firings_between`] over
//! `(watermark, now]` yields exactly the firings not yet handled, including those missed
//! while the server was down, and advancing the watermark to `now` afterwards makes a
//! firing impossible to deliver twice. The firing instant also makes a stable idempotency
//! key.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::AmbiguousOffset;
use jiff::SignedDuration;

pub use jiff::tz::TimeZone;
pub use jiff::Timestamp;

/// The time zone a schedule is evaluated in when none is given (as in EventBridge).
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// The first year a cron expression can name.
pub const MIN_YEAR: i16 = 1970;
/// The last year a cron expression can name; nothing fires after it.
pub const MAX_YEAR: i16 = 2199;

const SECS_PER_MINUTE: u64 = 60;
const SECS_PER_HOUR: u64 = 3_600;
const SECS_PER_DAY: u64 = 86_400;

/// A parsed schedule expression. Evaluate it with [`Schedule::next_after`] or
/// [`Schedule::firings_between`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// `rate(value unit)`: fires every period from an anchor. Parsed rates are whole
    /// minutes, at least one.
    Rate(Duration),
    /// `cron(...)`: fires at the matching wall-clock minutes.
    Cron(CronExpr),
    /// `at(...)`: fires once, at this wall-clock time in the schedule's time zone.
    At(DateTime),
}

/// Why a schedule expression or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid schedule expression {expr:?}: expected rate(value unit), \
         cron(minutes hours day-of-month month day-of-week year) or at(yyyy-mm-ddThh:mm:ss)"
    )]
    Syntax { expr: String },
    #[error("invalid rate expression {expr:?}: {reason}")]
    Rate { expr: String, reason: String },
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("invalid at expression {expr:?}: {reason}")]
    At { expr: String, reason: String },
    #[error("unknown time zone {name:?}: {reason}")]
    UnknownTimeZone { name: String, reason: String },
}

/// Looks up an IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`) in the
/// system's time zone database (`/usr/share/zoneinfo`, or the directory in `$TZDIR`).
/// `UTC` works even where no database is installed.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    let err = |reason: &str| ScheduleError::UnknownTimeZone {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(err("the name is empty"));
    }
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    match TimeZone::get(name) {
        Ok(tz) if tz.is_unknown() => Err(err("not a time zone")),
        Ok(tz) => Ok(tz),
        Err(e) => Err(ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            reason: format!(
                "not in the time zone database ({e}); expected an IANA name such as \
                 Europe/Berlin"
            ),
        }),
    }
}

impl Schedule {
    /// Parses `rate(...)`, `cron(...)` or `at(...)`. Surrounding white space is ignored.
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let text = expr.trim();
        if let Some(inner) = call_args(text, "rate") {
            parse_rate(inner)
                .map(Schedule::Rate)
                .map_err(|reason| ScheduleError::Rate {
                    expr: expr.to_string(),
                    reason,
                })
        } else if let Some(inner) = call_args(text, "cron") {
            CronExpr::parse(inner)
                .map(Schedule::Cron)
                .map_err(|reason| ScheduleError::Cron {
                    expr: expr.to_string(),
                    reason,
                })
        } else if let Some(inner) = call_args(text, "at") {
            parse_at(inner)
                .map(Schedule::At)
                .map_err(|reason| ScheduleError::At {
                    expr: expr.to_string(),
                    reason,
                })
        } else {
            Err(ScheduleError::Syntax {
                expr: expr.to_string(),
            })
        }
    }

    /// True for `at(...)`, which fires once.
    pub fn is_one_time(&self) -> bool {
        matches!(self, Schedule::At(_))
    }

    /// The first firing strictly after `after`, or `None` when there is none (an `at` in the
    /// past, a cron expression whose years are over, a zero rate).
    ///
    /// `anchor` is the first firing of a rate (usually the schedule's start date or creation
    /// time); cron and `at` ignore it. `tz` is the zone cron and `at` wall-clock times are
    /// read in; rates ignore it.
    pub fn next_after(
        &self,
        after: Timestamp,
        anchor: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Rate(period) => next_rate_firing(*period, after, anchor),
            Schedule::Cron(cron) => cron.next_after(after, tz),
            Schedule::At(local) => resolve_local(tz, *local).filter(|at| *at > after),
        }
    }

    /// The firings in `(from_exclusive, to_inclusive]`, in order, at most `limit` of them
    /// (the earliest ones). Consecutive windows `(a, b]`, `(b, c]` yield every firing of
    /// `(a, c]` exactly once. To learn whether more than `n` firings were missed, ask for
    /// `n + 1`.
    pub fn firings_between(
        &self,
        from_exclusive: Timestamp,
        to_inclusive: Timestamp,
        anchor: Timestamp,
        tz: &TimeZone,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut firings = Vec::new();
        let mut cursor = from_exclusive;
        while firings.len() < limit {
            match self.next_after(cursor, anchor, tz) {
                Some(next) if next <= to_inclusive => {
                    firings.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        firings
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

/// The canonical expression: parsing it gives the same schedule back.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Rate(period) => {
                let secs = period.as_secs();
                if period.subsec_nanos() != 0 || secs == 0 || secs % SECS_PER_MINUTE != 0 {
                    // Not expressible as a rate expression; only reachable by building the
                    // variant by hand.
                    return write!(f, "rate({period:?})");
                }
                let (value, unit) = if secs % SECS_PER_DAY == 0 {
                    (secs / SECS_PER_DAY, "day")
                } else if secs % SECS_PER_HOUR == 0 {
                    (secs / SECS_PER_HOUR, "hour")
                } else {
                    (secs / SECS_PER_MINUTE, "minute")
                };
                let plural = if value == 1 { "" } else { "s" };
                write!(f, "rate({value} {unit}{plural})")
            }
            Schedule::Cron(cron) => write!(f, "cron({cron})"),
            Schedule::At(local) => write!(
                f,
                "at({:04}-{:02}-{:02}T{:02}:{:02}:{:02})",
                local.year(),
                local.month(),
                local.day(),
                local.hour(),
                local.minute(),
                local.second()
            ),
        }
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `name(args)` → `args`.
fn call_args<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let mut words = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected rate(value unit), e.g. rate(5 minutes)".to_string());
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the value {value:?} is not a whole number"));
    }
    let value: u64 = value
        .parse()
        .map_err(|_| format!("the value {value} is too large"))?;
    if value == 0 {
        return Err("the value must be at least 1".to_string());
    }
    let (unit_secs, singular) = match unit {
        "minute" => (SECS_PER_MINUTE, "minute"),
        "minutes" => (SECS_PER_MINUTE, ""),
        "hour" => (SECS_PER_HOUR, "hour"),
        "hours" => (SECS_PER_HOUR, ""),
        "day" => (SECS_PER_DAY, "day"),
        "days" => (SECS_PER_DAY, ""),
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: expected minute(s), hour(s) or day(s)"
            ))
        }
    };
    match (value == 1, singular.is_empty()) {
        (true, true) => {
            let one = unit.trim_end_matches('s');
            return Err(format!(
                "with the value 1 the unit is {one:?}, not {unit:?}"
            ));
        }
        (false, false) => {
            return Err(format!(
                "with a value other than 1 the unit is {:?}, not {singular:?}",
                format!("{singular}s")
            ));
        }
        _ => {}
    }
    value
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("the value {value} is too large"))
}

fn parse_at(inner: &str) -> Result<DateTime, String> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bytes = inner.as_bytes();
    let shaped = bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        });
    if !shaped {
        return Err("expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2026-11-27T12:00:00)".to_string());
    }
    let num = |range: std::ops::Range<usize>| -> i16 {
        // All digits (checked above) and at most four of them, so this cannot fail.
        inner[range].parse().unwrap_or_default()
    };
    let narrow = |n: i16| i8::try_from(n).unwrap_or(i8::MAX);
    DateTime::new(
        num(0..4),
        narrow(num(5..7)),
        narrow(num(8..10)),
        narrow(num(11..13)),
        narrow(num(14..16)),
        narrow(num(17..19)),
        0,
    )
    .map_err(|e| format!("not a valid date and time: {e}"))
}

/// Rate firings are `anchor + k·period`, `k ≥ 0`.
fn next_rate_firing(period: Duration, after: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
    let period = i128::try_from(period.as_nanos()).ok()?;
    if period == 0 {
        return None;
    }
    let anchor_ns = anchor.as_nanosecond();
    let after_ns = after.as_nanosecond();
    let k = if after_ns < anchor_ns {
        0
    } else {
        (after_ns - anchor_ns) / period + 1
    };
    let next = k.checked_mul(period)?.checked_add(anchor_ns)?;
    Timestamp::from_nanosecond(next).ok()
}

/// The instant a wall-clock time in `tz` fires at: itself when it exists once; its first
/// occurrence when the clocks fall back over it; the end of the gap (the moment the clocks
/// jump) when they spring forward over it.
fn resolve_local(tz: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { before, after } => {
            let a = before.to_timestamp(local).ok()?;
            let b = after.to_timestamp(local).ok()?;
            Some(a.min(b))
        }
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset the time lands before the gap (with the earlier
            // offset, after it); the transition that follows is the end of the gap.
            let a = after.to_timestamp(local).ok()?;
            let b = before.to_timestamp(local).ok()?;
            let earlier = a.min(b);
            let later = a.max(b);
            match tz.following(earlier).next() {
                Some(transition) if transition.timestamp() <= later => Some(transition.timestamp()),
                _ => Some(later),
            }
        }
    }
}

/// A parsed `cron(...)` expression: the six fields, each as the set of values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    /// The fields as written, separated by single spaces.
    source: String,
    /// Boxed to keep [`Schedule`] small.
    sets: Box<FieldSets>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldSets {
    minutes: Bits,
    hours: Bits,
    days: Days,
    months: Bits,
    years: Bits,
}

/// Which days of a month match: the day-of-month field or the day-of-week field (the other
/// one is `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    /// Days of the month, 1-31.
    Month(Bits),
    /// `L`: the last day of the month.
    LastDayOfMonth,
    /// `LW`: the last weekday (Monday-Friday) of the month.
    LastWeekdayOfMonth,
    /// `15W`: the weekday nearest the given day, within the month.
    NearestWeekday(u8),
    /// Days of the week, 1 = Sunday … 7 = Saturday.
    Week(Bits),
    /// `5L`: the last such day of the week in the month.
    LastOfMonth(u8),
    /// `3#2`: the `n`th (1-5) such day of the week in the month.
    Nth { weekday: u8, n: u8 },
}

/// A set of numbers from `base` to `base + 255`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bits {
    base: u16,
    words: [u64; 4],
}

impl Bits {
    fn new(base: u16) -> Bits {
        Bits {
            base,
            words: [0; 4],
        }
    }

    fn insert(&mut self, value: u16) {
        let i = value - self.base;
        self.words[usize::from(i / 64)] |= 1 << (i % 64);
    }

    fn contains(&self, value: u16) -> bool {
        match value.checked_sub(self.base) {
            Some(i) if i < 256 => self.words[usize::from(i / 64)] & (1 << (i % 64)) != 0,
            _ => false,
        }
    }
}

/// One of the six fields.
struct Field {
    name: &'static str,
    min: u16,
    max: u16,
    /// Names for `min`, `min + 1`, ….
    names: &'static [&'static str],
    step_allowed: bool,
    wrap_allowed: bool,
}

const MINUTES: Field = Field {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
    step_allowed: true,
    wrap_allowed: true,
};
const HOURS: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
    step_allowed: true,
    wrap_allowed: true,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    step_allowed: true,
    wrap_allowed: true,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    step_allowed: true,
    wrap_allowed: true,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    step_allowed: false,
    wrap_allowed: true,
};
const YEAR: Field = Field {
    name: "year",
    min: MIN_YEAR as u16,
    max: MAX_YEAR as u16,
    names: &[],
    step_allowed: true,
    wrap_allowed: false,
};

impl Field {
    fn err(&self, text: &str, what: impl fmt::Display) -> String {
        format!("{} field {text:?}: {what}", self.name)
    }

    /// A number or a name within the field's range.
    fn value(&self, text: &str, word: &str) -> Result<u16, String> {
        let expected = || {
            let mut s = format!("expected {}-{}", self.min, self.max);
            if let (Some(first), Some(last)) = (self.names.first(), self.names.last()) {
                s.push_str(&format!(" or {first}-{last}"));
            }
            s
        };
        if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
            return match word.parse::<u16>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => Err(self.err(
                    text,
                    format_args!("{word} is out of range ({})", expected()),
                )),
            };
        }
        match self.names.iter().position(|name| *name == word) {
            Some(i) => Ok(self.min + i as u16),
            None => Err(self.err(
                text,
                format_args!("{word:?} is not a value ({})", expected()),
            )),
        }
    }

    /// `,`-separated `*`, `v`, `a-b`, with an optional `/step`. `text` is upper case.
    fn parse_list(&self, text: &str) -> Result<Bits, String> {
        if text.contains('?') {
            return Err(self.err(
                text,
                "`?` must be the whole field, and only day-of-month or day-of-week can be `?`",
            ));
        }
        if text.contains('#') {
            return Err(self.err(text, "`#` is only allowed in the day-of-week field, alone"));
        }
        let mut bits = Bits::new(self.min);
        for part in text.split(',') {
            if part.is_empty() {
                return Err(self.err(text, "empty list element"));
            }
            self.parse_part(text, part, &mut bits)?;
        }
        Ok(bits)
    }

    fn parse_part(&self, text: &str, part: &str, bits: &mut Bits) -> Result<(), String> {
        let span = self.max - self.min + 1;
        let (range, step) = match part.split_once('/') {
            None => (part, None),
            Some(_) if !self.step_allowed => {
                return Err(self.err(text, "`/` is not allowed in this field"));
            }
            Some((range, step)) => {
                let step = match step.parse::<u16>() {
                    Ok(s) if s >= 1 && s <= span && step.bytes().all(|b| b.is_ascii_digit()) => s,
                    _ => {
                        return Err(self.err(
                            text,
                            format_args!(
                                "the increment {step:?} must be a number from 1 to {span}"
                            ),
                        ))
                    }
                };
                (range, Some(step))
            }
        };
        let (start, end) = if range == "*" {
            (self.min, self.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (self.value(text, a)?, self.value(text, b)?);
            if a > b && !self.wrap_allowed {
                return Err(self.err(text, format_args!("the range {range} runs backwards")));
            }
            (a, b)
        } else {
            let a = self.value(text, range)?;
            // `a/step` runs from `a` to the end of the field.
            (a, if step.is_some() { self.max } else { a })
        };
        // Walk the field as a cycle, so `22-2` is 22, 23, 0, 1, 2.
        let distance = (end + span - start) % span;
        let step = step.unwrap_or(1);
        let mut offset = 0;
        while offset <= distance {
            bits.insert(self.min + (start - self.min + offset) % span);
            offset += step;
        }
        Ok(())
    }
}

impl CronExpr {
    /// Parses the six fields inside `cron(...)`.
    fn parse(inner: &str) -> Result<CronExpr, String> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields[..] else {
            return Err(format!(
                "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
                fields.len()
            ));
        };
        let upper = |s: &str| s.to_ascii_uppercase();
        let days = match (dom == "?", dow == "?") {
            (true, true) => {
                return Err(
                    "day-of-month and day-of-week cannot both be `?`: specify one of them"
                        .to_string(),
                )
            }
            (false, false) => {
                return Err("day-of-month and day-of-week cannot both be specified: \
                            one of them must be `?`"
                    .to_string())
            }
            (false, true) => parse_day_of_month(&upper(dom))?,
            (true, false) => parse_day_of_week(&upper(dow))?,
        };
        Ok(CronExpr {
            source: fields.join(" "),
            sets: Box::new(FieldSets {
                minutes: MINUTES.parse_list(&upper(minutes))?,
                hours: HOURS.parse_list(&upper(hours))?,
                days,
                months: MONTH.parse_list(&upper(month))?,
                years: YEAR.parse_list(&upper(year))?,
            }),
        })
    }

    /// The fields as written (without `cron(` and `)`).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `after`, reading wall-clock times in `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Firing instants never decrease as the wall-clock time increases (a fold fires at
        // its first occurrence, a gap at its end), so the first matching minute at or after
        // the wall-clock time of `after` whose instant is later than `after` is the answer.
        // Minutes whose instant is not later are only those inside a fold.
        let local = tz.to_datetime(after);
        let mut cursor = DateTime::new(
            local.year(),
            local.month(),
            local.day(),
            local.hour(),
            local.minute(),
            0,
            0,
        )
        .ok()?;
        loop {
            let candidate = self.next_local_at_or_after(cursor)?;
            let at = resolve_local(tz, candidate)?;
            if at > after {
                return Some(at);
            }
            cursor = candidate.checked_add(SignedDuration::from_mins(1)).ok()?;
        }
    }

    /// The first matching wall-clock minute at or after `start` (which has no seconds).
    fn next_local_at_or_after(&self, start: DateTime) -> Option<DateTime> {
        let (sy, sm, sd, sh, smin) = (
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
        );
        for year in sy.max(MIN_YEAR)..=MAX_YEAR {
            if !self.sets.years.contains(year as u16) {
                continue;
            }
            let first_year = year == sy;
            for month in 1..=12i8 {
                if !self.sets.months.contains(month as u16) || (first_year && month < sm) {
                    continue;
                }
                let first_month = first_year && month == sm;
                let days = self.days_of(year, month);
                for day in 1..=31i8 {
                    if days & (1 << day) == 0 || (first_month && day < sd) {
                        continue;
                    }
                    let first_day = first_month && day == sd;
                    for hour in 0..24i8 {
                        if !self.sets.hours.contains(hour as u16) || (first_day && hour < sh) {
                            continue;
                        }
                        let first_hour = first_day && hour == sh;
                        for minute in 0..60i8 {
                            if !self.sets.minutes.contains(minute as u16)
                                || (first_hour && minute < smin)
                            {
                                continue;
                            }
                            return DateTime::new(year, month, day, hour, minute, 0, 0).ok();
                        }
                    }
                }
            }
        }
        None
    }

    /// The matching days of a month as bits 1-31.
    fn days_of(&self, year: i16, month: i8) -> u32 {
        let Ok(first) = Date::new(year, month, 1) else {
            return 0;
        };
        let len = first.days_in_month() as u8;
        // 1 = Sunday … 7 = Saturday.
        let first_weekday = first.weekday().to_sunday_one_offset() as u8;
        let weekday = |day: u8| (first_weekday - 1 + day - 1) % 7 + 1;
        let bit = |day: u8| 1u32 << day;
        let weekday_nearest = |day: u8| match weekday(day) {
            7 if day == 1 => day + 2,
            7 => day - 1,
            1 if day == len => day - 2,
            1 => day + 1,
            _ => day,
        };
        match &self.sets.days {
            Days::Month(days) => (1..=len)
                .filter(|d| days.contains(u16::from(*d)))
                .fold(0, |acc, d| acc | bit(d)),
            Days::LastDayOfMonth => bit(len),
            Days::LastWeekdayOfMonth => bit(weekday_nearest(len)),
            Days::NearestWeekday(day) if *day > len => 0,
            Days::NearestWeekday(day) => bit(weekday_nearest(*day)),
            Days::Week(weekdays) => (1..=len)
                .filter(|d| weekdays.contains(u16::from(weekday(*d))))
                .fold(0, |acc, d| acc | bit(d)),
            Days::LastOfMonth(wanted) => bit(len - (weekday(len) + 7 - wanted) % 7),
            Days::Nth { weekday: wanted, n } => {
                let day = 1 + (wanted + 7 - first_weekday) % 7 + 7 * (n - 1);
                if day <= len {
                    bit(day)
                } else {
                    0
                }
            }
        }
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Day-of-month: a list, or `L`, `LW`, `nW` alone. `text` is upper case.
fn parse_day_of_month(text: &str) -> Result<Days, String> {
    let field = &DAY_OF_MONTH;
    match text {
        "L" => return Ok(Days::LastDayOfMonth),
        "LW" => return Ok(Days::LastWeekdayOfMonth),
        _ => {}
    }
    if let Some(day) = text.strip_suffix('W') {
        if day.contains([',', '-', '/', '*', 'L', 'W']) {
            return Err(field.err(text, "`W` takes one day, e.g. 15W"));
        }
        let day = field.value(text, day)?;
        return Ok(Days::NearestWeekday(day as u8));
    }
    if text.contains(['L', 'W']) {
        return Err(field.err(
            text,
            "`L`, `LW` and `nW` must be the whole field (e.g. L or 15W)",
        ));
    }
    field.parse_list(text).map(Days::Month)
}

/// Day-of-week: a list, or `L`, `nL`, `n#k` alone. `text` is upper case.
fn parse_day_of_week(text: &str) -> Result<Days, String> {
    let field = &DAY_OF_WEEK;
    let single = |day: &str, what: &str| {
        if day.contains([',', '-', '/', '*']) {
            Err(field.err(
                text,
                format_args!("{what} takes one day of the week and must be the whole field"),
            ))
        } else {
            field.value(text, day).map(|d| d as u8)
        }
    };
    if let Some((day, n)) = text.split_once('#') {
        let weekday = single(day, "`#`")?;
        let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        return match n.parse::<u8>() {
            Ok(n @ 1..=5) if digits => Ok(Days::Nth { weekday, n }),
            _ => Err(field.err(
                text,
                format_args!("the instance {n:?} after `#` must be 1 to 5"),
            )),
        };
    }
    if text == "L" {
        // The last day of the week: Saturday.
        let mut saturday = Bits::new(DAY_OF_WEEK.min);
        saturday.insert(7);
        return Ok(Days::Week(saturday));
    }
    if let Some(day) = text.strip_suffix('L') {
        return single(day, "`L`").map(Days::LastOfMonth);
    }
    field.parse_list(text).map(Days::Week)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn zone(name: &str) -> TimeZone {
        parse_time_zone(name).unwrap()
    }

    fn schedule(expr: &str) -> Schedule {
        Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// The next firing after `after` (cron/at; the anchor is irrelevant), as RFC 3339.
    fn next(expr: &str, after: &str, tz: &TimeZone) -> Option<String> {
        let epoch = Timestamp::UNIX_EPOCH;
        schedule(expr)
            .next_after(ts(after), epoch, tz)
            .map(|t| t.to_string())
    }

    /// The next `n` firings after `after`.
    fn upcoming(expr: &str, after: &str, tz: &TimeZone, n: usize) -> Vec<String> {
        let far = ts("2200-01-01T00:00:00Z");
        schedule(expr)
            .firings_between(ts(after), far, Timestamp::UNIX_EPOCH, tz, n)
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn rate_accept_and_reject() {
        let accept = [
            ("rate(1 minute)", 60),
            ("rate(5 minutes)", 300),
            ("rate(1 hour)", 3_600),
            ("rate(2 hours)", 7_200),
            ("rate(1 day)", 86_400),
            ("rate(3 days)", 259_200),
            ("rate(90 minutes)", 5_400),
            ("  rate(15 minutes) ", 900),
        ];
        for (expr, secs) in accept {
            assert_eq!(
                Schedule::parse(expr),
                Ok(Schedule::Rate(Duration::from_secs(secs))),
                "{expr}"
            );
        }
        let reject = [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(1 hours)",
            "rate(2 hour)",
            "rate(1 days)",
            "rate(3 day)",
            "rate(0 minutes)",
            "rate(-5 minutes)",
            "rate(+5 minutes)",
            "rate(1.5 hours)",
            "rate(5 seconds)",
            "rate(1 week)",
            "rate(5)",
            "rate(minutes)",
            "rate()",
            "rate(5 minutes extra)",
            "rate(99999999999999999999 minutes)",
            "rate(5 Minutes)",
            "rate 5 minutes",
            "rate(5 minutes",
            "",
            "every 5 minutes",
        ];
        for expr in reject {
            assert!(Schedule::parse(expr).is_err(), "{expr} should be rejected");
        }
    }

    #[test]
    fn rate_errors_explain_the_unit_rule() {
        let err = Schedule::parse("rate(1 minutes)").unwrap_err().to_string();
        assert!(err.contains("\"minute\""), "{err}");
        let err = Schedule::parse("rate(5 minute)").unwrap_err().to_string();
        assert!(err.contains("\"minutes\""), "{err}");
        assert!(matches!(
            Schedule::parse("rate(0 minutes)"),
            Err(ScheduleError::Rate { .. })
        ));
        assert!(matches!(
            Schedule::parse("hourly"),
            Err(ScheduleError::Syntax { .. })
        ));
    }

    #[test]
    fn cron_accept_and_reject() {
        let accept = [
            "cron(0 12 * * ? *)",
            "cron(0 12 ? * MON-FRI *)",
            "cron(15 10 ? * 6L 2026-2030)",
            "cron(0 18 ? * MON-FRI *)",
            "cron(0 8 1 * ? *)",
            "cron(0/15 * * * ? *)",
            "cron(*/5 * * * ? *)",
            "cron(1/10 * * * ? *)",
            "cron(0/10 * ? * MON-FRI *)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "cron(0 9 ? * 2#1 *)",
            "cron(0 10 ? * 3#2 *)",
            "cron(0 10 ? * TUE#2 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 LW * ? *)",
            "cron(0 0 15W * ? *)",
            "cron(0 0 ? * L *)",
            "cron(0 0 ? * FRIL *)",
            "cron(0 0 1 JAN,JUL ? *)",
            "cron(0 0 1 jan-mar ? *)",
            "cron(0 0 ? * sun,sat *)",
            "cron(0 22-2 * * ? *)",
            "cron(0 0 ? * FRI-MON *)",
            "cron(0 0 1-15/2 * ? *)",
            "cron(0 0 1 1 ? 1970)",
            "cron(0 0 1 1 ? 2199)",
            "cron(0 0 1 1 ? 2025/5)",
            "cron(59 23 31 12 ? *)",
            "cron(0 0 1 * ? 2026,2028)",
            "cron(  0 12   * * ? * )",
        ];
        for expr in accept {
            assert!(
                matches!(Schedule::parse(expr), Ok(Schedule::Cron(_))),
                "{expr} should be accepted: {:?}",
                Schedule::parse(expr)
            );
        }
        let reject = [
            "cron(0 12 * * *)",          // five fields
            "cron(0 0 12 * * ? *)",      // seven fields
            "cron(0 12 * * * *)",        // both days specified
            "cron(0 12 1 * MON *)",      // both days specified
            "cron(0 12 ? * ? *)",        // both days `?`
            "cron(60 12 * * ? *)",       // minute out of range
            "cron(0 24 * * ? *)",        // hour out of range
            "cron(0 0 0 * ? *)",         // day 0
            "cron(0 0 32 * ? *)",        // day 32
            "cron(0 0 1 13 ? *)",        // month 13
            "cron(0 0 1 0 ? *)",         // month 0
            "cron(0 0 ? * 0 *)",         // day of week 0
            "cron(0 0 ? * 8 *)",         // day of week 8
            "cron(0 0 1 1 ? 1969)",      // year too early
            "cron(0 0 1 1 ? 2200)",      // year too late
            "cron(0 0 1 1 ? 2030-2026)", // backwards year range
            "cron(0 0 1 FOO ? *)",       // unknown month name
            "cron(0 0 ? * MOO *)",       // unknown day name
            "cron(0 0 ? * 3#6 *)",       // no sixth Tuesday
            "cron(0 0 ? * 3#0 *)",       // no zeroth Tuesday
            "cron(0 0 ? * 3#1,6#3 *)",   // `#` with a list
            "cron(0 0 ? * 8#1 *)",       // `#` on a day that isn't one
            "cron(0 0 ? * 1-3L *)",      // `L` with a range
            "cron(0 0 ? * */2 *)",       // `/` not allowed in day-of-week
            "cron(0 0 L,15 * ? *)",      // `L` in a list
            "cron(0 0 15W,20W * ? *)",   // `W` in a list
            "cron(0 0 32W * ? *)",       // `W` on day 32
            "cron(0 0 L-3 * ? *)",       // Quartz offset, not in EventBridge
            "cron(0 0 ? * 5W *)",        // `W` in day-of-week
            "cron(0 0 3#2 * ? *)",       // `#` in day-of-month
            "cron(L 0 1 * ? *)",         // `L` in minutes
            "cron(0 ? 1 * ? *)",         // `?` in hours
            "cron(0/0 * * * ? *)",       // zero increment
            "cron(0/61 * * * ? *)",      // increment larger than the field
            "cron(0/x * * * ? *)",       // increment not a number
            "cron(1,,2 * * * ? *)",      // empty list element
            "cron(1, * * * ? *)",        // trailing comma
            "cron(- * * * ? *)",         // bare dash
            "cron(-5 * * * ? *)",        // negative
            "cron(0 0 1-? * ? *)",       // `?` inside a range
            "cron()",                    // nothing
        ];
        for expr in reject {
            let result = Schedule::parse(expr);
            assert!(
                matches!(result, Err(ScheduleError::Cron { .. })),
                "{expr} should be rejected, got {result:?}"
            );
        }
    }

    #[test]
    fn cron_errors_name_the_problem() {
        let err = Schedule::parse("cron(0 12 * * * *)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one of them must be `?`"), "{err}");
        let err = Schedule::parse("cron(0 24 * * ? *)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hours field"), "{err}");
        assert!(err.contains("out of range"), "{err}");
        let err = Schedule::parse("cron(0 0 ? * */2 *)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("day-of-week field"), "{err}");
        assert!(matches!(
            Schedule::parse("cron(0 12 * * ? *"),
            Err(ScheduleError::Syntax { .. })
        ));
    }

    #[test]
    fn at_accept_and_reject() {
        assert_eq!(
            Schedule::parse("at(2026-11-27T12:00:00)"),
            Ok(Schedule::At(
                DateTime::new(2026, 11, 27, 12, 0, 0, 0).unwrap()
            ))
        );
        let reject = [
            "at(2026-11-27T12:00)",
            "at(2026-11-27 12:00:00)",
            "at(2026-11-27T12:00:00Z)",
            "at(2026-11-27T12:00:00.5)",
            "at(2026-02-30T12:00:00)",
            "at(2026-13-01T00:00:00)",
            "at(2026-11-27T24:00:00)",
            "at(26-11-27T12:00:00)",
            "at()",
        ];
        for expr in reject {
            assert!(
                matches!(Schedule::parse(expr), Err(ScheduleError::At { .. })),
                "{expr} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for (expr, shown) in [
            ("rate(1 minute)", "rate(1 minute)"),
            ("rate(5 minutes)", "rate(5 minutes)"),
            ("rate(120 minutes)", "rate(2 hours)"),
            ("rate(24 hours)", "rate(1 day)"),
            ("rate(3 days)", "rate(3 days)"),
            ("cron(0  12 ? * mon-fri *)", "cron(0 12 ? * mon-fri *)"),
            ("at(2026-11-27T12:00:00)", "at(2026-11-27T12:00:00)"),
        ] {
            let parsed = schedule(expr);
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(schedule(shown), parsed);
        }
    }

    #[test]
    fn serde_uses_the_expression() {
        let parsed: Schedule = serde_json::from_str("\"rate(5 minutes)\"").unwrap();
        assert_eq!(parsed, Schedule::Rate(Duration::from_secs(300)));
        assert_eq!(
            serde_json::to_string(&schedule("cron(0 12 * * ? *)")).unwrap(),
            "\"cron(0 12 * * ? *)\""
        );
        assert!(serde_json::from_str::<Schedule>("\"rate(5 minute)\"").is_err());
    }

    #[test]
    fn rate_fires_from_its_anchor() {
        let every5 = schedule("rate(5 minutes)");
        let anchor = ts("2026-05-01T10:02:30Z");
        let tz = utc();
        let next = |after: &str| {
            every5
                .next_after(ts(after), anchor, &tz)
                .unwrap()
                .to_string()
        };
        // Before the anchor, the anchor itself is next.
        assert_eq!(next("2026-05-01T09:00:00Z"), "2026-05-01T10:02:30Z");
        // Strictly after: at the anchor, the next period.
        assert_eq!(next("2026-05-01T10:02:30Z"), "2026-05-01T10:07:30Z");
        assert_eq!(next("2026-05-01T10:07:29.999Z"), "2026-05-01T10:07:30Z");
        assert_eq!(next("2026-05-01T11:00:00Z"), "2026-05-01T11:02:30Z");
        // A daily rate is 24 real hours, whatever the clocks do.
        let daily = schedule("rate(1 day)");
        let berlin = zone("Europe/Berlin");
        let anchor = ts("2026-03-28T08:00:00Z");
        assert_eq!(
            daily
                .next_after(ts("2026-03-28T08:00:00Z"), anchor, &berlin)
                .unwrap()
                .to_string(),
            "2026-03-29T08:00:00Z"
        );
        // A hand-built zero rate never fires instead of dividing by zero.
        assert_eq!(
            Schedule::Rate(Duration::ZERO).next_after(anchor, anchor, &tz),
            None
        );
    }

    #[test]
    fn every_five_minutes() {
        let tz = utc();
        assert_eq!(
            upcoming("cron(0/5 * * * ? *)", "2026-05-01T12:03:10Z", &tz, 3),
            [
                "2026-05-01T12:05:00Z",
                "2026-05-01T12:10:00Z",
                "2026-05-01T12:15:00Z"
            ]
        );
        // Exactly on a firing: strictly after.
        assert_eq!(
            next("cron(*/5 * * * ? *)", "2026-05-01T12:05:00Z", &tz).unwrap(),
            "2026-05-01T12:10:00Z"
        );
        // 1/10: minutes 1, 11, 21 …; the hour wraps.
        assert_eq!(
            upcoming("cron(1/10 * * * ? *)", "2026-05-01T12:52:00Z", &tz, 2),
            ["2026-05-01T13:01:00Z", "2026-05-01T13:11:00Z"]
        );
        // The year wraps.
        assert_eq!(
            next("cron(0/5 * * * ? *)", "2026-12-31T23:59:00Z", &tz).unwrap(),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn weekdays_at_noon() {
        let tz = utc();
        // 2026-05-15 is a Friday.
        assert_eq!(
            upcoming("cron(0 12 ? * MON-FRI *)", "2026-05-15T11:00:00Z", &tz, 3),
            [
                "2026-05-15T12:00:00Z",
                "2026-05-18T12:00:00Z",
                "2026-05-19T12:00:00Z"
            ]
        );
        // Same with numbers (2 = Monday … 6 = Friday).
        assert_eq!(
            upcoming("cron(0 12 ? * 2-6 *)", "2026-05-15T12:00:00Z", &tz, 1),
            ["2026-05-18T12:00:00Z"]
        );
        // Wrapping day range FRI-MON: Fri, Sat, Sun, Mon.
        assert_eq!(
            upcoming("cron(0 0 ? * FRI-MON *)", "2026-05-14T00:00:00Z", &tz, 5),
            [
                "2026-05-15T00:00:00Z",
                "2026-05-16T00:00:00Z",
                "2026-05-17T00:00:00Z",
                "2026-05-18T00:00:00Z",
                "2026-05-22T00:00:00Z"
            ]
        );
        // L in day-of-week alone is Saturday.
        assert_eq!(
            next("cron(0 0 ? * L *)", "2026-05-14T00:00:00Z", &tz).unwrap(),
            "2026-05-16T00:00:00Z"
        );
    }

    #[test]
    fn last_day_of_month() {
        let tz = utc();
        assert_eq!(
            upcoming("cron(0 0 L * ? *)", "2026-01-31T00:00:00Z", &tz, 3),
            [
                "2026-02-28T00:00:00Z",
                "2026-03-31T00:00:00Z",
                "2026-04-30T00:00:00Z"
            ]
        );
        assert_eq!(
            next("cron(0 0 L * ? *)", "2028-02-01T00:00:00Z", &tz).unwrap(),
            "2028-02-29T00:00:00Z"
        );
        // LW: the last weekday. May 2026 ends on a Sunday, January 2026 on a Saturday,
        // November 2026 on a Monday.
        assert_eq!(
            next("cron(0 9 LW * ? *)", "2026-05-01T00:00:00Z", &tz).unwrap(),
            "2026-05-29T09:00:00Z"
        );
        assert_eq!(
            next("cron(0 9 LW * ? *)", "2026-01-01T00:00:00Z", &tz).unwrap(),
            "2026-01-30T09:00:00Z"
        );
        assert_eq!(
            next("cron(0 9 LW * ? *)", "2026-11-01T00:00:00Z", &tz).unwrap(),
            "2026-11-30T09:00:00Z"
        );
    }

    #[test]
    fn nearest_weekday() {
        let tz = utc();
        // The 15th of August 2026 is a Saturday: Friday the 14th.
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2026-08-01T00:00:00Z", &tz).unwrap(),
            "2026-08-14T09:00:00Z"
        );
        // The 15th of November 2026 is a Sunday: Monday the 16th.
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2026-11-01T00:00:00Z", &tz).unwrap(),
            "2026-11-16T09:00:00Z"
        );
        // The 15th of May 2026 is a Friday: itself.
        assert_eq!(
            next("cron(0 9 15W * ? *)", "2026-05-01T00:00:00Z", &tz).unwrap(),
            "2026-05-15T09:00:00Z"
        );
        // 1 August 2026 is a Saturday: not back into July but Monday the 3rd.
        assert_eq!(
            next("cron(0 9 1W * ? *)", "2026-07-31T12:00:00Z", &tz).unwrap(),
            "2026-08-03T09:00:00Z"
        );
        // 31W: only months with a 31st; 31 May 2026 is a Sunday, so Friday the 29th.
        assert_eq!(
            upcoming("cron(0 9 31W * ? *)", "2026-04-01T00:00:00Z", &tz, 2),
            ["2026-05-29T09:00:00Z", "2026-07-31T09:00:00Z"]
        );
    }

    #[test]
    fn nth_and_last_weekday_of_month() {
        let tz = utc();
        // Second Tuesday: 12 May, 9 June 2026.
        assert_eq!(
            upcoming("cron(0 10 ? * 3#2 *)", "2026-05-01T00:00:00Z", &tz, 2),
            ["2026-05-12T10:00:00Z", "2026-06-09T10:00:00Z"]
        );
        assert_eq!(
            next("cron(0 10 ? * TUE#2 *)", "2026-05-01T00:00:00Z", &tz).unwrap(),
            "2026-05-12T10:00:00Z"
        );
        // Fifth Monday: May 2026 has none, June 2026 has the 29th.
        assert_eq!(
            next("cron(0 0 ? * 2#5 *)", "2026-05-01T00:00:00Z", &tz).unwrap(),
            "2026-06-29T00:00:00Z"
        );
        // Last Friday: 29 May 2026, 26 June 2026.
        assert_eq!(
            upcoming("cron(15 10 ? * 6L *)", "2026-05-01T00:00:00Z", &tz, 2),
            ["2026-05-29T10:15:00Z", "2026-06-26T10:15:00Z"]
        );
    }

    #[test]
    fn yearly_and_the_year_field() {
        let tz = utc();
        assert_eq!(
            upcoming("cron(0 0 1 1 ? *)", "2026-06-01T00:00:00Z", &tz, 2),
            ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
        );
        assert_eq!(
            next("cron(0 0 29 2 ? *)", "2026-03-01T00:00:00Z", &tz).unwrap(),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            upcoming(
                "cron(30 6 4 JUL ? 2026,2028)",
                "2020-01-01T00:00:00Z",
                &tz,
                5
            ),
            ["2026-07-04T06:30:00Z", "2028-07-04T06:30:00Z"]
        );
        // Nothing after the last year the expression allows.
        assert_eq!(
            next("cron(0 0 1 1 ? 2199)", "2199-01-01T00:00:00Z", &tz),
            None
        );
        assert_eq!(
            next("cron(0 0 1 1 ? 1970-1975)", "2026-01-01T00:00:00Z", &tz),
            None
        );
        // Never: there is no 31 February.
        assert_eq!(
            next("cron(0 0 31 2 ? *)", "2026-01-01T00:00:00Z", &tz),
            None
        );
        // Hours wrapping past midnight: 22, 23, 0, 1, 2.
        assert_eq!(
            upcoming("cron(0 22-2 * * ? *)", "2026-05-01T21:00:00Z", &tz, 6),
            [
                "2026-05-01T22:00:00Z",
                "2026-05-01T23:00:00Z",
                "2026-05-02T00:00:00Z",
                "2026-05-02T01:00:00Z",
                "2026-05-02T02:00:00Z",
                "2026-05-02T22:00:00Z"
            ]
        );
    }

    #[test]
    fn berlin_across_spring_forward() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        let tz = zone("Europe/Berlin");
        // 09:00 local is 08:00Z in winter, 07:00Z in summer.
        assert_eq!(
            upcoming("cron(0 9 * * ? *)", "2026-03-28T00:00:00Z", &tz, 2),
            ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"]
        );
        // 02:30 does not exist on the 29th: it fires when the clocks jump.
        assert_eq!(
            upcoming("cron(30 2 * * ? *)", "2026-03-28T12:00:00Z", &tz, 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // Every half hour: the skipped 02:00 and 02:30 fire once, together with 03:00.
        let half_hourly = schedule("cron(0/30 * * * ? *)");
        let firings = half_hourly.firings_between(
            ts("2026-03-29T00:00:00Z"),
            ts("2026-03-29T02:00:00Z"),
            Timestamp::UNIX_EPOCH,
            &tz,
            100,
        );
        let firings: Vec<String> = firings.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            firings,
            [
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
        // A one-time schedule in the gap fires at its end too.
        assert_eq!(
            next("at(2026-03-29T02:15:00)", "2026-03-29T00:00:00Z", &tz).unwrap(),
            "2026-03-29T01:00:00Z"
        );
    }

    #[test]
    fn berlin_across_fall_back() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:00-02:59 happen twice.
        let tz = zone("Europe/Berlin");
        // 02:30 fires once, at its first occurrence (00:30Z), then the next day in CET.
        assert_eq!(
            upcoming("cron(30 2 * * ? *)", "2026-10-24T12:00:00Z", &tz, 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Asked from inside the second pass, the repeated 02:30 does not fire again.
        assert_eq!(
            next("cron(30 2 * * ? *)", "2026-10-25T01:15:00Z", &tz).unwrap(),
            "2026-10-26T01:30:00Z"
        );
        // Every half hour: the repeated hour does not fire twice.
        assert_eq!(
            upcoming("cron(0/30 * * * ? *)", "2026-10-24T23:00:00Z", &tz, 6),
            [
                "2026-10-24T23:30:00Z",
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T02:30:00Z",
                "2026-10-25T03:00:00Z"
            ]
        );
    }

    #[test]
    fn new_york_weekdays_at_noon_across_dst() {
        // DST starts 2026-03-08 and ends 2026-11-01 in New York.
        let tz = zone("America/New_York");
        // Friday 6 March is EST (17:00Z); Monday 9 March is EDT (16:00Z).
        assert_eq!(
            upcoming("cron(0 12 ? * MON-FRI *)", "2026-03-06T00:00:00Z", &tz, 2),
            ["2026-03-06T17:00:00Z", "2026-03-09T16:00:00Z"]
        );
        // Friday 30 October is EDT; Monday 2 November is EST.
        assert_eq!(
            upcoming("cron(0 12 ? * MON-FRI *)", "2026-10-30T00:00:00Z", &tz, 2),
            ["2026-10-30T16:00:00Z", "2026-11-02T17:00:00Z"]
        );
        // at() reads its time in the zone too.
        assert_eq!(
            next("at(2026-11-27T12:00:00)", "2026-01-01T00:00:00Z", &tz).unwrap(),
            "2026-11-27T17:00:00Z"
        );
        // The local day, not the UTC day, decides the weekday: Friday 20:00 in New York is
        // Saturday in UTC.
        assert_eq!(
            next("cron(0 20 ? * FRI *)", "2026-05-15T00:00:00Z", &tz).unwrap(),
            "2026-05-16T00:00:00Z"
        );
    }

    #[test]
    fn one_time_schedule_fires_once() {
        let at = schedule("at(2026-11-27T12:00:00)");
        let tz = utc();
        let epoch = Timestamp::UNIX_EPOCH;
        assert!(at.is_one_time());
        assert_eq!(
            at.next_after(ts("2026-11-27T11:59:59Z"), epoch, &tz),
            Some(ts("2026-11-27T12:00:00Z"))
        );
        assert_eq!(at.next_after(ts("2026-11-27T12:00:00Z"), epoch, &tz), None);
        assert_eq!(
            at.firings_between(
                ts("2026-01-01T00:00:00Z"),
                ts("2027-01-01T00:00:00Z"),
                epoch,
                &tz,
                10
            ),
            [ts("2026-11-27T12:00:00Z")]
        );
    }

    #[test]
    fn firings_over_a_three_hour_gap() {
        let tz = utc();
        let anchor = ts("2026-05-01T00:00:00Z");
        let last_fired = ts("2026-05-01T09:00:00Z");
        let now = ts("2026-05-01T12:00:00Z");

        // Every 5 minutes: 36 firings in (09:00, 12:00], the first at 09:05, the last at 12:00.
        let every5 = schedule("rate(5 minutes)");
        let all = every5.firings_between(last_fired, now, anchor, &tz, 1000);
        assert_eq!(all.len(), 36);
        assert_eq!(all[0], ts("2026-05-01T09:05:00Z"));
        assert_eq!(all[35], now);
        // The limit keeps the earliest ones.
        let limited = every5.firings_between(last_fired, now, anchor, &tz, 10);
        assert_eq!(limited, all[..10]);
        assert_eq!(every5.firings_between(last_fired, now, anchor, &tz, 0), []);

        // The same as a cron expression.
        let cron5 = schedule("cron(0/5 * * * ? *)");
        assert_eq!(
            cron5.firings_between(last_fired, now, anchor, &tz, 1000),
            all
        );

        // Hourly: 10:00, 11:00, 12:00 (the start is excluded, the end included).
        let hourly = schedule("cron(0 * * * ? *)");
        assert_eq!(
            hourly.firings_between(last_fired, now, anchor, &tz, 100),
            [
                ts("2026-05-01T10:00:00Z"),
                ts("2026-05-01T11:00:00Z"),
                ts("2026-05-01T12:00:00Z")
            ]
        );
        // Nothing due in an empty or reversed window.
        assert_eq!(hourly.firings_between(now, now, anchor, &tz, 100), []);
        assert_eq!(
            hourly.firings_between(now, last_fired, anchor, &tz, 100),
            []
        );
    }

    #[test]
    fn consecutive_windows_never_fire_twice() {
        // A scheduler that checks at irregular moments (including exactly on firings) and
        // after a restart sees each firing exactly once.
        let berlin = zone("Europe/Berlin");
        let anchor = ts("2026-10-24T22:07:00Z");
        let start = ts("2026-10-24T22:00:00Z");
        let end = ts("2026-10-25T06:00:00Z");
        let checks = [
            "2026-10-24T22:07:00Z",
            "2026-10-24T22:59:59Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:31:17Z",
            "2026-10-25T04:00:00Z",
        ];
        for expr in [
            "rate(7 minutes)",
            "cron(0/15 * * * ? *)",
            "cron(30 2 * * ? *)",
        ] {
            let s = schedule(expr);
            let whole = s.firings_between(start, end, anchor, &berlin, 10_000);
            assert!(!whole.is_empty(), "{expr}");
            let mut pieced = Vec::new();
            let mut watermark = start;
            for check in checks.iter().map(|c| ts(c)).chain([end]) {
                pieced.extend(s.firings_between(watermark, check, anchor, &berlin, 10_000));
                watermark = check;
            }
            assert_eq!(pieced, whole, "{expr}");
            assert!(whole.windows(2).all(|w| w[0] < w[1]), "{expr}");
        }
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_time_zone("UTC").unwrap(), TimeZone::UTC);
        assert_eq!(
            parse_time_zone("Europe/Berlin").unwrap().iana_name(),
            Some("Europe/Berlin")
        );
        assert!(parse_time_zone("America/New_York").is_ok());
        for bad in [
            "",
            "Mars/Olympus_Mons",
            "Europe/Berlín",
            "../../etc/passwd",
            "Etc/Unknown",
        ] {
            let err = parse_time_zone(bad).unwrap_err();
            assert!(
                matches!(err, ScheduleError::UnknownTimeZone { .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().starts_with("unknown time zone"), "{err}");
        }
    }
}
