//! The exporter leaf and its writer thread: records go through a bounded queue (the host never
//! waits) to one thread that writes them in short transactions.
//!
//! The instrumented thread does one channel send per record and nothing else: the writer is
//! not woken per record (a wake-up is a futex syscall on the sender's side) but wakes every
//! [`BATCH_INTERVAL`], when the queue passes a quarter of its bounds, or when the store is
//! flushed, and then drains the queue in batches. On Linux it runs at a lower priority
//! ([`WRITER_NICE`]), so on a busy machine it yields to the program's own threads; the queue
//! (bounded, counted drops) absorbs the delay. What that buys in the program's wall time is
//! small next to the noise of a shared machine (`benches/sqlite.rs`): the writer's CPU per
//! operation, JSON encoding and SQLite's WAL writes and checkpoints, is what competes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing_core::span::Id;

use super::{Retention, RunInfo};
use crate::Store;
use crate::export::{Exporter, NodeRef};
use crate::model::{OperationId, ProgressState};
use crate::store::{SourceStats, StoreInner};

/// Records the history file's queue holds before new ones are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 4_096;
/// Most nodes (of the trees waiting in the queue) held before new records are dropped: a
/// burst of large operations cannot hold much memory beyond what history keeps anyway.
pub const QUEUE_MAX_NODES: u64 = 250_000;
/// Most records written in one transaction.
const MAX_BATCH: usize = 256;
/// How long records wait in the queue at most before the writer looks (unless woken sooner).
const BATCH_INTERVAL: Duration = Duration::from_millis(20);
/// How much the writer thread's nice value is raised on Linux (the process's own threads keep
/// theirs): to the lowest priority, 19. Next to a busy thread of nice 0 on the same core, the
/// scheduler's weights (15 against 1,024) give the writer about 1.5 % of that core, where
/// nice 10 (110 against 1,024) gave it 10 %: on a loaded machine that share is what the
/// program's wall time loses. An idle core it still gets whole, and a starved writer is only
/// late (the queue absorbs it, drops are counted), never stopped: unlike `SCHED_IDLE`, which
/// an unprivileged thread cannot leave again.
#[cfg(target_os = "linux")]
const WRITER_NICE: i32 = 19;

/// How long a root runs before its start is written: most operations are shorter, and then
/// need no row for their start, nor a snapshot of their tree taken under their lock while
/// they run. An operation killed in its first 50 ms leaves no row.
const START_DELAY: Duration = Duration::from_millis(50);
/// Most starts waiting; past it the oldest are written at once.
const MAX_WAITING: usize = 65_536;

/// How often the row of a running root is brought up to date by default (see
/// [`Builder::history_file_checkpoint`](crate::Builder::history_file_checkpoint)): what an
/// operation interrupted by a crash shows is at most this old. A root of more than 20,000
/// nodes waits 0.5 ms more per node (a snapshot and its JSON each time).
pub const CHECKPOINT: Duration = Duration::from_secs(10);

/// How long the end of the layer waits for the records still queued to be written: when the
/// layer is dropped (its dispatcher dropped, a `with_default` scope ended) and, on Unix, when
/// the process exits normally (`main` returns, `std::process::exit`). Without it a program
/// that never calls [`Store::flush_history`](crate::Store::flush_history) lost the operations
/// of its last batch interval (~20 ms). Bounded: a writer stuck on a lock or starved of CPU
/// costs the exit this long at most, and the records it did not reach are lost as before.
/// [`Builder::history_file_exit_flush`](crate::Builder::history_file_exit_flush) sets another
/// bound (the writer runs at the lowest priority, so on a machine whose cores are all busy a
/// big queue can take longer than this).
pub const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// [`SetupWarning::code`](crate::SetupWarning::code) of a history file that could not be
/// written (disk full, permissions, a lock held too long); the in-memory history keeps working.
pub const WRITE_WARNING: &str = "sqlite.write";

