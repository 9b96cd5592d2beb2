//! A machine-readable progress stream: one JSON object per line per change of a node.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::text::{children_out_of, position_in};
use crate::model::{NodeId, OperationId, ProgressLevel, ProgressState, Status};

/// Version of the [`StreamRecord`] shape (its `v` field). Fields are only ever added in a
/// minor release; a rename or removal bumps it.
pub const STREAM_VERSION: u32 = 1;

/// One line of the stream: a node whose status, counts, percentage or message changed.
///
/// Every key is always present (`null` when unknown), so a reader can rely on the shape:
///
/// ```json
/// {"v":1,"at_us":1767225600000000,"operation_id":7,"operation_type":"setlist_processing",
///  "node_id":12,"depth":2,"path":["My Setlist","audio3.wav","SeparateStems"],
///  "level":"action","name":"SeparateStems","status":"running","outcome":"running",
///  "current":2,"total":4,"unit":null,"percentage":50.0,"eta_us":1200000,
///  "message":"stem 2 of 4","error":null,"attempt":1,"planned":false,"position":3,"of":5}
/// ```
///
/// (one line in the stream; wrapped here.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamRecord {
    /// [`STREAM_VERSION`].
    pub v: u32,
    /// When the snapshot this line comes from was taken (µs since the Unix epoch).
    pub at_us: u64,
    /// The operation (its root node's id).
    pub operation_id: OperationId,
    /// The operation's type.
    pub operation_type: Arc<str>,
    /// The node.
    pub node_id: NodeId,
    /// 0 for the operation's root, 1 for its children, ...
    pub depth: usize,
    /// Names from the root down to this node (both included).
    pub path: Vec<Arc<str>>,
    /// The node's level type (`song`, `block`, ...).
    pub level: Arc<str>,
    /// The node's name.
    pub name: Arc<str>,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: Status,
    /// The status in words: as `status`, or `completed with failures`.
    pub outcome: String,
    /// Units done.
    pub current: u64,
    /// Units expected, when known.
    pub total: Option<u64>,
    /// Unit of `current`/`total`, when given.
    pub unit: Option<Arc<str>>,
    /// Completion in percent (0 to 100), when known.
    pub percentage: Option<f64>,
    /// Estimated time remaining (µs), for a running node with an estimate.
    pub eta_us: Option<u64>,
    /// The node's latest message.
    pub message: Option<Arc<str>>,
    /// The node's own error message, when it failed.
    pub error: Option<Arc<str>>,
    /// True for a planned child no span has taken yet (see
    /// [`ProgressLevel::planned`]); its status is `pending`.
    pub planned: bool,
    /// Position among its siblings, from 1, folded ones counted first (`4` of "Song 4/10");
    /// `null` for the root.
    pub position: Option<u64>,
    /// What `position` is out of: the parent's total when it counts children, else `null`.
    pub of: Option<u64>,
    /// Which attempt of its unit the node is: 1, or more for a retried unit (the same
    /// `path`, a new `node_id`; see [`ProgressLevel::attempts`]). An earlier attempt that
    /// began and ended between two snapshots has no line of its own: `attempt > 1` says it
    /// existed, the snapshot's `attempts` has its outcome and error.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

/// What was last written for one node: a change is any difference here.
#[derive(Clone, PartialEq)]
struct Seen {
    status: Status,
    with_failures: bool,
    current: u64,
    total: Option<u64>,
    /// Bits, so that equal values compare equal.
    percentage: Option<u64>,
    message: Option<Arc<str>>,
}

impl Seen {
    fn of(level: &ProgressLevel) -> Self {
        Seen {
            status: level.status,
            with_failures: level.with_failures,
            current: level.current,
            total: level.total,
            percentage: level.percentage.map(f64::to_bits),
            message: level.message.clone(),
        }
    }
}

struct Emitted {
    seen: Seen,
    at_us: u64,
}

/// Turns snapshots into [`StreamRecord`]s: one per node that changed since it was last
/// written, throttled per node. Pure: feed it snapshots from [`Store::subscribe`](crate::Store::subscribe), the HTTP
/// event stream or anywhere; [`LiveView::ndjson`](crate::terminal::LiveView::ndjson) and
/// `tracing-progress watch --ndjson` drive it for you.
///
/// * A node is written when it first appears and whenever its status changes (never
///   throttled), and when its counts, percentage or message changed, at most once per
///   [`min_interval`](Self::min_interval) (default 1 s). A change held back is written at a
///   later call once the interval has passed, so call again now and then (e.g. every 250 ms
///   with the latest snapshots) even when nothing new arrived. ETA updates alone are not a
///   change.
/// * A finished operation's snapshot writes every node whose last line is out of date,
///   whatever the interval, then the operation is forgotten.
/// * Memory is bounded by the snapshots given: nodes that left the tree (folded away) and
///   operations dropped with [`retain`](Self::retain) are forgotten.
///
/// ```
/// # fn docs(store: tracing_progress::Store) -> std::io::Result<()> {
/// use std::time::Duration;
/// use tracing_progress::view::ProgressStream;
///
/// let mut stream = ProgressStream::new().max_depth(2);
/// let mut sub = store.subscribe();
/// let mut out = std::io::stdout().lock();
/// loop {
///     let changes = sub.wait(Duration::from_millis(250));
///     let now = store.now_us();
///     for op in store.active().iter().chain(&changes.finished) {
///         stream.write(op, now, &mut out)?;
///     }
///     let active = store.active_ids();
///     stream.retain(|id| active.contains(&id));
/// #   break Ok(());
/// }
/// # }
/// ```
pub struct ProgressStream {
    min_interval_us: u64,
    max_depth: Option<usize>,
    ops: HashMap<OperationId, HashMap<NodeId, Emitted>>,
}

