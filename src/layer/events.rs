//! How the layer reads events: their kind from the field names alone, and which ERROR events
//! fail a node ([`FailOn`]).

use super::classify::Classifier;

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
