//! Query-string parsing: total functions that turn user input into filters or a 400 message.

use std::time::{Duration, SystemTime};

use crate::store::{HistoryQuery, MetaFilter};
use crate::time::parse_time;

/// Largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 10_000;
/// `limit` when none is given (lists; the JSON-lines export has no default limit).
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// Parameters that may be given more than once (each adds a condition).
const REPEATABLE: &[&str] = &["meta"];

/// Decoded `name=value` pairs of a query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes a raw query string (`application/x-www-form-urlencoded`: `+` is a space,
    /// `%XX` a byte; the result must be UTF-8).
    ///
    /// `form_urlencoded` does the decoding. It never fails: a malformed `%`-escape stays as
    /// typed and bytes that are not UTF-8 become U+FFFD. A filter built from such a mangled
    /// value would quietly match the wrong operations, so that input is refused here first.
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, String> {
        let raw = raw.unwrap_or("");
        for part in raw.split('&') {
            check_encoding(part).map_err(|why| {
                let shown: String = part.chars().take(64).collect();
                format!("query parameter {shown:?}: {why}")
            })?;
        }
        let pairs = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .collect();
        Ok(Params { pairs })
    }

    /// Fails on a name not in `allowed` and on a name given twice (but for [`REPEATABLE`]).
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
            if !REPEATABLE.contains(&name.as_str())
                && self.pairs[..i].iter().any(|(n, _)| n == name)
            {
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

    /// Every non-empty value of `name`, in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// Every `%` starts an escape of two hex digits, and the decoded bytes are UTF-8.
fn check_encoding(part: &str) -> Result<(), &'static str> {
    let bytes = part.as_bytes();
    for (i, _) in part.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err("malformed %-escape: expected % and two hex digits");
        }
    }
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(drop)
        .map_err(|_| "not valid UTF-8 once %-decoded")
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
    /// Type, status, name, time and metadata filters; no limit.
    pub(crate) query: HistoryQuery,
    /// The limit, if one was given or defaulted.
    pub(crate) limit: Option<usize>,
    pub(crate) include: Include,
}

