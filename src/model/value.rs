//! Field values and the ordered metadata map kept on every node.

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One recorded field value, kept with the type it was recorded with.
///
/// In JSON it is the plain value (`true`, `42`, `-1`, `0.5`, `"text"`).
///
/// ```
/// use tracing_progress::FieldValue;
/// assert_eq!(FieldValue::from(3u64).to_string(), "3");
/// assert_eq!(serde_json::to_string(&FieldValue::from("a")).unwrap(), "\"a\"");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
    /// A floating point number.
    F64(f64),
    /// Text (already sanitized and length-limited by the layer).
    Str(Arc<str>),
}

impl FieldValue {
    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            FieldValue::U64(v) => Some(v),
            FieldValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(v) => write!(f, "{v}"),
            FieldValue::U64(v) => write!(f, "{v}"),
            FieldValue::I64(v) => write!(f, "{v}"),
            FieldValue::F64(v) => write!(f, "{v}"),
            FieldValue::Str(v) => f.write_str(v),
        }
    }
}

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}
impl From<u64> for FieldValue {
    fn from(v: u64) -> Self {
        FieldValue::U64(v)
    }
}
impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::I64(v)
    }
}
impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::F64(v)
    }
}
impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(Arc::from(v))
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(Arc::from(v))
    }
}

/// Named values in the order they were first recorded; a later value for the same name
/// replaces the earlier one in place. In JSON it is an object.
///
/// ```
/// use tracing_progress::Metadata;
/// let mut m = Metadata::default();
/// m.insert("block_id", "block-001".into());
/// m.insert("block_id", "block-002".into());
/// assert_eq!(m.len(), 1);
/// assert_eq!(m.get("block_id").and_then(|v| v.as_str()), Some("block-002"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Vec<(Arc<str>, FieldValue)>);

impl Metadata {
    /// The value recorded under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v)
    }

    /// Sets `name` to `value`, replacing an earlier value in place.
    pub fn insert(&mut self, name: impl Into<Arc<str>> + AsRef<str>, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| **k == *name.as_ref()) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((name.into(), value)),
        }
    }

    /// Iterates over `(name, value)` in first-recorded order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetaVisitor;
        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of field values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Metadata, A::Error> {
                let mut out = Metadata::default();
                while let Some((k, v)) = access.next_entry::<String, FieldValue>()? {
                    out.insert(k.as_str(), v);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(MetaVisitor)
    }
}
