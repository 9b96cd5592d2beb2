//! The progress model: plain data, no locks, no `tracing-subscriber` types.
//!
//! Everything the store hands out is one of these types. They serialize to a documented JSON
//! shape whose version is [`SCHEMA_VERSION`]; a field is only ever added in a minor version, and
//! a rename or removal bumps the version.
//!
//! * [`ProgressState`] is one operation: the outermost tracked span and everything below it.
//! * [`ProgressLevel`] is one node of that tree (a setlist, a song, an action, a block, ...).
//! * Times are microseconds: `*_at_us` are wall-clock times since the Unix epoch, `*_us`
//!   without `_at` are durations.

mod attempt;
mod recent;
mod render;
mod value;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub use attempt::{Attempt, Attempts};
pub use recent::{EventLevel, RecentEvent};
pub use value::{FieldValue, Metadata};

/// Version of the JSON shape of [`ProgressState`] (its `schema_version` field).
pub const SCHEMA_VERSION: u32 = 1;

/// Identifier of a node, unique within the process: never reused, unlike `tracing` span ids.
///
/// An operation's id is the id of its root node.
///
/// ```
/// use tracing_progress::NodeId;
/// let id: NodeId = "42".parse().unwrap();
/// assert_eq!(id.as_u64(), 42);
/// assert_eq!(id.to_string(), "42");
/// assert!("x".parse::<NodeId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(u64);

/// Identifier of an operation: the [`NodeId`] of its root node.
pub type OperationId = NodeId;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl NodeId {
    /// Hands out the next id; a process-wide counter, so ids never repeat across stores.
    pub(crate) fn next() -> Self {
        NodeId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The numeric value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Wraps a numeric value, for ids read back from JSON, a URL or a command line.
    pub fn from_u64(v: u64) -> Self {
        NodeId(v)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u64>()
            .map(NodeId)
            .map_err(|_| ParseError::new("node id", s, "a non-negative integer"))
    }
}

/// Identifier of a run: one store (one [`Builder::build`](crate::Builder::build)) writing a
/// [history file](crate::Builder::history_file). Random, so runs of different processes and
/// restarts do not collide. Its text form is 16 hexadecimal digits.
///
/// ```
/// use tracing_progress::RunId;
/// let run: RunId = "00000000000000ff".parse().unwrap();
/// assert_eq!(run.as_u64(), 255);
/// assert_eq!(run.to_string(), "00000000000000ff");
/// assert!("xyz".parse::<RunId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u64);

impl RunId {
    /// Wraps a numeric value (as stored in the file's `run_id` columns).
    pub fn from_u64(v: u64) -> Self {
        RunId(v)
    }

    /// The numeric value.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for RunId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.len() > 16 {
            return Err(ParseError::new("run id", s, "1 to 16 hexadecimal digits"));
        }
        u64::from_str_radix(t, 16)
            .map(RunId)
            .map_err(|_| ParseError::new("run id", s, "1 to 16 hexadecimal digits"))
    }
}

// In JSON a run id is its text form: 64-bit numbers lose digits in JavaScript.
impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which operation: an id, qualified by its run when it is not the asked store's own.
///
/// The text form is `ID` (the store's own operation) or `ID@RUN` (operation `ID` of run
/// `RUN`, e.g. one read from a history file that another process wrote):
///
/// ```
/// use tracing_progress::{OperationRef, OperationId};
/// let own: OperationRef = "42".parse().unwrap();
/// assert_eq!(own, OperationRef::from(OperationId::from_u64(42)));
/// let other: OperationRef = "42@00000000000000ff".parse().unwrap();
/// assert_eq!(other.run.unwrap().as_u64(), 255);
/// assert_eq!(other.to_string(), "42@00000000000000ff");
/// assert!("42@".parse::<OperationRef>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OperationRef {
    /// The run that recorded it; `None`: the asked store's own run.
    pub run: Option<RunId>,
    /// The operation's id within its run.
    pub id: OperationId,
}

impl OperationRef {
    /// Operation `id` of run `run`.
    pub fn new(run: Option<RunId>, id: OperationId) -> Self {
        OperationRef { run, id }
    }
}

impl From<OperationId> for OperationRef {
    fn from(id: OperationId) -> Self {
        OperationRef { run: None, id }
    }
}