/// Parameters of `GET /api/operations`.
pub(crate) const OPERATIONS_PARAMS: &[&str] = &[
    "status", "type", "name", "since", "until", "limit", "include", "meta", "token",
];
/// Parameters of `GET /api/history` and `GET /api/history.jsonl`.
pub(crate) const HISTORY_PARAMS: &[&str] = &[
    "status", "type", "name", "since", "until", "limit", "meta", "token",
];

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
            query = query
                .outcome(s)
                .map_err(|e| format!("parameter status: {e}"))?;
        }
        if let Some(t) = params.get("type") {
            query = query.operation_type(t);
        }
        if let Some(n) = params.get("name") {
            query = query.name_contains(n);
        }
        for m in params.get_all("meta") {
            let filter: MetaFilter = m.parse().map_err(|e| format!("parameter meta: {e}"))?;
            query = query.meta(filter);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn decoding_follows_the_form_encoding() {
        // Escaped separators stay data; `+` is a space, `%2B` a plus; a bare name has an empty
        // value; empty pieces between `&`s are skipped.
        let p = Params::parse(Some("&name=a%26b%3Dc+d%2B&&flag&type=%E2%9C%93")).unwrap();
        assert_eq!(p.get("name"), Some("a&b=c d+"));
        assert_eq!(p.get("flag"), None);
        assert_eq!(p.get("type"), Some("\u{2713}"));
        assert_eq!(p.pairs.len(), 3);
        // A real U+FFFD is data, not a decoding failure.
        let p = Params::parse(Some("name=%EF%BF%BD\u{fffd}")).unwrap();
        assert_eq!(p.get("name"), Some("\u{fffd}\u{fffd}"));
        assert_eq!(Params::parse(None).unwrap().pairs.len(), 0);
    }

    #[test]
    fn malformed_input_is_refused_with_the_piece_named() {
        assert_eq!(
            Params::parse(Some("ok=1&name=%ZZ")).unwrap_err(),
            "query parameter \"name=%ZZ\": malformed %-escape: expected % and two hex digits"
        );
        assert_eq!(
            Params::parse(Some("name=%C3%28")).unwrap_err(),
            "query parameter \"name=%C3%28\": not valid UTF-8 once %-decoded"
        );
        let e = Params::parse(Some("%FF=1")).unwrap_err();
        assert!(e.contains("%FF=1") && e.contains("UTF-8"), "{e}");
        let e = Params::parse(Some("a=100%")).unwrap_err();
        assert!(e.contains("malformed"), "{e}");
    }

    /// The checks and their messages are part of the API (clients show them to people).
    #[test]
    fn unknown_and_repeated_parameters_are_400_messages() {
        let p = Params::parse(Some("limit=1&stauts=failed")).unwrap();
        assert_eq!(
            p.check(&["status", "limit"]).unwrap_err(),
            "unknown query parameter \"stauts\": expected one of status, limit"
        );
        assert_eq!(
            p.check(&[]).unwrap_err(),
            "unknown query parameter \"limit\": this endpoint takes none"
        );
        let p = Params::parse(Some("limit=1&limit=2")).unwrap();
        assert_eq!(
            p.check(&["limit"]).unwrap_err(),
            "query parameter \"limit\" is given more than once"
        );
        // A repeated name counts even when one of the values is empty.
        let p = Params::parse(Some("limit=&limit=2")).unwrap();
        assert!(p.check(&["limit"]).is_err());
        let long = format!("{}=1", "x".repeat(200));
        let e = Params::parse(Some(&long))
            .unwrap()
            .check(&["a"])
            .unwrap_err();
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn metadata_filters_repeat_and_explain_bad_syntax() {
        let p = Params::parse(Some("meta=block_id%3Dblock-002&meta=size>=100")).unwrap();
        let f = Filters::parse(&p, HISTORY_PARAMS, None).unwrap();
        let shown: Vec<String> = f.query.meta.iter().map(|m| m.to_string()).collect();
        assert_eq!(shown, ["meta.block_id=block-002", "meta.size>=100"]);
        let p = Params::parse(Some("meta=size>=lots")).unwrap();
        let e = Filters::parse(&p, HISTORY_PARAMS, None).unwrap_err();
        assert_eq!(
            e,
            "parameter meta: invalid metadata filter \"size>=lots\": expected a number after \
             >, >=, < or <= (e.g. size>=100)"
        );
        let p = Params::parse(Some("status=failed&status=completed")).unwrap();
        assert!(Filters::parse(&p, HISTORY_PARAMS, None).is_err());
    }

    #[test]
    fn status_takes_the_completed_with_failures_outcome() {
        let p = Params::parse(Some("status=completed_with_failures")).unwrap();
        let f = Filters::parse(&p, HISTORY_PARAMS, None).unwrap();
        assert_eq!(f.query.status, Some(crate::Status::Completed));
        assert_eq!(f.query.with_failures, Some(true));
        let p = Params::parse(Some("status=completed")).unwrap();
        let f = Filters::parse(&p, HISTORY_PARAMS, None).unwrap();
        assert_eq!(f.query.with_failures, None, "completed includes them");
        let p = Params::parse(Some("status=done")).unwrap();
        let e = Filters::parse(&p, HISTORY_PARAMS, None).unwrap_err();
        assert!(e.contains("completed_with_failures"), "{e}");
    }

    #[test]
    fn time_filters() {
        let p = Params::parse(Some("since=2026-01-01&until=2026-01-01T00:00:00.5Z")).unwrap();
        assert!(Filters::parse(&p, HISTORY_PARAMS, None).is_ok());
        let p = Params::parse(Some("since=2026-01-02&until=2026-01-01T23:59:59%2B00:00")).unwrap();
        let e = Filters::parse(&p, HISTORY_PARAMS, None).unwrap_err();
        assert_eq!(e, "parameters since and until: since is later than until");
        let p = Params::parse(Some("until=2026-01-01T00:00:00")).unwrap();
        let e = Filters::parse(&p, HISTORY_PARAMS, None).unwrap_err();
        assert!(
            e.starts_with("parameter until: ") && e.contains("UTC offset"),
            "{e}"
        );
    }
}