/// What the writer thread is told.
pub(crate) enum Record {
    /// A root was entered: store its running state, so a crash leaves a trace.
    Started(OperationId),
    /// An operation finished: store its final state.
    Finished(Arc<ProgressState>),
}

impl Record {
    /// Nodes it holds (for the queue's bound).
    fn nodes(&self) -> u64 {
        match self {
            Record::Started(_) => 1,
            Record::Finished(s) => s.metrics.nodes_retained.max(1),
        }
    }
}

/// Counters shared by the exporter, the writer thread and the store's stats.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// Records that needed no row (a start whose operation was gone or finished).
    skipped: AtomicU64,
    /// Nodes of the records in the queue.
    queued_nodes: AtomicU64,
    /// The writer thread, to wake it before its interval is over.
    writer: std::sync::OnceLock<std::thread::Thread>,
    /// How long dropping the layer or exiting waits for the queue, in ms (0: [`EXIT_FLUSH`]).
    exit_flush_ms: AtomicU64,
}

impl Counters {
    /// Sets how long the layer's drop and the process's exit wait for the queue.
    pub(crate) fn set_exit_flush(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.exit_flush_ms.store(ms, Ordering::Relaxed);
    }

    fn exit_flush(&self) -> Duration {
        match self.exit_flush_ms.load(Ordering::Relaxed) {
            0 => EXIT_FLUSH,
            ms => Duration::from_millis(ms),
        }
    }

