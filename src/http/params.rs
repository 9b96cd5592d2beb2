//! Query-string parsing: total functions that turn user input into filters or a 400 message.

use std::time::{Duration, SystemTime};

use crate::model::Status;
use crate::store::HistoryQuery;

/// Largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 10_000;
/// `limit` when none is given (lists; the JSON-lines export has no default limit).
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// Decoded `name=value` pairs of a query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes a raw query string (`application/x-www-form-urlencoded`: `+` is a space,
    /// `%XX` a byte; the result must be UTF-8).
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode(name).map_err(|why| format!("query parameter name: {why}"))?;
            let value =
                decode(value).map_err(|why| format!("value of query parameter {name:?}: {why}"))?;
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    /// Fails on a name not in `allowed` and on a name given twice.
    pub(crate) fn check(&self, allowed: &[&str]) -> Result<(), String> {
        for (i, (name, _)) in self.pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let name: String = name.chars().take(64).collect();
                return Err(if allowed.is_empty() {
                    format!("unknown query parameter {name:?}: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter {name:?}: expected one of {}",
                        allowed.join(", ")
                    )
                });
            }
            if self.pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("query parameter {name:?} is given more than once"));
            }
        }
        Ok(())
    }

    /// The value of `name`; an empty value counts as absent (what an HTML form sends for an
    /// empty field).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

fn decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                let hi = hex_digit(hex[0]).ok_or("invalid %-escape")?;
                let lo = hex_digit(hex[1]).ok_or("invalid %-escape")?;
                out.push((hi << 4) | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8")
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Which operations `GET /api/operations` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Include {
    Active,
    History,
    All,
}

/// The filters shared by the list endpoints.
#[derive(Debug)]
pub(crate) struct Filters {
    /// Type, status, name and time filters; no limit.
    pub(crate) query: HistoryQuery,
    /// The limit, if one was given or defaulted.
    pub(crate) limit: Option<usize>,
    pub(crate) include: Include,
}

/// Parameters of `GET /api/operations`.
pub(crate) const OPERATIONS_PARAMS: &[&str] = &[
    "status", "type", "name", "since", "until", "limit", "include", "token",
];
/// Parameters of `GET /api/history` and `GET /api/history.jsonl`.
pub(crate) const HISTORY_PARAMS: &[&str] =
    &["status", "type", "name", "since", "until", "limit", "token"];

impl Filters {
    /// Reads the filters; `default_limit` applies when `limit` is absent.
    pub(crate) fn parse(
        params: &Params,
        allowed: &[&str],
        default_limit: Option<usize>,
    ) -> Result<Self, String> {
        params.check(allowed)?;
        let mut query = HistoryQuery::new();
        if let Some(s) = params.get("status") {
            let status: Status = s.parse().map_err(|e| format!("parameter status: {e}"))?;
            query = query.status(status);
        }
        if let Some(t) = params.get("type") {
            query = query.operation_type(t);
        }
        if let Some(n) = params.get("name") {
            query = query.name_contains(n);
        }
        let since = params
            .get("since")
            .map(|v| parse_time(v).map_err(|e| format!("parameter since: {e}")))
            .transpose()?;
        let until = params
            .get("until")
            .map(|v| parse_time(v).map_err(|e| format!("parameter until: {e}")))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err("parameters since and until: since is later than until".into());
        }
        if let Some(s) = since {
            query = query.since(SystemTime::UNIX_EPOCH + Duration::from_micros(s));
        }
        if let Some(u) = until {
            query = query.until(SystemTime::UNIX_EPOCH + Duration::from_micros(u));
        }
        let limit = match params.get("limit") {
            Some(v) => Some(parse_limit(v)?),
            None => default_limit,
        };
        let include = match params.get("include") {
            None | Some("active") => Include::Active,
            Some("history") => Include::History,
            Some("all") => Include::All,
            Some(other) => {
                let other: String = other.chars().take(64).collect();
                return Err(format!(
                    "parameter include: {other:?} is not one of active, history, all"
                ));
            }
        };
        Ok(Filters {
            query,
            limit,
            include,
        })
    }
}