impl std::fmt::Debug for ProgressStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStream")
            .field("min_interval_us", &self.min_interval_us)
            .field("max_depth", &self.max_depth)
            .field("operations", &self.ops.len())
            .finish()
    }
}

impl Default for ProgressStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressStream {
    /// A stream with the defaults: every depth, 1 s between two lines of one node (status
    /// changes aside).
    pub fn new() -> Self {
        ProgressStream {
            min_interval_us: 1_000_000,
            max_depth: None,
            ops: HashMap::new(),
        }
    }

    /// Least time between two lines of one node for counts, percentage and message changes
    /// (`Duration::ZERO`: every change).
    pub fn min_interval(mut self, every: Duration) -> Self {
        self.min_interval_us = u64::try_from(every.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Only nodes down to this depth (0: the operation's root only).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = Some(depth);
        self
    }

    /// The lines due for this snapshot of an operation, parents before children. `now_us`
    /// is the caller's clock (µs), used only for the throttle.
    pub fn records(&mut self, state: &ProgressState, now_us: u64) -> Vec<StreamRecord> {
        let finished = state.status.is_finished();
        let old = self.ops.remove(&state.id).unwrap_or_default();
        let mut kept: HashMap<NodeId, Emitted> = HashMap::with_capacity(old.len());
        let mut out = Vec::new();
        let mut path: Vec<Arc<str>> = Vec::new();
        // Depth-first with the path to each node: (node, depth).
        type At = (u64, Option<u64>);
        let mut stack: Vec<(&ProgressLevel, usize, Option<At>)> = vec![(&state.root, 0, None)];
        while let Some((level, depth, at)) = stack.pop() {
            path.truncate(depth);
            path.push(level.name.clone());
            if self.max_depth.is_none_or(|max| depth < max) {
                let of = children_out_of(level);
                let children = level.children.iter().enumerate().rev();
                stack
                    .extend(children.map(|(i, c)| (c, depth + 1, Some(position_in(level, i, of)))));
            }
            let seen = Seen::of(level);
            let due = match old.get(&level.id) {
                None => true,
                Some(prev) if prev.seen == seen => false,
                Some(prev) => {
                    finished
                        || prev.seen.status != seen.status
                        || now_us.saturating_sub(prev.at_us) >= self.min_interval_us
                }
            };
            if due {
                out.push(record(state, level, depth, &path, at));
                kept.insert(
                    level.id,
                    Emitted {
                        seen,
                        at_us: now_us,
                    },
                );
            } else if let Some(prev) = old.get(&level.id) {
                kept.insert(
                    level.id,
                    Emitted {
                        seen: prev.seen.clone(),
                        at_us: prev.at_us,
                    },
                );
            }
        }
        if !finished {
            self.ops.insert(state.id, kept);
        }
        out
    }

    /// Writes [`records`](Self::records) as JSON lines; returns how many.
    pub fn write(
        &mut self,
        state: &ProgressState,
        now_us: u64,
        out: &mut dyn Write,
    ) -> io::Result<usize> {
        let records = self.records(state, now_us);
        let mut buf = Vec::with_capacity(records.len() * 256);
        for r in &records {
            // Plain data with string keys: serializing cannot fail.
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        out.write_all(&buf)?;
        out.flush()?;
        Ok(records.len())
    }

    /// Forgets the operations `keep` refuses (e.g. those no longer running, whose final state
    /// was not seen).
    pub fn retain(&mut self, mut keep: impl FnMut(OperationId) -> bool) {
        self.ops.retain(|id, _| keep(*id));
    }
}

fn record(
    state: &ProgressState,
    level: &ProgressLevel,
    depth: usize,
    path: &[Arc<str>],
    at: Option<(u64, Option<u64>)>,
) -> StreamRecord {
    StreamRecord {
        v: STREAM_VERSION,
        at_us: state.snapshot_at_us,
        operation_id: state.id,
        operation_type: state.operation_type.clone(),
        node_id: level.id,
        depth,
        path: path.to_vec(),
        level: level.level_type.clone(),
        name: level.name.clone(),
        status: level.status,
        outcome: level.outcome().to_owned(),
        current: level.current,
        total: level.total,
        unit: level.unit.clone(),
        percentage: level.percentage,
        eta_us: level
            .estimate()
            .filter(|_| level.status == Status::Running)
            .map(|e| e.remaining_us),
        message: level.message.clone(),
        error: level.error().map(|e| e.message.clone()),
        planned: level.planned,
        position: at.map(|(p, _)| p),
        of: at.and_then(|(_, of)| of),
        attempt: level.attempt(),
    }
}
