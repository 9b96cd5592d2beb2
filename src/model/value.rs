//! Field values and the ordered metadata map kept on every node.

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One recorded field value, kept with the type it was recorded with.
///
/// In JSON it is the plain value (`true`, `42`, `-1`, `0.5`, `"text"`), except for the floats
/// JSON has no number for: NaN, infinity and minus infinity are `{"float":"NaN"}`,
/// `{"float":"inf"}` and `{"float":"-inf"}`, so every value reads back as it was written.
/// Reading is tolerant: a value of another shape (`null`, an array, another object, as older
/// versions wrote for NaN) becomes [`Str`](Self::Str) holding its JSON text instead of failing
/// the whole operation.
///
/// Values compare by value: `I64(5) == U64(5)` (JSON does not keep which of the two it was),
/// and floats compare by bit pattern, so NaN equals NaN and `0.0` differs from `-0.0`.
///
/// ```
/// use tracing_progress::FieldValue;
/// assert_eq!(FieldValue::from(3u64).to_string(), "3");
/// assert_eq!(serde_json::to_string(&FieldValue::from("a")).unwrap(), "\"a\"");
/// let nan = serde_json::to_string(&FieldValue::from(f64::NAN)).unwrap();
/// assert_eq!(nan, r#"{"float":"NaN"}"#);
/// assert_eq!(serde_json::from_str::<FieldValue>(&nan).unwrap(), FieldValue::from(f64::NAN));
/// ```
#[derive(Clone, Debug)]
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

/// The key of the object that stands for a non-finite float.
const FLOAT_KEY: &str = "float";

impl PartialEq for FieldValue {
    fn eq(&self, other: &Self) -> bool {
        use FieldValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (U64(a), U64(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (U64(u), I64(i)) | (I64(i), U64(u)) => u64::try_from(*i).is_ok_and(|i| i == *u),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (Str(a), Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Bool(v) => serializer.serialize_bool(*v),
            FieldValue::U64(v) => serializer.serialize_u64(*v),
            FieldValue::I64(v) => serializer.serialize_i64(*v),
            FieldValue::F64(v) if v.is_finite() => serializer.serialize_f64(*v),
            FieldValue::F64(v) => {
                let name = if v.is_nan() {
                    "NaN"
                } else if *v > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(FLOAT_KEY, name)?;
                map.end()
            }
            FieldValue::Str(v) => serializer.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<FieldValue, E> {
        Ok(FieldValue::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<FieldValue, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => FieldValue::U64(u),
            Err(_) => FieldValue::I64(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::from(v))
    }
    fn visit_unit<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::from("null"))
    }
    fn visit_none<E>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::from("null"))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<FieldValue, A::Error> {
        let value =
            serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(FieldValue::from(value.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        let value =
            serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        if let serde_json::Value::Object(object) = &value
            && object.len() == 1
            && let Some(serde_json::Value::String(name)) = object.get(FLOAT_KEY)
        {
            match name.as_str() {
                "NaN" => return Ok(FieldValue::F64(f64::NAN)),
                "inf" => return Ok(FieldValue::F64(f64::INFINITY)),
                "-inf" => return Ok(FieldValue::F64(f64::NEG_INFINITY)),
                _ => {}
            }
        }
        Ok(FieldValue::from(value.to_string()))
    }
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
    /// Empty, with room for `n` fields (a node's are sized to its first update).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Metadata(Vec::with_capacity(n))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<u64>().prop_map(FieldValue::U64),
            any::<i64>().prop_map(FieldValue::I64),
            // Every bit pattern: NaNs, infinities, subnormals, huge and negative numbers.
            any::<u64>().prop_map(|bits| FieldValue::F64(f64::from_bits(bits))),
            prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::MAX),
                Just(f64::MIN),
                Just(-0.0),
                Just(1e308),
                Just(-1e-308),
            ]
            .prop_map(FieldValue::F64),
            ".*".prop_map(FieldValue::from),
            // Text that looks like the special forms stays text.
            prop_oneof![
                Just("NaN"),
                Just("inf"),
                Just("null"),
                Just(r#"{"float":"NaN"}"#)
            ]
            .prop_map(FieldValue::from),
        ]
    }

    proptest! {
        /// Every value reads back equal, alone and inside metadata.
        #[test]
        fn every_value_round_trips(v in any_value(), w in any_value()) {
            let json = serde_json::to_string(&v).unwrap();
            let back: FieldValue = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &v, "{}", json);
            let mut m = Metadata::default();
            m.insert("a", v);
            m.insert("b", w);
            let json = serde_json::to_string(&m).unwrap();
            let back: Metadata = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, m, "{}", json);
        }
    }

    #[test]
    fn non_finite_floats_have_a_defined_form() {
        let json = |v: f64| serde_json::to_string(&FieldValue::F64(v)).unwrap();
        assert_eq!(json(f64::NAN), r#"{"float":"NaN"}"#);
        assert_eq!(json(f64::INFINITY), r#"{"float":"inf"}"#);
        assert_eq!(json(f64::NEG_INFINITY), r#"{"float":"-inf"}"#);
        assert_eq!(json(-2.5), "-2.5");
    }

    #[test]
    fn unknown_shapes_are_kept_as_text() {
        let m: Metadata =
            serde_json::from_str(r#"{"a":null,"b":[1,2],"c":{"x":1},"d":{"float":"big"},"e":7}"#)
                .unwrap();
        assert_eq!(m.get("a"), Some(&FieldValue::from("null")));
        assert_eq!(m.get("b"), Some(&FieldValue::from("[1,2]")));
        assert_eq!(m.get("c"), Some(&FieldValue::from(r#"{"x":1}"#)));
        assert_eq!(m.get("d"), Some(&FieldValue::from(r#"{"float":"big"}"#)));
        assert_eq!(m.get("e"), Some(&FieldValue::U64(7)));
    }

    #[test]
    fn values_compare_by_value() {
        assert_eq!(FieldValue::I64(5), FieldValue::U64(5));
        assert_ne!(FieldValue::I64(-5), FieldValue::U64(5));
        assert_eq!(FieldValue::F64(f64::NAN), FieldValue::F64(f64::NAN));
        assert_ne!(FieldValue::F64(0.0), FieldValue::F64(-0.0));
        assert_ne!(FieldValue::F64(1.0), FieldValue::U64(1));
    }
}