impl fmt::Display for OperationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.run {
            Some(run) => write!(f, "{}@{run}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

impl FromStr for OperationRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new("operation", s, "an id, or ID@RUN (RUN: hexadecimal)");
        match s.trim().split_once('@') {
            None => Ok(OperationRef::from(
                s.parse::<OperationId>().map_err(|_| bad())?,
            )),
            Some((id, run)) => Ok(OperationRef {
                id: id.parse().map_err(|_| bad())?,
                run: Some(run.parse().map_err(|_| bad())?),
            }),
        }
    }
}

/// Lifecycle of a node or operation.
///
/// ```
/// use tracing_progress::Status;
/// assert_eq!("failed".parse::<Status>().unwrap(), Status::Failed);
/// assert!(Status::Cancelled.is_finished());
/// assert!(!Status::Running.is_finished());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not entered yet.
    Pending,
    /// Entered at least once and not closed.
    Running,
    /// Closed with no error and no cancellation.
    Completed,
    /// An ERROR event happened inside it, it was marked failed, or it closed during a panic.
    Failed,
    /// Closed after its operation was asked to cancel, or dropped unfinished; see
    /// [`CancelReason`] (also: interrupted by the end of its process, read from a history file).
    Cancelled,
}

impl Status {
    /// Whether the node is closed (completed, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The lowercase name used in JSON and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "pending" => Status::Pending,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" | "canceled" => Status::Cancelled,
            _ => {
                return Err(ParseError::new(
                    "status",
                    s,
                    "one of pending, running, completed, failed, cancelled",
                ));
            }
        })
    }
}

/// A value that could not be parsed; says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, input: &str, expected: &'static str) -> Self {
        let input: String = input.chars().take(64).collect();
        ParseError {
            what,
            input,
            expected,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected {}",
            self.what, self.input, self.expected
        )
    }
}

impl std::error::Error for ParseError {}

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorOrigin {
    /// An ERROR-level event inside the level (this covers `#[instrument(err)]`).
    Event,
    /// The span closed while its thread was panicking.
    Panic,
    /// Marked failed through [`ProgressSpanExt::fail`](crate::ProgressSpanExt::fail).
    Explicit,
}

impl ErrorOrigin {
    /// The lowercase name used in JSON (`event`, `panic`, `explicit`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorOrigin::Event => "event",
            ErrorOrigin::Panic => "panic",
            ErrorOrigin::Explicit => "explicit",
        }
    }
}

impl fmt::Display for ErrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with its context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// The error text: the event's message, its `error` field, or the panic message.
    pub message: Arc<str>,
    /// Where the failure came from.
    pub origin: ErrorOrigin,
    /// The failing node.
    pub node_id: NodeId,
    /// Names from the operation's root down to the failing node.
    pub path: Vec<Arc<str>>,
    /// The `tracing` target of the event or span that failed.
    pub target: Arc<str>,
    /// Source location (`file:line`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Arc<str>>,
    /// Other fields of the error event.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub fields: Metadata,
    /// When it happened (µs since the Unix epoch).
    pub at_us: u64,
    /// True when the node already had a failed descendant when it failed: the error was most
    /// likely that failure returned up (`#[instrument(err)]` at every level), so ancestors
    /// count it once, under its root cause, not again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propagated: bool,
    /// The failing node's recent events up to the failure, oldest first: the lines that led
    /// to it (see [`Builder::recent_events`](crate::Builder::recent_events)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<RecentEvent>,
}

/// ERROR events a node logged without failing (see
/// [`Builder::fail_on`](crate::Builder::fail_on)): kept as context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandledErrors {
    /// How many.
    pub count: u64,
    /// The most recent one, with its path.
    pub last: ErrorInfo,
}

/// Why a node ended [`Cancelled`](Status::Cancelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelReason {
    /// The operation was asked to cancel ([`Store::cancel`](crate::Store::cancel)) and the
    /// node stopped because of it: it saw the request (`is_cancelled()` returned true), ended
    /// short of its total, or a child of it was cancelled.
    Requested,
    /// The span was dropped without its work having run to the end: it was never entered (a
    /// future that was never polled), or its callsite reports returns (`#[instrument(ret)]`)
    /// and this span closed without one (a future dropped by a timeout, `select!` or abort).
    Dropped,
    /// A [planned](crate::ProgressSpanExt::plan) child that no span took before its parent
    /// ended: the work was never started. Views say "skipped"; it is not a failure and does
    /// not make the parent "completed with failures" (see [`ProgressLevel::skipped`]).
    Skipped,
    /// The process that ran it ended (killed, crashed, or exited with the span open) while
    /// it was running or waiting: it will never finish. Only on operations read back from a
    /// history file ([`Builder::history_file`](crate::Builder::history_file)); what they show
    /// is the state written at their start.
    Interrupted,
}

