use sidecar_core::{Schedule, ScheduleError};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2026-11-23 00:00 UTC, a Monday.
const MONDAY: i64 = 1_795_392_000_000;

#[test]
fn daily_at_a_fixed_time() {
    let schedule = Schedule::parse("30 2 * * *").unwrap();
    assert_eq!(
        schedule.next_after(MONDAY),
        Some(MONDAY + 2 * HOUR + 30 * MIN)
    );
    assert_eq!(
        schedule.next_after(MONDAY + 2 * HOUR + 30 * MIN),
        Some(MONDAY + DAY + 2 * HOUR + 30 * MIN)
    );
}

#[test]
fn steps_lists_ranges_and_weekdays() {
    let every_15 = Schedule::parse("*/15 * * * *").unwrap();
    assert_eq!(
        every_15.next_after(MONDAY + 16 * MIN),
        Some(MONDAY + 30 * MIN)
    );
    let weekdays = Schedule::parse("0 9 * * 1-5").unwrap();
    // Friday 09:00 → next is Monday 09:00.
    let friday_nine = MONDAY + 4 * DAY + 9 * HOUR;
    assert_eq!(
        weekdays.next_after(friday_nine),
        Some(MONDAY + 7 * DAY + 9 * HOUR)
    );
    let sunday = Schedule::parse("0 0 * * 7").unwrap();
    assert_eq!(sunday.next_after(MONDAY), Some(MONDAY + 6 * DAY));
}

#[test]
fn first_of_month_across_a_year_end() {
    let schedule = Schedule::parse("0 0 1 1 *").unwrap();
    // 2027-01-01 00:00 UTC
    assert_eq!(schedule.next_after(MONDAY), Some(1_798_761_600_000));
}

#[test]
fn a_missed_run_is_due_now_once() {
    let schedule = Schedule::parse("0 * * * *").unwrap();
    let last = MONDAY;
    let now = MONDAY + 5 * HOUR + 10 * MIN;
    assert_eq!(schedule.next_due(now, Some(last)), Some(now));
    assert_eq!(schedule.next_due(now, Some(now)), Some(MONDAY + 6 * HOUR));
    assert_eq!(schedule.next_due(now, None), Some(MONDAY + 6 * HOUR));
}

#[test]
fn impossible_and_invalid_expressions() {
    assert_eq!(
        Schedule::parse("0 0 31 2 *").unwrap().next_after(MONDAY),
        None
    );
    assert!(matches!(
        Schedule::parse("0 0 * *"),
        Err(ScheduleError::FieldCount { got: 4, .. })
    ));
    let error = Schedule::parse("61 * * * *").unwrap_err();
    assert!(error.to_string().contains("minute"), "{error}");
    assert!(Schedule::parse("*/0 * * * *").is_err());
}