fn parse_limit(v: &str) -> Result<usize, String> {
    let shown: String = v.chars().take(64).collect();
    match v.parse::<u64>() {
        Ok(n) if n <= MAX_LIMIT as u64 => Ok(n as usize),
        Ok(_) => Err(format!(
            "parameter limit: {shown} is more than the maximum {MAX_LIMIT}"
        )),
        Err(_) => Err(format!(
            "parameter limit: {shown:?} is not a non-negative integer"
        )),
    }
}

/// Parses a time given as unix milliseconds (`1767225600000`), an RFC 3339 time
/// (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`) or a date (`2026-01-01`, midnight
/// UTC); returns µs since the Unix epoch.
pub(crate) fn parse_time(v: &str) -> Result<u64, String> {
    let shown: String = v.chars().take(64).collect();
    let expected = "expected unix milliseconds (e.g. 1767225600000) or an RFC 3339 time \
                    (e.g. 2026-01-01T00:00:00Z)";
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .ok()
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| format!("{shown:?} is too large for unix milliseconds"));
    }
    match rfc3339_us(v) {
        Ok(us) => Ok(us),
        Err(Some(why)) => Err(format!("{shown:?}: {why}")),
        Err(None) => Err(format!("{shown:?} is not a time: {expected}")),
    }
}

/// `Err(None)`: not the shape of a date; `Err(Some(why))`: the shape, but a bad value.
fn rfc3339_us(v: &str) -> Result<u64, Option<&'static str>> {
    let b = v.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, Option<&'static str>> {
        let digits = b.get(range).ok_or(None)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(None);
        }
        Ok(digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(None);
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&month) {
        return Err(Some("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(Some("day out of range"));
    }
    let days = days_from_civil(year, month, day);
    let (mut secs, mut micros) = (0i64, 0i64);
    let mut offset = 0i64;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return Err(None);
        }
        let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || m > 59 || s > 60 {
            return Err(Some("time of day out of range"));
        }
        secs = h * 3600 + m * 60 + s;
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(Some("empty fraction of a second"));
            }
            let frac = &b[start..i.min(start + 6)];
            micros = frac.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
                * 10i64.pow(6 - frac.len() as u32);
        }
        match b.get(i) {
            Some(b'Z' | b'z') if b.len() == i + 1 => {}
            Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(Some("UTC offset out of range"));
                }
                offset = (oh * 3600 + om * 60) * if *sign == b'+' { 1 } else { -1 };
            }
            None => return Err(Some("missing UTC offset (add Z or +HH:MM)")),
            _ => return Err(None),
        }
    }
    let total = (days * 86_400 + secs - offset) * 1_000_000 + micros;
    u64::try_from(total).map_err(|_| Some("before 1970-01-01T00:00:00Z"))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
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
        assert_eq!(
            parse_time("2025-12-31t23:00:00.123456789-01:00"),
            Ok(1_767_225_600_123_456)
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000_000)
        );
        for bad in [
            "",
            "x",
            "2026-13-01",
            "2025-02-29",
            "2026-01-01T00:00:00",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "1969-12-31T23:59:59Z",
            "99999999999999999999",
            "２０２６-01-01",
            "-1",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn query_strings() {
        let p = Params::parse(Some("name=a+b%20c&status=&limit=5")).unwrap();
        assert_eq!(p.get("name"), Some("a b c"));
        assert_eq!(p.get("status"), None);
        assert!(p.check(&["name", "status", "limit"]).is_ok());
        assert!(p.check(&["name"]).unwrap_err().contains("\"status\""));
        assert!(Params::parse(Some("a=%zz")).is_err());
        assert!(Params::parse(Some("a=%e2%82")).is_err());
        assert!(Params::parse(Some("a=%4")).is_err());
        let twice = Params::parse(Some("a=1&a=2")).unwrap();
        assert!(twice.check(&["a"]).unwrap_err().contains("more than once"));
    }
}