impl CancelReason {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::Dropped => "dropped",
            CancelReason::Skipped => "skipped",
            CancelReason::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an ancestor keeps of the failures below it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailureSummary {
    /// How many distinct failures below this one: nodes that failed with no failed node
    /// below them (a failure returned up through several levels counts once).
    pub count: u64,
    /// The first failure below this one, with its path: usually the root cause.
    pub first: ErrorInfo,
    /// The most recent failure below this one, with its path.
    pub last: ErrorInfo,
}

/// Finished children of one level type that were folded away to keep memory bounded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FoldedChildren {
    /// Level type of the folded children.
    pub level_type: Arc<str>,
    /// How many were folded.
    pub count: u64,
    /// How many of them completed.
    pub completed: u64,
    /// How many failed.
    pub failed: u64,
    /// How many were cancelled.
    pub cancelled: u64,
    /// Shortest duration (µs).
    pub min_us: u64,
    /// Mean duration (µs).
    pub mean_us: u64,
    /// Longest duration (µs).
    pub max_us: u64,
}

/// Timing of one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Timing {
    /// When the span was created (µs since the Unix epoch).
    pub created_at_us: u64,
    /// When it was first entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_us: Option<u64>,
    /// When it closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at_us: Option<u64>,
    /// From start (or creation, if never entered) to close, or to the snapshot if still open.
    pub elapsed_us: u64,
    /// Time spent entered (executing inside the span).
    pub busy_us: u64,
    /// Time alive but not entered: `elapsed - busy` measured from creation.
    pub idle_us: u64,
}

/// One node of the progress tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProgressLevel {
    /// Store-assigned id, unique in the process.
    pub id: NodeId,
    /// Kind of level: `setlist`, `song`, `action`, `block`, ... (from `progress.level`, a
    /// builder rule, or the span name).
    pub level_type: Arc<str>,
    /// Display name (from `progress.name`, the rule's name field, or the span name).
    pub name: Arc<str>,
    /// The `tracing` span name (shared with the callsite: snapshots copy no string for it).
    pub span_name: Arc<str>,
    /// The `tracing` target (shared with the callsite).
    pub target: Arc<str>,
    /// Current status.
    pub status: Status,
    /// Units done: explicit (`progress.current`, `inc`) or, if never set, the number of
    /// tracked children that completed (failed and cancelled ones are not done work).
    pub current: u64,
    /// Tracked children that failed (folded ones included); not counted in `current`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Units expected, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Completion in percent (0 to 100), rolled up from running children; `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
    /// Unit of `current`/`total` (`progress.unit`), e.g. `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Arc<str>>,
    /// Latest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Arc<str>>,
    /// Timing.
    pub timing: Timing,
    /// This node's own failure: [`error`](Self::error). Private, so the layout (boxed: rare,
    /// and it keeps snapshots of big trees small) can change without a major version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<Box<ErrorInfo>>,
    /// Failures of descendants: [`failures_below`](Self::failures_below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failures_below: Option<Box<FailureSummary>>,
    /// True when the node completed but something below it failed ("completed with
    /// failures"): the status stays [`Completed`](Status::Completed), the outcome differs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_failures: bool,
    /// Why a cancelled node was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// ERROR events that did not fail the node: [`handled_errors`](Self::handled_errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) handled_errors: Option<Box<HandledErrors>>,
    /// All other fields of the span and its progress events.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// Input that could not be used as given (a non-numeric total, ...), most recent last,
    /// at most 8; see the crate docs for each case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_errors: Vec<Arc<str>>,
    /// The last events logged inside this node, oldest first, bounded by
    /// [`Builder::recent_events`](crate::Builder::recent_events); folded children keep none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<RecentEvent>,
    /// True when this node sits at the depth limit and its tracked descendants were attached
    /// to it directly instead of nesting deeper.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flattened: bool,
    /// Retained children in creation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ProgressLevel>,
    /// Summaries of finished children folded away, one per level type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<FoldedChildren>,
    /// Time-remaining estimate: [`estimate`](Self::estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) estimate: Option<Box<Estimate>>,
    /// True when a running node has made no progress for much longer than usual.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stalled: bool,
    /// Resource samples: [`resources`](Self::resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resources: Option<Box<ResourceUsage>>,
    /// True for a child declared by its parent's [plan](crate::ProgressSpanExt::plan) that no
    /// span has taken yet: it reads pending, in its planned position. When the real span
    /// starts it takes this node (same id, same position) and `planned` turns false; when
    /// the parent ends first it ends [`Cancelled`](Status::Cancelled) with
    /// [`CancelReason::Skipped`] (or the parent's reason, if the parent was cancelled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
    /// The node's key: its span's `progress.key`, or the key its plan entry gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Arc<str>>,
    /// Planned children that never started and ended with this node (skipped, or cancelled
    /// with it); not counted in `current` or `failed`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Planned children past the cap ([`Builder::max_planned_children`](crate::Builder::max_planned_children)):
    /// counted in `total`, not kept as nodes, and not taken by a span yet.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub planned_hidden: u64,
    /// Earlier attempts of a retried node: [`attempts`](Self::attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<Box<Attempts>>,
}

