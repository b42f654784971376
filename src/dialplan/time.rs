//! Time sets: weekdays, hours and dates in a time zone (`[timeset.NAME]`). Pure: the
//! instant is passed in; the zone's rules were read at load.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A named set of moments: all of the given conditions hold, and no `except` date.
#[derive(Debug, Clone)]
pub struct TimeSet {
    /// The zone the set is written in (`Europe/Berlin`): weekdays, hours and dates are
    /// local to it, so DST changes move nothing.
    pub zone: TimeZone,
    /// The zone's name as written.
    pub zone_name: String,
    /// Monday first; all true when the set names no weekdays.
    pub weekdays: [bool; 7],
    /// Minutes of the day, start inclusive, end exclusive; a start after the end wraps past
    /// midnight. Empty = all day.
    pub hours: Vec<(u16, u16)>,
    /// Empty = every date.
    pub dates: Vec<DateRange>,
    /// Dates taken out (holidays).
    pub except: Vec<DateRange>,
}

/// A date every year (`12-24`) or a calendar date (`2026-05-01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Day {
    Yearly { month: i8, day: i8 },
    Once(Date),
}

/// From `from` to `to`, both included; a yearly range may wrap the new year
/// (`12-31..01-01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub from: Day,
    pub to: Day,
}

impl DateRange {
    pub fn contains(&self, date: Date) -> bool {
        match (self.from, self.to) {
            (Day::Once(a), Day::Once(b)) => a <= date && date <= b,
            (Day::Yearly { month: m1, day: d1 }, Day::Yearly { month: m2, day: d2 }) => {
                let x = (date.month(), date.day());
                let (a, b) = ((m1, d1), (m2, d2));
                if a <= b {
                    a <= x && x <= b
                } else {
                    x >= a || x <= b
                }
            }
            // The parser refuses mixed ranges.
            _ => false,
        }
    }
}

impl TimeSet {
    /// Whether `now` falls in the set, read on the set's zone's wall clock.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.zone.clone());
        let date = local.date();
        let weekday = local.weekday().to_monday_zero_offset() as usize;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.weekdays[weekday]
            && (self.hours.is_empty() || self.hours.iter().any(|&r| in_hours(r, minute)))
            && (self.dates.is_empty() || self.dates.iter().any(|r| r.contains(date)))
            && !self.except.iter().any(|r| r.contains(date))
    }
}

fn in_hours((start, end): (u16, u16), minute: u16) -> bool {
    if start < end {
        start <= minute && minute < end
    } else {
        minute >= start || minute < end
    }
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

fn weekday(name: &str) -> Option<usize> {
    let lower = name.trim().to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .position(|(short, day)| lower == *short || lower == format!("{day:?}").to_lowercase())
}

/// Adds `mon`, `sat-sun` or `fri-mon` (wraps) to `days`.
pub fn add_weekdays(days: &mut [bool; 7], text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "bad weekday {text:?}: use mon, tue, wed, thu, fri, sat, sun or a range like \"mon-fri\""
        )
    };
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (weekday(a).ok_or_else(bad)?, weekday(b).ok_or_else(bad)?),
        None => {
            let d = weekday(text).ok_or_else(bad)?;
            (d, d)
        }
    };
    let mut d = a;
    loop {
        days[d] = true;
        if d == b {
            return Ok(());
        }
        d = (d + 1) % 7;
    }
}

fn clock(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

/// `08:30-12:00` (end excluded; `22:00-06:00` wraps midnight; `24:00` ends the day).
pub fn hours(text: &str) -> Result<(u16, u16), String> {
    let bad = |why: &str| format!("bad hours {text:?}: {why}");
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| bad("write a range like \"08:30-17:00\""))?;
    let start = clock(a).ok_or_else(|| bad("times are HH:MM, 00:00 to 24:00"))?;
    let end = clock(b).ok_or_else(|| bad("times are HH:MM, 00:00 to 24:00"))?;
    if start == 24 * 60 {
        return Err(bad("a range cannot start at 24:00"));
    }
    if start == end {
        return Err(bad("the range is empty (start = end)"));
    }
    Ok((start, end))
}

fn day(text: &str) -> Option<Day> {
    let parts: Vec<&str> = text.trim().split('-').collect();
    let num = |s: &str, len: usize| -> Option<i16> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match parts[..] {
        [m, d] => {
            let (m, d) = (num(m, 2)? as i8, num(d, 2)? as i8);
            // A leap year, so 02-29 is a date.
            Date::new(2000, m, d).ok()?;
            Some(Day::Yearly { month: m, day: d })
        }
        [y, m, d] => {
            let date = Date::new(num(y, 4)?, num(m, 2)? as i8, num(d, 2)? as i8).ok()?;
            Some(Day::Once(date))
        }
        _ => None,
    }
}

/// `12-24` (every year), `2026-05-01`, or a range of either kind: `12-24..12-26`.
pub fn date_range(text: &str) -> Result<DateRange, String> {
    let bad = || {
        format!(
            "bad date {text:?}: use MM-DD (every year), YYYY-MM-DD, or a range like \
             \"12-24..12-26\""
        )
    };
    let (from, to) = match text.split_once("..") {
        Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
        None => {
            let d = day(text).ok_or_else(bad)?;
            (d, d)
        }
    };
    match (from, to) {
        (Day::Once(a), Day::Once(b)) if a > b => {
            Err(format!("bad date range {text:?}: it ends before it starts"))
        }
        (Day::Once(_), Day::Yearly { .. }) | (Day::Yearly { .. }, Day::Once(_)) => Err(format!(
            "bad date range {text:?}: both ends need a year, or neither"
        )),
        _ => Ok(DateRange { from, to }),
    }
}

