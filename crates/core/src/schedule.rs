//! Cron-style schedules as a pure function of `now` and the last run.
//!
//! Five fields, UTC: minute hour day-of-month month day-of-week (0 = Sunday). Each field is
//! `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those. When both
//! day fields are restricted, a day matches if either does (the classic cron rule).

use serde::{Deserialize, Serialize};

use crate::Millis;

const MINUTE_MS: Millis = 60_000;
const DAY_MS: Millis = 86_400_000;
/// Searching further than this means the expression can never match (e.g. 31 February).
const SEARCH_DAYS: i64 = 366 * 8;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule {expression:?}: expected 5 fields (minute hour day month weekday), got {got}"
    )]
    FieldCount { expression: String, got: usize },
    #[error(
        "schedule {expression:?}: field {field} has invalid part {part:?} (allowed {min}-{max})"
    )]
    BadField {
        expression: String,
        field: &'static str,
        part: String,
        min: u32,
        max: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    expression: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    day_restricted: bool,
    weekday_restricted: bool,
}

fn parse_field(
    expression: &str,
    field: &'static str,
    text: &str,
    min: u32,
    max: u32,
) -> Result<u64, ScheduleError> {
    let bad = |part: &str| ScheduleError::BadField {
        expression: expression.to_owned(),
        field,
        part: part.to_owned(),
        min,
        max,
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, step.parse::<u32>().map_err(|_| bad(part))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad(part));
        }
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                a.parse().map_err(|_| bad(part))?,
                b.parse().map_err(|_| bad(part))?,
            )
        } else {
            let value: u32 = range.parse().map_err(|_| bad(part))?;
            (value, if part.contains('/') { max } else { value })
        };
        if low < min || high > max || low > high {
            return Err(bad(part));
        }
        let mut value = low;
        while value <= high {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok(bits)
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31); proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount {
                expression: expression.to_owned(),
                got: fields.len(),
            });
        }
        let minutes = parse_field(expression, "minute", fields[0], 0, 59)?;
        let hours = parse_field(expression, "hour", fields[1], 0, 23)? as u32;
        let days = parse_field(expression, "day-of-month", fields[2], 1, 31)? as u32;
        let months = parse_field(expression, "month", fields[3], 1, 12)? as u16;
        let mut weekdays = parse_field(expression, "day-of-week", fields[4], 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            expression: expression.to_owned(),
            minutes,
            hours,
            days,
            months,
            weekdays: (weekdays & 0x7f) as u8,
            day_restricted: fields[2] != "*",
            weekday_restricted: fields[4] != "*",
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    fn day_matches(&self, days_since_epoch: i64) -> bool {
        let (_, month, day) = civil_from_days(days_since_epoch);
        if self.months & (1 << month) == 0 {
            return false;
        }
        // 1970-01-01 was a Thursday.
        let weekday = (days_since_epoch + 4).rem_euclid(7) as u32;
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.day_restricted, self.weekday_restricted) {
            (true, true) => by_day || by_weekday,
            (true, false) => by_day,
            (false, true) => by_weekday,
            (false, false) => true,
        }
    }

    /// The first matching minute strictly after `after`; `None` if the expression never
    /// matches.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let start = (after.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let first_day = start.div_euclid(DAY_MS);
        for day in first_day..first_day + SEARCH_DAYS {
            if !self.day_matches(day) {
                continue;
            }
            for hour in 0..24i64 {
                if self.hours & (1 << hour) == 0 {
                    continue;
                }
                for minute in 0..60i64 {
                    if self.minutes & (1 << minute) == 0 {
                        continue;
                    }
                    let at = day * DAY_MS + hour * 3_600_000 + minute * MINUTE_MS;
                    if at >= start {
                        return Some(at);
                    }
                }
            }
        }
        None
    }

    /// When the schedule is next due, given the last run (if any). A result at or before
    /// `now` means "due now": a run was missed (e.g. the coordinator was down), and it is run
    /// once, not once per missed occurrence.
    pub fn next_due(&self, now: Millis, last_run: Option<Millis>) -> Option<Millis> {
        match last_run {
            Some(last) => self
                .next_after(last)
                .map(|due| if due <= now { now } else { due }),
            None => self.next_after(now),
        }
    }
}