    pub(crate) fn stats(&self) -> SourceStats {
        SourceStats {
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn done(&self) -> u64 {
        self.written.load(Ordering::Acquire)
            + self.dropped.load(Ordering::Acquire)
            + self.errors.load(Ordering::Acquire)
            + self.skipped.load(Ordering::Acquire)
    }

    /// Wakes the writer thread (cheap when it is awake: `unpark` is an atomic swap then).
    fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Waits until every queued record is accounted for; false on timeout.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.done() >= self.queued.load(Ordering::Acquire) {
                return true;
            }
            self.wake();
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The exporter the layer calls: it only enqueues.
pub(crate) struct SqliteExporter {
    queue: SyncSender<Record>,
    counters: Arc<Counters>,
}

impl SqliteExporter {
    pub(crate) fn new(queue: SyncSender<Record>, counters: Arc<Counters>) -> Self {
        SqliteExporter { queue, counters }
    }

    fn send(&self, record: Record) {
        let c = &self.counters;
        let sent = c.queued.fetch_add(1, Ordering::AcqRel);
        let nodes = record.nodes();
        let queued_nodes = c.queued_nodes.fetch_add(nodes, Ordering::AcqRel) + nodes;
        if queued_nodes > QUEUE_MAX_NODES {
            c.queued_nodes.fetch_sub(nodes, Ordering::AcqRel);
            c.dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        match self.queue.try_send(record) {
            Ok(()) => {
                // A filling queue wakes the writer before its interval is over. Its length
                // (four counters the writer updates) is looked at every 64th record only.
                if queued_nodes > QUEUE_MAX_NODES / 4
                    || (sent.is_multiple_of(64)
                        && sent.saturating_sub(c.done()) > (QUEUE_CAPACITY / 4) as u64)
                {
                    c.wake();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                c.queued_nodes.fetch_sub(nodes, Ordering::AcqRel);
                c.dropped.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for SqliteExporter {
    fn drop(&mut self) {
        // The layer is going: what it queued is written first (bounded), so a program that
        // drops its subscriber loses nothing. The writer ends once the queue is drained.
        self.counters.flush(self.counters.exit_flush());
    }
}

/// The writers of this process, for the flush at exit (a global dispatcher's layer is never
/// dropped).
static LIVE: parking_lot::Mutex<Vec<Weak<Counters>>> = parking_lot::Mutex::new(Vec::new());

/// Notes a writer for the flush at exit, installing that flush once per process.
fn flush_at_exit(counters: &Arc<Counters>) {
    let mut live = LIVE.lock();
    live.retain(|c| c.strong_count() > 0);
    live.push(Arc::downgrade(counters));
    drop(live);
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        // SAFETY: `atexit` only stores the function pointer; `at_exit` is a plain `extern
        // "C"` function that neither panics nor unwinds.
        INSTALLED.call_once(|| unsafe {
            libc::atexit(at_exit);
        });
    }
}

/// Runs when the process exits normally: every live writer gets what is left of
/// [`EXIT_FLUSH`] to write its queue. Never blocks on a lock (`try_lock`): a thread holding
/// the list while the process exits only costs the flush.
#[cfg(unix)]
extern "C" fn at_exit() {
    let live: Vec<Arc<Counters>> = match LIVE.try_lock() {
        Some(l) => l.iter().filter_map(Weak::upgrade).collect(),
        None => return,
    };
    let wait = live
        .iter()
        .map(|c| c.exit_flush())
        .max()
        .unwrap_or(EXIT_FLUSH);
    let deadline = Instant::now() + wait;
    for counters in live {
        counters.flush(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Exporter for SqliteExporter {
    fn node_started(&self, _span: &Id, node: NodeRef) {
        if node.is_root {
            self.send(Record::Started(node.operation_id));
        }
    }

    fn operation_finished(&self, state: &Arc<ProgressState>) {
        self.send(Record::Finished(state.clone()));
    }
}

/// Starts the writer thread; it ends when the exporter (the layer) is dropped and the queue
/// is drained.
pub(crate) fn spawn(
    conn: Connection,
    queue: Receiver<Record>,
    counters: Arc<Counters>,
    run: RunInfo,
    store: Weak<StoreInner>,
    retention: Retention,
    checkpoint: Duration,
) -> Result<(), String> {
    let identity = file_identity(&run.path);
    let mut writer = Writer {
        conn,
        counters,
        identity,
        run,
        store,
        retention,
        pending: VecDeque::new(),
        waiting: std::collections::HashSet::new(),
        checkpoints: BinaryHeap::new(),
        running: std::collections::HashSet::new(),
        checkpoint,
        last_prune: Instant::now(),
        since_prune: 0,
        row_cost: retention.max_bytes.map(|_| 0.0),
        json: Vec::new(),
    };
    // The first pruning is part of opening the file (it emits no events either).
    writer.prune();
    let counters = writer.counters.clone();
    let handle = std::thread::Builder::new()
        .name("tracing-progress-sqlite".into())
        .spawn(move || {
            lower_priority();
            // Nothing this thread does may reach the progress layer (or any other).
            let none = tracing_core::Dispatch::new(tracing::subscriber::NoSubscriber::default());
            tracing_core::dispatcher::with_default(&none, || writer.run(&queue));
        })
        .map_err(|e| format!("history_file: cannot start the writer thread: {e}"))?;
    let _ = counters.writer.set(handle.thread().clone());
    flush_at_exit(&counters);
    Ok(())
}

/// Lowers the calling thread's priority by [`WRITER_NICE`] (capped at 19 by the kernel). On
/// Linux a nice value belongs to one thread (`nice` acts on the caller alone); elsewhere it
/// would act on the whole process, so nothing is done. A refusal is harmless.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `nice` has no preconditions; it reports failure through its return value and
    // errno, which nothing here needs.
    unsafe {
        libc::nice(WRITER_NICE);
    }
}

struct Writer {
    conn: Connection,
    counters: Arc<Counters>,
    /// The file opened (device, inode): when the path names another file or none, the one
    /// written is gone.
    identity: Option<(u64, u64)>,
    run: RunInfo,
    store: Weak<StoreInner>,
    retention: Retention,
    /// Roots started and not finished yet, with when the writer heard of them.
    pending: VecDeque<(OperationId, Instant)>,
    /// The ids of `pending` whose start still needs writing (not finished meanwhile).
    waiting: std::collections::HashSet<OperationId>,
    /// Roots with a running row, each with when it is brought up to date next.
    checkpoints: BinaryHeap<Reverse<(Instant, OperationId)>>,
    /// The ids in `checkpoints` not finished yet.
    running: std::collections::HashSet<OperationId>,
    /// See [`CHECKPOINT`].
    checkpoint: Duration,
    last_prune: Instant,
    since_prune: u64,
    /// With a bound on bytes: the bytes of pages a row took in the last writes (0 until
    /// measured).
    row_cost: Option<f64>,
    /// The JSON of the row being written (kept: its capacity is reused).
    json: Vec<u8>,
}

/// Pruning runs at most this often, or after [`PRUNE_WRITES`] writes.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
const PRUNE_WRITES: u64 = 1_000;

/// Upsert of a final state.
const UPSERT_FINISHED: &str = "INSERT INTO operations (run_id, op_id, operation_type, name, \
    status, with_failures, started_us, completed_us, finished_us, duration_us, failures, host, \
    pid, interrupted, state_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0, ?14) \
    ON CONFLICT (run_id, op_id) DO UPDATE SET operation_type = excluded.operation_type, \
    name = excluded.name, status = excluded.status, with_failures = excluded.with_failures, \
    started_us = excluded.started_us, completed_us = excluded.completed_us, \
    finished_us = excluded.finished_us, duration_us = excluded.duration_us, \
    failures = excluded.failures, interrupted = 0, state_json = excluded.state_json";

/// A running root's row brought up to date (never over its final state). It takes the same
/// 14 parameters as the two others; those it does not use are bound and ignored.
const UPDATE_RUNNING: &str = "UPDATE operations SET name = ?4, with_failures = ?6, \
    finished_us = ?9, failures = ?11, state_json = ?14 \
    WHERE run_id = ?1 AND op_id = ?2 AND status = 'running'";

/// What a row written is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowKind {
    /// An operation's final state (replaces its running row).
    Final,
    /// A running root's first row.
    Started,
    /// A running root's row brought up to date.
    Checkpoint,
}

/// Insert of a running root (never overwrites what is there).
const INSERT_STARTED: &str = "INSERT INTO operations (run_id, op_id, operation_type, name, \
    status, with_failures, started_us, completed_us, finished_us, duration_us, failures, host, \
    pid, interrupted, state_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0, ?14) \
    ON CONFLICT (run_id, op_id) DO NOTHING";

impl Writer {
    /// Writes what comes, in batches; wakes up every [`BATCH_INTERVAL`] (or when woken), and
    /// for starts that are due.
    fn run(mut self, queue: &Receiver<Record>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            // With starts waiting or checkpoints due, wake up when the first is.
            let start_due = self.pending.front().map(|(_, at)| *at + START_DELAY);
            let checkpoint_due = self.checkpoints.peek().map(|Reverse((at, _))| *at);
            let wait =
                start_due
                    .into_iter()
                    .chain(checkpoint_due)
                    .min()
                    .map_or(BATCH_INTERVAL, |due| {
                        due.saturating_duration_since(Instant::now())
                            .min(BATCH_INTERVAL)
                    });
            std::thread::park_timeout(wait);
            // Drain what came meanwhile, a batch per transaction; starts due are written
            // with the first batch (or alone when nothing came).
            loop {
                let mut gone = false;
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            gone = true;
                            break;
                        }
                    }
                }
                let full = batch.len() == MAX_BATCH;
                self.write(&mut batch);
                if self.since_prune >= PRUNE_WRITES || self.last_prune.elapsed() >= PRUNE_INTERVAL {
                    self.prune();
                }
                if gone {
                    // The layer is gone: so are its running operations.
                    let left = self.waiting.len() as u64;
                    self.pending.clear();
                    self.waiting.clear();
                    self.checkpoints.clear();
                    self.running.clear();
                    self.counters.skipped.fetch_add(left, Ordering::AcqRel);
                    return;
                }
                if !full {
                    break;
                }
            }
        }
    }

    /// Deletes finished operations beyond the retention bounds (a failure is counted as a
    /// write error and reported once).
    fn prune(&mut self) {
        self.last_prune = Instant::now();
        self.since_prune = 0;
        let Retention {
            max_rows, max_age, ..
        } = self.retention;
        self.prune_bytes(0);
        if max_rows.is_none() && max_age.is_none() {
            return;
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            if let Some(age) = max_age {
                let age_us = to_i64(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
                tx.execute(
                    "DELETE FROM operations WHERE (status != 'running' OR interrupted = 1) \
                     AND finished_us < ?1",
                    [super::now_us().saturating_sub(age_us)],
                )?;
            }
            if let Some(rows) = max_rows {
                tx.execute(
                    "DELETE FROM operations WHERE (run_id, op_id) IN (SELECT run_id, op_id \
                     FROM operations WHERE status != 'running' OR interrupted = 1 \
                     ORDER BY finished_us DESC LIMIT -1 OFFSET ?1)",
                    [to_i64(rows)],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            self.prune_failed(&e);
        }
    }

    /// With a bound on bytes: when the pages in use and `incoming` rows would pass it,
    /// deletes the oldest finished operations to make room (their pages go to the free
    /// list, reused by the next writes). Cheap when under the bound: a few header reads.
    fn prune_bytes(&mut self, incoming: u64) {
        let Some(bound) = self.retention.max_bytes else {
            return;
        };
        let cost = self.row_cost.unwrap_or(0.0);
        if let Err(e) = prune_to_bytes(&mut self.conn, bound, incoming, cost) {
            self.prune_failed(&e);
        }
    }

    /// Counted as a write error and reported once.
    fn prune_failed(&self, e: &rusqlite::Error) {
        if let Some(store) = self.store.upgrade().map(Store::from_inner) {
            store.warn_once(
                WRITE_WARNING,
                &format!(
                    "cannot prune the history file {}: {e}",
                    self.run.path.display()
                ),
            );
        }
        // Counted after the warning: a flush that sees the count sees the warning too.
        self.counters.errors.fetch_add(1, Ordering::AcqRel);
    }

    /// Writes one batch in one transaction (and empties it).
    fn write(&mut self, batch: &mut Vec<Record>) {
        // Resolve starts outside the transaction (a snapshot of the running root).
        let store = self.store.upgrade().map(Store::from_inner);
        let nodes: u64 = batch.iter().map(Record::nodes).sum();
        self.counters
            .queued_nodes
            .fetch_sub(nodes, Ordering::AcqRel);
        let now = Instant::now();
        let mut rows: Vec<(RowKind, Arc<ProgressState>)> = Vec::with_capacity(batch.len());
        for record in batch.drain(..) {
            match record {
                Record::Started(id) => {
                    self.pending.push_back((id, now));
                    self.waiting.insert(id);
                }
                Record::Finished(state) => {
                    // A start still waiting needs no row of its own.
                    if self.waiting.remove(&state.id) {
                        self.counters.skipped.fetch_add(1, Ordering::AcqRel);
                    }
                    self.running.remove(&state.id);
                    rows.push((RowKind::Final, state));
                }
            }
        }
        // Starts that waited long enough (or too many waiting): a snapshot of the running
        // root. One that finished meanwhile was accounted for with its finish.
        while let Some(&(id, at)) = self.pending.front() {
            if now < at + START_DELAY && self.pending.len() <= MAX_WAITING {
                break;
            }
            self.pending.pop_front();
            if !self.waiting.remove(&id) {
                continue;
            }
            match store.as_ref().and_then(|s| s.get_in_memory(id)) {
                Some(state) if !state.status.is_finished() => {
                    self.running.insert(id);
                    self.checkpoints
                        .push(Reverse((now + self.checkpoint_after(&state), id)));
                    rows.push((RowKind::Started, state));
                }
                _ => {
                    self.counters.skipped.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        // Running roots whose row is due to be brought up to date.
        while let Some(&Reverse((at, id))) = self.checkpoints.peek() {
            if now < at {
                break;
            }
            self.checkpoints.pop();
            if !self.running.contains(&id) {
                continue;
            }
            match store.as_ref().and_then(|s| s.get_in_memory(id)) {
                Some(state) if !state.status.is_finished() => {
                    self.checkpoints
                        .push(Reverse((now + self.checkpoint_after(&state), id)));
                    rows.push((RowKind::Checkpoint, state));
                }
                // Finished: its final row is on its way (or was dropped with the queue).
                _ => {
                    self.running.remove(&id);
                }
            }
        }
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        if self.identity.is_some() && file_identity(&self.run.path) != self.identity {
            // Writing on would only fill a file no one can open any more.
            if let Some(store) = store {
                store.warn_once(
                    WRITE_WARNING,
                    &format!(
                        "the history file {} was deleted or replaced while running: operations \
                         are no longer written to it (the in-memory history keeps working; \
                         the next start creates a new file)",
                        self.run.path.display()
                    ),
                );
            }
            self.counters.errors.fetch_add(n, Ordering::AcqRel);
            return;
        }
        // With a bound on bytes, a batch goes in chunks of at most a quarter of it, room made
        // before each: the file does not grow by a big batch past the bound.
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let (part, tail) = rest.split_at(self.chunk_len(rest.len()));
            self.write_chunk(part, store.as_ref());
            rest = tail;
        }
    }

    /// How long until the row of running `state` is brought up to date again.
    fn checkpoint_after(&self, state: &ProgressState) -> Duration {
        let big = state.metrics.nodes_retained.saturating_sub(20_000);
        self.checkpoint
            .max(Duration::from_micros(big.saturating_mul(500)))
    }

    /// Rows of the next chunk, out of `left`.
    fn chunk_len(&self, left: usize) -> usize {
        let Some(bound) = self.retention.max_bytes else {
            return left;
        };
        let per_row = match self.row_cost {
            Some(c) if c > 0.0 => c,
            // Not measured yet: one row, whose commit measures what a row costs (a few, when
            // small rows fit in pages already in use). A guess, or the rows in the file
            // (maybe only small start records), could be a tenth of the real size, and the
            // file, whose pages are reused but never given back, would keep a first batch's
            // overshoot for good.
            _ => return 1,
        };
        ((bound / 4) as f64 / per_row).clamp(1.0, left as f64) as usize
    }

    fn write_chunk(&mut self, rows: &[(RowKind, Arc<ProgressState>)], store: Option<&Store>) {
        let n = rows.len() as u64;
        self.prune_bytes(n);
        match self.commit(rows) {
            Ok(()) => {}
            Err(e) if n > 1 && e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) => {
                // A full file fails the whole transaction: write what still fits one row at
                // a time, up to the first row that does not (the rest would not fit either).
                for (i, row) in rows.iter().enumerate() {
                    if let Err(e) = self.commit(std::slice::from_ref(row)) {
                        self.failed(n - i as u64, &e, store);
                        break;
                    }
                }
            }
            Err(e) => self.failed(n, &e, store),
        }
    }

    /// Writes `rows` in one transaction and counts them written once it committed.
    fn commit(&mut self, rows: &[(RowKind, Arc<ProgressState>)]) -> rusqlite::Result<()> {
        let n = rows.len() as u64;
        let before = self
            .row_cost
            .is_some()
            .then(|| used_bytes(&self.conn).ok())
            .flatten();
        let written = write_rows(&mut self.conn, &self.run, rows, &mut self.json);
        if self.json.capacity() > 4 << 20 {
            // One huge operation need not keep its buffer.
            self.json = Vec::new();
        }
        written?;
        // What rows really cost in pages (overflow pages, index entries), smoothed.
        if let (Some(before), Ok(after)) = (before, used_bytes(&self.conn))
            && after > before
        {
            let seen = (after - before) as f64 / n as f64;
            self.row_cost = self
                .row_cost
                .map(|c| if c == 0.0 { seen } else { 0.7 * c + 0.3 * seen });
        }
        self.since_prune += n;
        // Counted after the commit: `history_file_written` is an acknowledgement.
        self.counters.written.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// `n` rows lost to `e`: counted, reported once.
    fn failed(&self, n: u64, e: &rusqlite::Error, store: Option<&Store>) {
        if let Some(store) = store {
            store.warn_once(
                WRITE_WARNING,
                &format!(
                    "cannot write the history file {}: {} (the in-memory history keeps \
                     working; StoreStats::history_file_errors counts the losses)",
                    self.run.path.display(),
                    explain(e)
                ),
            );
        }
        // Counted after the warning: a flush that sees the count sees the warning too.
        self.counters.errors.fetch_add(n, Ordering::AcqRel);
    }
}

/// Writes `rows` in one transaction; `json` is a buffer kept between calls (an operation's JSON
/// is encoded into it, not into a new string grown by doubling).
fn write_rows(
    conn: &mut Connection,
    run: &RunInfo,
    rows: &[(RowKind, Arc<ProgressState>)],
    json: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut finished = tx.prepare_cached(UPSERT_FINISHED)?;
        let mut started = tx.prepare_cached(INSERT_STARTED)?;
        let mut update = tx.prepare_cached(UPDATE_RUNNING)?;
        for (kind, s) in rows {
            json.clear();
            // Serializing this plain data cannot fail (all map keys are strings), and
            // serde_json writes UTF-8 only.
            if serde_json::to_writer(&mut *json, &**s).is_err() {
                json.clear();
            }
            let text = std::str::from_utf8(json).unwrap_or_default();
            let completed = s.completed_at_us.map(to_i64);
            let begun = s.started_at_us.map(to_i64);
            let params = rusqlite::params![
                run.run_id,
                to_i64(s.id.as_u64()),
                &*s.operation_type,
                &*s.name,
                s.status.as_str(),
                s.with_failures,
                begun,
                completed,
                to_i64(s.completed_at_us.unwrap_or(s.snapshot_at_us)),
                completed.zip(begun).map(|(c, b)| c.saturating_sub(b)),
                to_i64(s.metrics.nodes_failed),
                run.host,
                run.pid,
                text,
            ];
            match kind {
                RowKind::Final => finished.execute(params)?,
                RowKind::Started => started.execute(params)?,
                RowKind::Checkpoint => update.execute(params)?,
            };
        }
    }
    tx.commit()
}

/// Bytes of the database's pages in use (the free list excluded).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let pages = pragma("page_count")?.saturating_sub(pragma("freelist_count")?);
    Ok(u64::try_from(pages.saturating_mul(pragma("page_size")?)).unwrap_or(0))
}

/// Size of a row as the newest 64 rows suggest: the JSON plus the key, columns and six index
/// entries.
fn row_bytes(conn: &Connection) -> rusqlite::Result<f64> {
    conn.query_row(
        "SELECT avg(length(state_json) + length(name) * 5 + 250) FROM \
         (SELECT state_json, name FROM operations ORDER BY finished_us DESC LIMIT 64)",
        [],
        |r| Ok(r.get::<_, Option<f64>>(0)?.unwrap_or(1_000.0).max(1.0)),
    )
}

/// When the pages in use plus `incoming` rows would pass `bound`, deletes the oldest
/// finished operations down to 90% of it minus the incoming rows. A row's cost is
/// `seen_cost`, what the last writes took in pages, or before any the newest rows' sizes; a few
/// rounds correct the count deleted (a deleted row frees its pages only when they empty).
fn prune_to_bytes(
    conn: &mut Connection,
    bound: u64,
    incoming: u64,
    seen_cost: f64,
) -> rusqlite::Result<()> {
    let used = used_bytes(conn)?;
    if used <= bound && incoming == 0 {
        return Ok(());
    }
    // What writes measured, else the newest rows' sizes (a read of their JSON).
    let per_row = if seen_cost > 0.0 {
        seen_cost
    } else {
        row_bytes(conn)?
    };
    let incoming = (incoming as f64 * per_row) as u64;
    if used + incoming <= bound {
        return Ok(());
    }
    let target = (bound / 10 * 9).saturating_sub(incoming);
    // Short transactions (other processes wait on the write lock): at most 32 of 2,000
    // rows per batch written; what is left goes with the next batch.
    for _ in 0..32 {
        let used = used_bytes(conn)?;
        if used <= target {
            break;
        }
        let rows = ((used - target) as f64 / per_row)
            .ceil()
            .clamp(1.0, 2_000.0) as i64;
        let tx = conn.transaction()?;
        let deleted = tx.execute(
            "DELETE FROM operations WHERE rowid IN (SELECT rowid FROM operations \
             WHERE status != 'running' OR interrupted = 1 ORDER BY finished_us LIMIT ?1)",
            [rows],
        )?;
        tx.commit()?;
        if deleted == 0 {
            // Only running operations left: kept whatever their size.
            break;
        }
    }
    Ok(())
}

/// The error, with what it means here for the faults one meets in practice.
fn explain(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => format!(
            "{e}: another process held the file's write lock for longer than the busy \
             timeout ({} s)",
            super::schema::BUSY_TIMEOUT.as_secs()
        ),
        Some(rusqlite::ErrorCode::DiskFull) => {
            format!("{e}: the disk is full, or the file reached history_file_max_bytes")
        }
        Some(rusqlite::ErrorCode::ReadOnly) => format!("{e}: the file cannot be written"),
        _ => e.to_string(),
    }
}

/// (device, inode) of the file at `path`, where the platform tells it.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Weak};

    use tracing_subscriber::layer::SubscriberExt;

    use super::{Counters, Record, Writer};
    use crate::sqlite::{Retention, RunInfo};

    /// Finished 21-node operations from an in-memory store (~8 KB of JSON each).
    fn finished(n: usize) -> Vec<Arc<crate::ProgressState>> {
        let (layer, store) = crate::Builder::new()
            .estimate_interval(None)
            .build()
            .unwrap();
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            for i in 0..n {
                let op = tracing::info_span!("op", progress.level = "op", progress.name = %i);
                let _g = op.enter();
                for j in 0..20 {
                    let _c = tracing::info_span!("step", progress.level = "step", n = j).entered();
                }
            }
        });
        store.history(&crate::HistoryQuery::new().limit(n))
    }

    /// A writer's first batch, before it measured a row of this file: a guess of a row's
    /// size could be a tenth of the truth and commit far past the bound, and the file keeps
    /// its pages. (A held-up writer, e.g. at nice 19 on a busy machine, gets such a batch.)
    #[test]
    fn a_big_first_batch_stays_within_the_byte_bound() {
        const BOUND: u64 = 512 * 1024;
        let dir = std::env::temp_dir().join(format!("tp-writer-first-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.db");
        let _ = std::fs::remove_file(&path);
        let conn = crate::sqlite::schema::open_read_write(&path, false, 4096).unwrap();
        let retention = Retention {
            max_rows: None,
            max_age: None,
            max_bytes: Some(BOUND),
        };
        let mut writer = Writer {
            conn,
            counters: Arc::new(Counters::default()),
            identity: None,
            run: RunInfo {
                run_id: 1,
                host: "test".into(),
                pid: 1,
                path: path.clone(),
            },
            store: Weak::new(),
            retention,
            pending: Default::default(),
            waiting: Default::default(),
            checkpoints: Default::default(),
            running: Default::default(),
            checkpoint: super::CHECKPOINT,
            last_prune: std::time::Instant::now(),
            since_prune: 0,
            row_cost: Some(0.0),
            json: Vec::new(),
        };
        let states = finished(250);
        assert_eq!(states.len(), 250);
        let mut batch: Vec<Record> = states.into_iter().map(Record::Finished).collect();
        writer.write(&mut batch);
        let pragma = |name: &str| -> i64 {
            writer
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        let size = (pragma("page_count") * pragma("page_size")) as u64;
        assert!(
            size <= BOUND + BOUND / 4,
            "{size} bytes against a bound of {BOUND}"
        );
        assert_eq!(
            writer
                .counters
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
