//! Metadata filters: `block_id=block-002`, `size>=100`, matched against every retained node of
//! an operation's tree.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::model::{FieldValue, ParseError, ProgressLevel, ProgressState};

/// One condition on a metadata field: `KEY=VALUE`, `KEY>N`, `KEY>=N`, `KEY<N`, `KEY<=N`,
/// optionally written `meta.KEY...`.
///
/// An operation matches when **any retained node** of its tree (the root or a descendant; folded
/// children keep no metadata) has the field and its value passes:
///
/// * `=` compares numbers as numbers when both the field and the value are numeric
///   (`size=100` matches `100`, `100.0`), and everything else as text (`ok=true` matches a
///   boolean `true`, `block_id=block-002` the text `block-002`);
/// * `>`, `>=`, `<`, `<=` need a number after the operator; they compare numeric fields, and
///   text fields that read as a number; any other field does not match.
///
/// Several filters on one query must all match, each on any node.
///
/// ```
/// use tracing_progress::{HistoryQuery, MetaFilter};
/// let block: MetaFilter = "meta.block_id=block-002".parse().unwrap();
/// let big: MetaFilter = "size>=100".parse().unwrap();
/// let q = HistoryQuery::new().meta(block).meta(big);
/// assert!("size>=lots".parse::<MetaFilter>().is_err());
/// assert!("=x".parse::<MetaFilter>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetaFilter {
    key: Arc<str>,
    op: Op,
    /// The value as typed (for `=` on text, and display).
    text: Arc<str>,
    /// The value as a number, when it reads as one (always, for the ordered operators).
    number: Option<Number>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// Integers compare exactly (a `u64` above 2^53 included); anything else as `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
    Int(i128),
    Float(f64),
}

