//! Five-field cron expressions, evaluated in UTC.
//!
//! `minute hour day-of-month month day-of-week`, each a `*`, a number, a range `a-b`, a step
//! `*/n`, `a-b/n` or `a/n`, or a comma-separated list of those; months and weekdays also take
//! three-letter English names, and weekday 7 is Sunday like 0. As in Vixie cron, when both the
//! day-of-month and the day-of-week are restricted, a day matching either fires. The aliases
//! `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are
//! accepted. Times are UTC, so there are no daylight-saving gaps or repeats.
//!
//! Written here rather than taken from a crate: the subset is small, fully tested below, and
//! avoids pulling a calendar library into the build for it.

use std::{fmt, str::FromStr};

use crate::Error;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far [`CronExpr::next_after`] searches before concluding the expression never fires
/// (e.g. `0 0 30 2 *`); five years covers every leap-day schedule.
const SEARCH_LIMIT_SECS: i64 = 5 * 366 * 86_400;

impl CronExpr {
    /// Parses an expression; errors name the field at fault.
    pub fn parse(expr: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidCron {
            expr: expr.to_string(),
            reason,
        };
        let trimmed = expr.trim();
        let expanded = match trimmed {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(invalid(format!("unknown alias {other}")));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_ascii_whitespace().collect();
        if fields.len() != 5 {
            return Err(invalid(format!(
                "expected 5 fields, found {}",
                fields.len()
            )));
        }
        let field = |i: usize, name: &str, min: u32, max: u32, names: &[&str]| {
            parse_field(fields[i], min, max, names)
                .map_err(|reason| invalid(format!("{name} field {:?}: {reason}", fields[i])))
        };
        let minutes = field(0, "minute", 0, 59, &[])?;
        let hours = field(1, "hour", 0, 23, &[])?;
        let days = field(2, "day-of-month", 1, 31, &[])?;
        let months = field(3, "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(4, "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let cron = CronExpr {
            source: trimmed.to_string(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !fields[2].starts_with('*'),
            weekdays_restricted: !fields[4].starts_with('*'),
        };
        Ok(cron)
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first firing time strictly after `unix_secs` (whole minutes, UTC), or `None` if there
    /// is none within five years.
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let start = unix_secs.div_euclid(60).checked_add(1)?.checked_mul(60)?;
        let limit = start.saturating_add(SEARCH_LIMIT_SECS);
        let mut t = start;
        while t <= limit {
            let days = t.div_euclid(86_400);
            let secs = t.rem_euclid(86_400);
            let (year, month, day) = civil_from_days(days);
            if self.months & (1 << month) == 0 {
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                t = days_from_civil(y, m, 1) * 86_400;
                continue;
            }
            let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
            if !self.day_matches(day, weekday) {
                t = (days + 1) * 86_400;
                continue;
            }
            let hour = (secs / 3600) as u32;
            if self.hours & (1 << hour) == 0 {
                t = days * 86_400 + i64::from(hour + 1) * 3600;
                continue;
            }
            let minute = ((secs % 3600) / 60) as u32;
            if self.minutes & (1 << minute) == 0 {
                t += 60;
                continue;
            }
            return Some(t);
        }
        None
    }
}

impl FromStr for CronExpr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let value = match names.iter().position(|n| *n == lower) {
        // Names map onto the field's own numbering (months from 1, weekdays from 0).
        Some(i) => i as u32 + min,
        None => text
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not a number"))?,
    };
    if value < min || value > max {
        return Err(format!("{value} is outside {min}-{max}"));
    }
    Ok(value)
}

fn parse_field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("bad step {step:?}"))?;
                if step == 0 {
                    return Err("step 0".into());
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, min, max, names)?,
                parse_value(b, min, max, names)?,
            )
        } else {
            let v = parse_value(range, min, max, names)?;
            // `a/n` means from a to the end in steps of n.
            (v, if step.is_some() { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is reversed"));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2024-02-28 23:59:30 UTC, a Wednesday, the day before a leap day.
    const T0: i64 = 1_709_164_770;

    fn next(expr: &str, t: i64) -> i64 {
        CronExpr::parse(expr).unwrap().next_after(t).unwrap()
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for d in -800_000..800_000 {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
    }

    #[test]
    fn common_schedules() {
        assert_eq!(next("* * * * *", T0), T0 + 30);
        assert_eq!(next("@hourly", T0), T0 + 30);
        // Leap day at 03:00.
        assert_eq!(
            next("0 3 * * *", T0),
            days_from_civil(2024, 2, 29) * 86_400 + 3 * 3600
        );
        assert_eq!(
            next("0 0 29 2 *", T0),
            days_from_civil(2024, 2, 29) * 86_400
        );
        // After the leap day, the next 29 February is in 2028.
        let after = days_from_civil(2024, 3, 1) * 86_400;
        assert_eq!(
            next("0 0 29 2 *", after),
            days_from_civil(2028, 2, 29) * 86_400
        );
        // Sunday at 02:30: 2024-03-03.
        assert_eq!(
            next("30 2 * * sun", T0),
            days_from_civil(2024, 3, 3) * 86_400 + 9000
        );
        assert_eq!(next("30 2 * * 7", T0), next("30 2 * * 0", T0));
        // Every 15 minutes in business hours on weekdays.
        let monday_9 = days_from_civil(2024, 3, 4) * 86_400 + 9 * 3600;
        assert_eq!(next("*/15 9-17 * * mon-fri", monday_9), monday_9 + 900);
        // Both day fields restricted: either matches (the 10th, or a Friday: 1 March).
        assert_eq!(
            next("0 0 10 * fri", T0),
            days_from_civil(2024, 3, 1) * 86_400
        );
        assert_eq!(
            next("0 12 1 jan *", T0),
            days_from_civil(2025, 1, 1) * 86_400 + 12 * 3600
        );
        assert_eq!(next("5/20 * * * *", T0), T0 + 30 + 5 * 60);
        assert_eq!(CronExpr::parse("0 0 30 2 *").unwrap().next_after(T0), None);
    }

    #[test]
    fn errors_name_the_field() {
        for (expr, needle) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "reversed"),
            ("x * * * *", "not a number"),
            ("@sometimes", "alias"),
            ("", "5 fields"),
        ] {
            let err = CronExpr::parse(expr).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr:?}: {err}");
        }
    }

    proptest! {
        /// `next_after` returns a matching minute, strictly later, and no earlier minute matches.
        #[test]
        fn next_is_the_first_match(
            minute in 0u32..60, hour in 0u32..24, step in 1u32..30,
            t in 0i64..4_000_000_000,
        ) {
            let expr = format!("{minute}/{step} {hour} * * *");
            let cron = CronExpr::parse(&expr).unwrap();
            let n = cron.next_after(t).unwrap();
            prop_assert!(n > t && n % 60 == 0);
            prop_assert!(n - t <= 86_400 + 60);
            let matches = |s: i64| {
                let m = ((s % 3600) / 60) as u32;
                let h = ((s % 86_400) / 3600) as u32;
                h == hour && m >= minute && (m - minute).is_multiple_of(step)
            };
            prop_assert!(matches(n));
            let mut s = (t / 60 + 1) * 60;
            while s < n {
                prop_assert!(!matches(s), "{} matched before {}", s, n);
                s += 60;
            }
        }

        /// Garbage never panics the parser.
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = CronExpr::parse(&s);
        }
    }
}