/// The zone named `name`, from the system's time zone database.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    jiff::tz::db().get(name).map_err(|_| {
        format!(
            "unknown time zone {name:?}: use a name of the tz database like \"Europe/Berlin\" \
             or \"America/New_York\" (or \"UTC\")"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn office() -> TimeSet {
        let mut weekdays = [false; 7];
        add_weekdays(&mut weekdays, "mon-fri").unwrap();
        TimeSet {
            zone: zone("Europe/Berlin").unwrap(),
            zone_name: "Europe/Berlin".into(),
            weekdays,
            hours: vec![hours("08:30-12:00").unwrap(), hours("13:00-17:30").unwrap()],
            dates: vec![],
            except: vec![
                date_range("12-24..12-26").unwrap(),
                date_range("2026-05-01").unwrap(),
            ],
        }
    }

    #[test]
    fn hours_in_the_zone_across_a_dst_change() {
        let o = office();
        // Friday 2026-03-27, Berlin is UTC+1: 08:30 local is 07:30Z.
        assert!(!o.contains(at("2026-03-27T07:29:59Z")));
        assert!(o.contains(at("2026-03-27T07:30:00Z")));
        // Sunday 2026-03-29 DST starts. Monday 2026-03-30 Berlin is UTC+2: 08:30 is 06:30Z.
        assert!(o.contains(at("2026-03-30T06:30:00Z")));
        assert!(!o.contains(at("2026-03-30T06:29:00Z")));
        // 07:30Z that Monday is 09:30 local: in; 15:30Z is 17:30 local: out (end excluded).
        assert!(o.contains(at("2026-03-30T07:30:00Z")));
        assert!(!o.contains(at("2026-03-30T15:30:00Z")));
        assert!(o.contains(at("2026-03-30T15:29:00Z")));
        // Lunch break.
        assert!(!o.contains(at("2026-03-30T10:30:00Z")));
        // And back in autumn: Monday 2026-10-26 is UTC+1 again.
        assert!(!o.contains(at("2026-10-26T07:00:00Z")));
        assert!(o.contains(at("2026-10-26T07:30:00Z")));
    }

    #[test]
    fn weekdays_and_dates() {
        let o = office();
        // Saturday 2026-03-28, 10:00 local.
        assert!(!o.contains(at("2026-03-28T09:00:00Z")));
        // Thursday 2026-12-24 (yearly holiday) and Friday 2026-05-01 (one-off).
        assert!(!o.contains(at("2026-12-24T09:00:00Z")));
        assert!(!o.contains(at("2026-05-01T08:00:00Z")));
        // Friday 2027-05-01 is a Saturday anyway; Monday 2027-05-03 is open.
        assert!(o.contains(at("2027-05-03T08:00:00Z")));
        // A weekday range that wraps.
        let mut days = [false; 7];
        add_weekdays(&mut days, "fri-mon").unwrap();
        assert_eq!(days, [true, false, false, false, true, true, true]);
        let mut days = [false; 7];
        add_weekdays(&mut days, "Wednesday").unwrap();
        assert_eq!(days, [false, false, true, false, false, false, false]);
    }

    #[test]
    fn date_ranges_wrap_the_year() {
        let r = date_range("12-31..01-02").unwrap();
        assert!(r.contains(Date::new(2026, 12, 31).unwrap()));
        assert!(r.contains(Date::new(2027, 1, 2).unwrap()));
        assert!(!r.contains(Date::new(2027, 1, 3).unwrap()));
        let once = date_range("2026-05-01..2026-05-03").unwrap();
        assert!(once.contains(Date::new(2026, 5, 2).unwrap()));
        assert!(!once.contains(Date::new(2027, 5, 2).unwrap()));
    }

    #[test]
    fn night_hours_wrap_midnight() {
        let night = hours("22:00-06:00").unwrap();
        assert!(in_hours(night, 23 * 60) && in_hours(night, 60) && !in_hours(night, 12 * 60));
        let evening = hours("18:00-24:00").unwrap();
        assert_eq!(evening, (18 * 60, 24 * 60));
        assert!(in_hours(evening, 23 * 60 + 59) && !in_hours(evening, 0));
    }

    #[test]
    fn bad_values_say_why() {
        assert!(hours("8-17").unwrap_err().contains("HH:MM"));
        assert!(hours("08:00").unwrap_err().contains("range"));
        assert!(hours("09:00-09:00").unwrap_err().contains("empty"));
        assert!(hours("25:00-26:00").unwrap_err().contains("HH:MM"));
        assert!(add_weekdays(&mut [false; 7], "moon").is_err());
        assert!(date_range("02-30").is_err());
        assert!(date_range("2026-13-01").is_err());
        assert!(date_range("2026-05-03..2026-05-01")
            .unwrap_err()
            .contains("ends before"));
        assert!(date_range("2026-05-03..05-04")
            .unwrap_err()
            .contains("year"));
        assert!(date_range("02-29").is_ok());
        assert!(zone("Mars/Olympus")
            .unwrap_err()
            .contains("unknown time zone"));
        assert!(zone("UTC").is_ok());
    }
}