/// What an [`Estimate`] is based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateBasis {
    /// The node's own smoothed rate of progress.
    Rate,
    /// Durations of finished nodes of the same level type and name (before the first unit).
    History,
    /// Combined from the estimates of its children.
    Children,
}

/// Remaining-time estimate of a running node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Estimate {
    /// Expected time until the node completes (µs).
    pub remaining_us: u64,
    /// Optimistic bound (µs).
    pub low_us: u64,
    /// Pessimistic bound (µs).
    pub high_us: u64,
    /// Smoothed progress rate in units per second, when rate-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// What the estimate is based on.
    pub basis: EstimateBasis,
}

/// Process resource usage attributed to a node: sampled while it was running.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// Samples taken while the node ran.
    pub samples: u32,
    /// Mean process CPU in percent of one core.
    pub cpu_percent_mean: f64,
    /// Peak process CPU in percent of one core.
    pub cpu_percent_peak: f64,
    /// Mean resident memory (bytes).
    pub rss_bytes_mean: u64,
    /// Peak resident memory (bytes).
    pub rss_bytes_peak: u64,
}

impl ProgressLevel {
    /// A node with these names and status and nothing else: no counts, timing, errors,
    /// children or annotations. What a level built from outside the tree (a child process's
    /// report, a placeholder) starts from, so a field added to the model has its "none" value
    /// in one place.
    pub(crate) fn blank(
        id: NodeId,
        level_type: Arc<str>,
        name: Arc<str>,
        span_name: Arc<str>,
        target: Arc<str>,
        status: Status,
    ) -> Self {
        ProgressLevel {
            id,
            level_type,
            name,
            span_name,
            target,
            status,
            current: 0,
            failed: 0,
            total: None,
            percentage: None,
            unit: None,
            message: None,
            timing: Timing::default(),
            error: None,
            failures_below: None,
            with_failures: false,
            cancel_reason: None,
            handled_errors: None,
            metadata: Metadata::default(),
            input_errors: Vec::new(),
            recent_events: Vec::new(),
            flattened: false,
            children: Vec::new(),
            folded: Vec::new(),
            estimate: None,
            stalled: false,
            resources: None,
            planned: false,
            key: None,
            skipped: 0,
            planned_hidden: 0,
            attempts: None,
        }
    }

    /// This node's own failure, if it failed.
    pub fn error(&self) -> Option<&ErrorInfo> {
        self.error.as_deref()
    }

    /// Failures of descendants (first, last, count), if any.
    pub fn failures_below(&self) -> Option<&FailureSummary> {
        self.failures_below.as_deref()
    }

    /// ERROR events the node logged and recovered from (they did not fail it).
    pub fn handled_errors(&self) -> Option<&HandledErrors> {
        self.handled_errors.as_deref()
    }

    /// The attempt this node is and the earlier ones, when it was retried or declared an
    /// attempt (`progress.attempt`, [`ProgressSpanExt::set_attempt`](crate::ProgressSpanExt::set_attempt)).
    pub fn attempts(&self) -> Option<&Attempts> {
        self.attempts.as_deref()
    }

    /// This node's attempt number: 1 unless it was retried or declared a later attempt.
    pub fn attempt(&self) -> u32 {
        self.attempts.as_deref().map_or(1, |a| a.number)
    }