impl Number {
    fn parse(s: &str) -> Option<Number> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i128>() {
            return Some(Number::Int(i));
        }
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Number::Float)
    }

    fn of(v: &FieldValue) -> Option<Number> {
        match v {
            FieldValue::U64(u) => Some(Number::Int(i128::from(*u))),
            FieldValue::I64(i) => Some(Number::Int(i128::from(*i))),
            FieldValue::F64(f) => f.is_finite().then_some(Number::Float(*f)),
            FieldValue::Bool(_) | FieldValue::Str(_) => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    fn cmp(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

impl MetaFilter {
    /// The field name (without `meta.`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether one value passes the condition.
    pub fn matches_value(&self, value: &FieldValue) -> bool {
        if self.op == Op::Eq {
            return match (Number::of(value), self.number) {
                (Some(a), Some(b)) => a.cmp(b) == Some(Ordering::Equal),
                _ => match value {
                    FieldValue::Str(s) => **s == *self.text,
                    other => other.to_string() == *self.text,
                },
            };
        }
        let field = match value {
            FieldValue::Str(s) => Number::parse(s),
            other => Number::of(other),
        };
        let (Some(field), Some(wanted)) = (field, self.number) else {
            return false;
        };
        let Some(ord) = field.cmp(wanted) else {
            return false;
        };
        match self.op {
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Eq => ord == Ordering::Equal,
        }
    }

    /// Whether this node has the field with a passing value.
    pub fn matches_level(&self, level: &ProgressLevel) -> bool {
        level
            .metadata
            .get(&self.key)
            .is_some_and(|v| self.matches_value(v))
    }

    /// Whether any retained node of the operation passes.
    pub fn matches(&self, state: &ProgressState) -> bool {
        state.root.walk().any(|l| self.matches_level(l))
    }

    /// Text that an operation's compact JSON must contain to pass: `"key":"value"` for
    /// equality with text, `"key":` otherwise. A cheap pre-check (a history file's rows)
    /// before decoding; the exact check still follows.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn json_needle(&self) -> String {
        let key = serde_json::to_string(&*self.key).unwrap_or_default();
        // Only text fields can equal a value that reads as neither a number (NaN and inf
        // included: they display so) nor a boolean.
        let only_text =
            self.text.trim().parse::<f64>().is_err() && !matches!(&*self.text, "true" | "false");
        if self.op == Op::Eq && only_text {
            let value = serde_json::to_string(&*self.text).unwrap_or_default();
            format!("{key}:{value}")
        } else {
            format!("{key}:")
        }
    }
}

impl FromStr for MetaFilter {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |expected| Err(ParseError::new("metadata filter", s, expected));
        let body = s.trim();
        let body = body.strip_prefix("meta.").unwrap_or(body);
        let Some(at) = body.find(['=', '<', '>', '!']) else {
            return bad("KEY=VALUE, KEY>N, KEY>=N, KEY<N or KEY<=N (e.g. block_id=block-002)");
        };
        let key = body[..at].trim();
        if key.is_empty() {
            return bad("a field name before the operator (e.g. size>=100)");
        }
        let rest = &body[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix("==") {
            (Op::Eq, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Eq, v)
        } else {
            return bad("one of =, >, >=, <, <= after the field name (there is no !=)");
        };
        let value = value.trim();
        let number = Number::parse(value);
        if op != Op::Eq && number.is_none() {
            return bad("a number after >, >=, < or <= (e.g. size>=100)");
        }
        Ok(MetaFilter {
            key: key.into(),
            op,
            text: value.into(),
            number,
        })
    }
}

impl fmt::Display for MetaFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "meta.{}{}{}", self.key, self.op.as_str(), self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> MetaFilter {
        s.parse().unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(f("meta.block_id=block-002").key(), "block_id");
        assert_eq!(f(" size >= 100 ").to_string(), "meta.size>=100");
        assert_eq!(f("a==b").to_string(), "meta.a=b");
        assert_eq!(f("a=").to_string(), "meta.a=");
        for bad in [
            "", "size", "=1", "meta.=1", "a!=1", "a>x", "a<=", "a>NaN", "a>inf",
        ] {
            let e = bad.parse::<MetaFilter>().unwrap_err().to_string();
            assert!(e.starts_with("invalid metadata filter"), "{bad}: {e}");
        }
        let e = "size>=lots".parse::<MetaFilter>().unwrap_err().to_string();
        assert!(e.contains("a number after"), "{e}");
    }

    #[test]
    fn json_needles_are_in_the_json_of_a_match() {
        assert_eq!(
            f("block_id=block-002").json_needle(),
            r#""block_id":"block-002""#
        );
        assert_eq!(f("a\"b=x\"y").json_needle(), r#""a\"b":"x\"y""#);
        assert_eq!(f("size>=100").json_needle(), r#""size":"#);
        assert_eq!(f("size=100").json_needle(), r#""size":"#);
        assert_eq!(f("ok=true").json_needle(), r#""ok":"#);
        assert_eq!(f("r=NaN").json_needle(), r#""r":"#);
        let mut m = crate::model::Metadata::default();
        m.insert("a\"b", FieldValue::from("x\"y"));
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(&f("a\"b=x\"y").json_needle()), "{json}");
    }

    #[test]
    fn values() {
        let v = |x: FieldValue, s: &str| f(s).matches_value(&x);
        assert!(v(FieldValue::from(100u64), "n=100"));
        assert!(v(FieldValue::from(100.0), "n=100"));
        assert!(v(FieldValue::from(-3i64), "n=-3.0"));
        assert!(!v(FieldValue::from(100u64), "n=100x"));
        assert!(v(FieldValue::from("block-002"), "n=block-002"));
        assert!(!v(FieldValue::from("block-002"), "n=block-02"));
        // Text compares as text for `=` ("002" is not "2"), as a number for the ordered ones.
        assert!(!v(FieldValue::from("002"), "n=2"));
        assert!(v(FieldValue::from("002"), "n>1"));
        assert!(v(FieldValue::from(true), "n=true"));
        assert!(!v(FieldValue::from(true), "n>0"));
        assert!(!v(FieldValue::from("abc"), "n<5"));
        assert!(!v(FieldValue::from(f64::NAN), "n<5"));
        assert!(v(FieldValue::from(100u64), "n>=100"));
        assert!(!v(FieldValue::from(100u64), "n>100"));
        assert!(v(FieldValue::from(99.5), "n<100"));
        assert!(v(FieldValue::from(100u64), "n<=100"));
        // Exact integers beyond f64's 2^53.
        assert!(v(FieldValue::from(u64::MAX), "n>18446744073709551614"));
        assert!(!v(FieldValue::from(u64::MAX - 1), "n=18446744073709551615"));
    }
}
