//! Time in one place: wall-clock times and durations as text, and (feature `http`) times
//! given by users parsed back.
//!
//! Every time in the model is microseconds: since the Unix epoch for instants, elapsed for
//! durations. Everything that turns those into text, or text into them, lives here, so the
//! views, the `Display` dump, the HTTP API and the CLI all read and write times the same way.
//!
//! * [`format_timestamp`] writes an instant as UTC `YYYY-MM-DD HH:MM:SS`. The calendar is
//!   [`civil_from_days`], twenty lines of integer arithmetic: the default build formats times
//!   without a date library (and without a time-zone database), and the output is the same on
//!   every platform, whatever the local time zone.
//! * [`duration`] is the one duration formatter, in three [`DurationStyle`]s;
//!   [`format_duration`] is its public face for the `Sized` style.
//! * [`parse_time`] (feature `http`) reads the `since`/`until` query parameters with
//!   `jiff`, which is only compiled in with that feature.

const US_PER_S: u64 = 1_000_000;
const S_PER_DAY: u64 = 86_400;

// === instants ===

/// A wall-clock time in microseconds since the Unix epoch as UTC `YYYY-MM-DD HH:MM:SS`.
///
/// Sub-second digits are cut, not rounded. The calendar is the proleptic Gregorian one.
///
/// ```
/// use tracing_progress::view::format_timestamp;
/// assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
/// assert_eq!(format_timestamp(1_705_314_600_000_000), "2024-01-15 10:30:00");
/// assert_eq!(format_timestamp(1_709_251_199_999_999), "2024-02-29 23:59:59");
/// ```
pub fn format_timestamp(at_us: u64) -> String {
    let secs = at_us / US_PER_S;
    let (year, month, day) = civil_from_days(secs / S_PER_DAY);
    let s = secs % S_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day number counted from 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`: shift the epoch to 0000-03-01 so the leap day ends each
/// year, split into 400-year eras (146,097 days), then into years and a March-based month.
/// Kept by hand (rather than taken from `jiff`) so that the default build, whose views and
/// `Display` need it, has no date library; tests compare it with a day-by-day calendar and,
/// with feature `http`, with `jiff`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March = 0 .. February = 11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

// === durations ===

/// How [`duration`] writes a duration. All styles cut (never round), so a running clock never
/// shows a second that has not passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DurationStyle {
    /// Sized to the magnitude: `850ms` under a second, `3.2s` under a minute (tenths), then
    /// the [`Clock`](Self::Clock) form. For how long finished work took.
    Sized,
    /// Always `H:MM:SS`, hours unbounded: `0:02:15`, `26:03:04`. For elapsed and remaining
    /// times, which tick and should keep their width.
    Clock,
    /// `M:SS` under an hour (`0:31`, `12:05`), then `H:MM:SS`. For estimate ranges, where two
    /// times share a line.
    ShortClock,
}

/// A duration in microseconds as text, in `style`: the one duration formatter of the crate.
pub(crate) fn duration(us: u64, style: DurationStyle) -> String {
    let s = us / US_PER_S;
    match style {
        DurationStyle::Sized if us < US_PER_S => format!("{}ms", us / 1_000),
        DurationStyle::Sized if s < 60 => {
            let tenths = us / 100_000;
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
        DurationStyle::ShortClock if s < 3600 => format!("{}:{:02}", s / 60, s % 60),
        DurationStyle::Sized | DurationStyle::Clock | DurationStyle::ShortClock => {
            format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        }
    }
}

/// A duration in microseconds sized to its magnitude: `850ms` under a second, `3.2s` under a
/// minute (tenths cut, not rounded), otherwise a clock, `H:MM:SS` (hours unbounded).
///
/// This is how the views write the duration of finished levels, and how the `tracing-progress`
/// CLI writes durations.
///
/// ```
/// use tracing_progress::view::format_duration;
/// assert_eq!(format_duration(850_400), "850ms");
/// assert_eq!(format_duration(3_290_000), "3.2s");
/// assert_eq!(format_duration(60_000_000), "0:01:00");
/// assert_eq!(format_duration(93_784_900_000), "26:03:04");
/// ```
pub fn format_duration(us: u64) -> String {
    duration(us, DurationStyle::Sized)
}

// === parsing ===

/// Parses a time given as unix milliseconds (`1767225600000`), an RFC 3339 time
/// (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`; `jiff` also takes the ISO 8601
/// variants it documents, such as `2026-01-01 00:00Z` or `+0100`) or a date (`2026-01-01`,
/// midnight UTC); returns µs since the Unix epoch. The error says what was wrong and what is
/// expected, for a 400 answer.
#[cfg(feature = "http")]
pub(crate) fn parse_time(v: &str) -> Result<u64, String> {
    use jiff::Timestamp;
    use jiff::civil::{Date, DateTime};
    use jiff::tz::Offset;

    let shown: String = v.chars().take(64).collect();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .ok()
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| format!("{shown:?} is too large for unix milliseconds"));
    }
    let timestamp = match v.parse::<Timestamp>() {
        Ok(t) => t,
        // Only the exact `YYYY-MM-DD` shape counts as a date: a date-time without an offset is
        // ambiguous and refused below.
        Err(e) => match Date::strptime("%Y-%m-%d", v).map(|d| Offset::UTC.to_timestamp(d.into())) {
            Ok(Ok(midnight)) => midnight,
            Ok(Err(e)) => return Err(format!("{shown:?}: {e}")),
            Err(_) if v.parse::<DateTime>().is_ok() => {
                return Err(format!(
                    "{shown:?} has no UTC offset: add Z or +HH:MM (e.g. 2026-01-01T00:00:00Z)"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{shown:?} is not a time ({e}): expected unix milliseconds (e.g. \
                     1767225600000), an RFC 3339 time (e.g. 2026-01-01T00:00:00Z) or a date \
                     (e.g. 2026-01-01)"
                ));
            }
        },
    };
    u64::try_from(timestamp.as_microsecond())
        .map_err(|_| format!("{shown:?} is before 1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the calendar one day at a time from 1970 and compares every day.
    #[test]
    fn civil_from_days_matches_a_day_by_day_calendar() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(600 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn the_largest_time_does_not_overflow() {
        assert_eq!(format_timestamp(u64::MAX), "586524-01-19 08:01:49");
    }

    #[test]
    fn timestamps_cut_sub_seconds() {
        assert_eq!(format_timestamp(999_999), "1970-01-01 00:00:00");
        assert_eq!(format_timestamp(1_000_000), "1970-01-01 00:00:01");
        assert_eq!(format_timestamp(951_782_400_000_000), "2000-02-29 00:00:00");
    }

    /// Derived by hand: 3_290_000 µs is 32 whole tenths, 3.2 s; 93_784.9 s is 26 h
    /// (93_600 s), 3 min (180 s) and 4.9 s, cut to 4.
    #[test]
    fn durations_in_every_style() {
        use DurationStyle::{Clock, ShortClock, Sized};
        let cases = [
            (0, "0ms", "0:00:00", "0:00"),
            (850_400, "850ms", "0:00:00", "0:00"),
            (999_999, "999ms", "0:00:00", "0:00"),
            (1_000_000, "1.0s", "0:00:01", "0:01"),
            (3_290_000, "3.2s", "0:00:03", "0:03"),
            (59_999_999, "59.9s", "0:00:59", "0:59"),
            (60_000_000, "0:01:00", "0:01:00", "1:00"),
            (135_000_000, "0:02:15", "0:02:15", "2:15"),
            (930_000_000, "0:15:30", "0:15:30", "15:30"),
            (3_599_999_999, "0:59:59", "0:59:59", "59:59"),
            (3_600_000_000, "1:00:00", "1:00:00", "1:00:00"),
            (3_723_999_999, "1:02:03", "1:02:03", "1:02:03"),
            (93_784_900_000, "26:03:04", "26:03:04", "26:03:04"),
            (360_000_000_000, "100:00:00", "100:00:00", "100:00:00"),
        ];
        for (us, sized, clock, short) in cases {
            assert_eq!(duration(us, Sized), sized, "{us} sized");
            assert_eq!(duration(us, Clock), clock, "{us} clock");
            assert_eq!(duration(us, ShortClock), short, "{us} short clock");
        }
        assert_eq!(format_duration(3_290_000), duration(3_290_000, Sized));
        // No overflow at the top.
        assert_eq!(duration(u64::MAX, Clock), "5124095576:01:49");
    }

    /// The hand-written calendar against jiff's, at 20,000 instants spread evenly (by a fixed
    /// xorshift sequence) over jiff's range (to the end of 9999), plus the edges of days, months
    /// and leap years.
    #[cfg(feature = "http")]
    #[test]
    fn the_calendar_agrees_with_jiff() {
        let jiff = |us: u64| {
            let us = i64::try_from(us).expect("in jiff's range");
            let ts = jiff::Timestamp::from_microsecond(us).expect("in jiff's range");
            ts.strftime("%Y-%m-%d %H:%M:%S").to_string()
        };
        // 9999-12-30T22:00:00Z: jiff's last instant (it keeps a day's room for UTC offsets).
        let max_us = 253_402_207_200_000_000u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let us = x % (max_us + 1);
            assert_eq!(format_timestamp(us), jiff(us), "{us} µs");
        }
        for edge_us in [
            0,
            951_782_400_000_000,   // 2000-02-29
            951_868_800_000_000,   // 2000-03-01
            4_107_456_000_000_000, // 2100-02-28
            4_107_542_400_000_000, // 2100-03-01
            1_709_251_200_000_000, // 2024-03-01
            1_735_689_600_000_000, // 2025-01-01
            max_us,
        ] {
            for us in [
                edge_us.saturating_sub(1),
                edge_us,
                (edge_us + 1).min(max_us),
            ] {
                assert_eq!(format_timestamp(us), jiff(us), "{us} µs");
            }
        }
    }

    #[cfg(feature = "http")]
    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1767225600000"), Ok(1_767_225_600_000_000));
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600_000_000)
        );
        assert_eq!(parse_time("2026-01-01"), Ok(1_767_225_600_000_000));
        assert_eq!(
            parse_time("2026-01-01T01:00:00.5+01:00"),
            Ok(1_767_225_600_500_000)
        );
        // Lower-case `t`, nanoseconds (cut to µs), a negative offset.
        assert_eq!(
            parse_time("2025-12-31t23:00:00.123456789-01:00"),
            Ok(1_767_225_600_123_456)
        );
        assert_eq!(
            parse_time("2026-01-01 00:00:00Z"),
            Ok(1_767_225_600_000_000)
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000_000)
        );
        // ISO 8601 forms jiff accepts beyond RFC 3339.
        assert_eq!(
            parse_time("2026-01-01T01:00:00+0100"),
            Ok(1_767_225_600_000_000)
        );
        assert_eq!(parse_time("2026-01-01T00:00Z"), Ok(1_767_225_600_000_000));
        // A leap second is clamped to :59.
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z"),
            Ok(1_483_228_799_000_000)
        );
        for bad in [
            "",
            "x",
            "yesterday",
            "2026-13-01",
            "2025-02-29",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+01:00:00:00",
            "1969-12-31T23:59:59Z",
            "1969-12-31",
            "0000-01-01",
            "99999999999999999999",
            "２０２６-01-01",
            "-1",
            "9999-12-31T23:59:60.999999999Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} should not parse");
        }
        let no_offset = parse_time("2026-01-01T00:00:00").unwrap_err();
        assert!(no_offset.contains("no UTC offset"), "{no_offset}");
        let not_a_time = parse_time("noon").unwrap_err();
        assert!(
            not_a_time.contains("RFC 3339") && not_a_time.contains("milliseconds"),
            "{not_a_time}"
        );
        let before = parse_time("1969-12-31T23:59:59Z").unwrap_err();
        assert!(before.contains("before 1970"), "{before}");
        let bad_day = parse_time("2025-02-29").unwrap_err();
        assert!(bad_day.contains("day"), "{bad_day}");
    }
}