    /// The status in words, "completed with failures" for a completed node with failures
    /// below it.
    pub fn outcome(&self) -> &'static str {
        if self.with_failures {
            "completed with failures"
        } else if self.cancel_reason == Some(CancelReason::Skipped) {
            "skipped"
        } else {
            self.status.as_str()
        }
    }

    /// Time-remaining estimate and rate, for running nodes once there is enough signal.
    pub fn estimate(&self) -> Option<&Estimate> {
        self.estimate.as_deref()
    }

    /// Process CPU and memory sampled while this node ran (feature `resources`).
    pub fn resources(&self) -> Option<&ResourceUsage> {
        self.resources.as_deref()
    }

    /// Visits this node and all retained descendants, depth first, parents before children.
    ///
    /// ```
    /// # use tracing_progress::ProgressLevel;
    /// fn count(level: &ProgressLevel) -> usize { level.walk().count() }
    /// ```
    pub fn walk(&self) -> impl Iterator<Item = &ProgressLevel> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let next = stack.pop()?;
            stack.extend(next.children.iter().rev());
            Some(next)
        })
    }

    /// Finds a node by id among this node and its retained descendants.
    pub fn find(&self, id: NodeId) -> Option<&ProgressLevel> {
        self.walk().find(|l| l.id == id)
    }

    /// The first retained child with this name, if any.
    pub fn child(&self, name: &str) -> Option<&ProgressLevel> {
        self.children.iter().find(|c| &*c.name == name)
    }
}

/// Counters about one operation's tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OperationMetrics {
    /// Tracked spans seen in this operation, folded ones included.
    pub nodes_seen: u64,
    /// Nodes currently retained in the tree.
    pub nodes_retained: u64,
    /// Finished nodes folded into summaries.
    pub nodes_folded: u64,
    /// Nodes that failed.
    pub nodes_failed: u64,
    /// Progress updates applied (records, events and extension-trait calls).
    pub updates: u64,
    /// Input errors (see [`ProgressLevel::input_errors`]).
    pub input_errors: u64,
    /// Plan entries not kept as nodes because a cap was reached (see
    /// [`Builder::max_planned_children`](crate::Builder::max_planned_children)); they are
    /// still counted in their parent's total.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub planned_dropped: u64,
    /// Earlier attempts set aside because their unit was retried (their nodes are not in
    /// `nodes_failed`; see [`ProgressLevel::attempts`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retried: u64,
}

/// One operation: the outermost tracked span and its whole tree.
///
/// Everything the store hands out is one of the model types (this one, [`ProgressLevel`] for
/// each node, and the types they hold): plain data, no locks. They serialize to a documented
/// JSON shape whose version is [`SCHEMA_VERSION`]; a field is only ever added in a minor
/// version, and a rename or removal bumps the version. Times are microseconds: `*_at_us` are
/// wall-clock times since the Unix epoch, `*_us` without `_at` are durations.
///
/// ```
/// # fn docs(store: tracing_progress::Store) {
/// for op in store.active() {
///     println!("{} {} {:?}%", op.operation_type, op.status, op.root.percentage);
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProgressState {
    /// Version of this JSON shape ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Operation id (the root node's id): unique within its run, not across runs.
    pub id: OperationId,
    /// The run that recorded the operation, when that is not the store you asked: an
    /// operation read from a [history file](crate::Builder::history_file) that another
    /// process (or an earlier run of this one) wrote. `None` for the store's own operations.
    /// `(run, id)` is unique across processes and restarts; see [`OperationRef`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// Operation type: `progress.operation`, a rule's operation type, or the root's level type.
    pub operation_type: Arc<str>,
    /// The root node's name.
    pub name: Arc<str>,
    /// The root node's status.
    pub status: Status,
    /// True when the operation completed with failures below its root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_failures: bool,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// When the root was first entered (µs since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_us: Option<u64>,
    /// When the root closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at_us: Option<u64>,
    /// The root's own error, or else the first failure below it (the likely root cause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Counters about the tree.
    pub metrics: OperationMetrics,
    /// When this snapshot was taken (µs since the Unix epoch).
    pub snapshot_at_us: u64,
    /// The root node and its tree.
    pub root: ProgressLevel,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ProgressState {
    /// Finds a node anywhere in the retained tree.
    pub fn find(&self, id: NodeId) -> Option<&ProgressLevel> {
        self.root.find(id)
    }

    /// How to ask for this operation again ([`Store::get_ref`](crate::Store::get_ref), the
    /// HTTP API's `/api/operations/{ref}`, the CLI's `show REF`).
    pub fn reference(&self) -> OperationRef {
        OperationRef {
            run: self.run,
            id: self.id,
        }
    }

    /// Serializes to JSON (the documented, versioned shape).
    pub fn to_json(&self) -> String {
        // Serializing this plain data cannot fail: all map keys are strings.
        serde_json::to_string(self).unwrap_or_default()
    }
}
