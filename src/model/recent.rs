//! Recent events of a node: the tail of what was logged inside it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Metadata;

/// Severity of a [`RecentEvent`] (the `tracing` level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

impl EventLevel {
    /// The level as an upper-case word, as `tracing` prints it (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Trace => "TRACE",
            EventLevel::Debug => "DEBUG",
            EventLevel::Info => "INFO",
            EventLevel::Warn => "WARN",
            EventLevel::Error => "ERROR",
        }
    }
}

impl fmt::Display for EventLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event logged inside a tracked node (or in an untracked span below it), kept in the
/// node's bounded ring of recent events ([`Builder::recent_events`](crate::Builder::recent_events)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecentEvent {
    /// When it was logged (µs since the Unix epoch).
    pub at_us: u64,
    /// Its level.
    pub level: EventLevel,
    /// Its `tracing` target.
    pub target: Arc<str>,
    /// Its `message` field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Arc<str>>,
    /// Its other fields, in recorded order.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub fields: Metadata,
}

impl RecentEvent {
    /// Approximate heap bytes of this event: what the ring's byte cap counts.
    pub(crate) fn weight(&self) -> usize {
        let text = |s: &str| s.len() + 16;
        let mut n = std::mem::size_of::<Self>() + self.message.as_deref().map_or(0, text);
        for (k, v) in self.fields.iter() {
            n += text(k) + std::mem::size_of_val(v);
            if let super::FieldValue::Str(s) = v {
                n += text(s);
            }
        }
        n
    }
}

impl fmt::Display for RecentEvent {
    /// `LEVEL message k=v ...` (no time: callers format it in their own clock).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>5}", self.level.as_str())?;
        if let Some(m) = &self.message {
            write!(f, " {m}")?;
        }
        for (k, v) in self.fields.iter() {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}
