//! How the layer reads events: their kind from the field names alone, and which ERROR events
//! fail a node ([`FailOn`]).

use super::classify::Classifier;
use crate::model::FieldValue;
use std::sync::Arc;

/// What an event means to the layer, from its field names alone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    /// Carries `progress.*` fields.
    Progress,
    /// `#[instrument(ret)]`'s event: one field, `return`.
    Return,
    /// `#[instrument(err)]`'s event: one field, `error` (at ERROR level: a returned error).
    ReturnedError,
    Other,
}

impl EventKind {
    #[inline]
    pub(super) fn of(meta: &tracing_core::Metadata<'_>) -> Self {
        let fields = meta.fields();
        if fields.len() == 1 {
            match fields.iter().next().map(|f| f.name()) {
                Some("return") => return EventKind::Return,
                Some("error") => return EventKind::ReturnedError,
                _ => {}
            }
        }
        if Classifier::declares_progress(meta) {
            EventKind::Progress
        } else {
            EventKind::Other
        }
    }
}

/// Which ERROR-level signals fail a node; set with
/// [`Builder::fail_on`](crate::Builder::fail_on). Panics and
/// [`ProgressSpanExt::fail`](crate::ProgressSpanExt::fail) always fail it.
///
/// ERROR events that do not fail the node are kept as context
/// ([`ProgressLevel::handled_errors`](crate::ProgressLevel::handled_errors)): a function that
/// logs `error!("upload failed, retrying")` and then succeeds ends completed, with the errors
/// it recovered from on record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailOn {
    /// Returned errors: the event `#[instrument(err)]` emits when the function returns `Err`
    /// (an ERROR event whose only field is `error`). The default.
    #[default]
    ReturnedErrors,
    /// Every ERROR event inside the node (the behaviour before 0.2).
    ErrorEvents,
    /// Only panics and explicit `fail()`.
    Explicit,
}

impl FailOn {
    /// Whether an ERROR event fails the node; `returned` if it has the returned-error shape.
    pub(super) fn fails(self, returned: bool) -> bool {
        match self {
            FailOn::ReturnedErrors => returned,
            FailOn::ErrorEvents => true,
            FailOn::Explicit => false,
        }
    }
}

/// Where a `log` record bridged by `tracing-log` really came from: its events all have target
/// `log` and no file or line, and carry the record's own as `log.*` fields (what
/// `tracing_log::NormalizeEvent` reads; read here without the dependency).
#[derive(Default)]
pub(super) struct LogOrigin {
    pub(super) target: Option<Arc<str>>,
    pub(super) file: Option<Arc<str>>,
    pub(super) line: Option<u32>,
}

impl LogOrigin {
    /// Keeps `key = value` if it is one of the record's origin fields (and drops the module
    /// path, which the target already says); `false` for any other field.
    pub(super) fn take(
        &mut self,
        meta: &tracing::Metadata<'_>,
        key: &str,
        value: &FieldValue,
    ) -> bool {
        if meta.target() != "log" {
            return false;
        }
        match (key, value) {
            ("log.target", FieldValue::Str(s)) => self.target = Some(s.clone()),
            ("log.file", FieldValue::Str(s)) => self.file = Some(s.clone()),
            ("log.line", FieldValue::U64(n)) => self.line = u32::try_from(*n).ok(),
            ("log.line", FieldValue::I64(n)) => self.line = u32::try_from(*n).ok(),
            ("log.module_path", _) => {}
            _ => return false,
        }
        true
    }
}
