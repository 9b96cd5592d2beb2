//! History that survives restarts (feature `sqlite`): finished operations in an embedded
//! SQLite file, set up with [`Builder::history_file`](crate::Builder::history_file).
//!
//! * **Writing** is an exporter leaf behind the crate's exporter seam (`crate::export`): when an
//!   operation finishes, its final state goes into a bounded queue ([`QUEUE_CAPACITY`]
//!   records, [`QUEUE_MAX_NODES`] nodes of the trees in it) that the host never waits on; when
//!   it is full the record is dropped and counted
//!   ([`StoreStats::history_file_dropped`](crate::StoreStats::history_file_dropped)). One
//!   thread, `tracing-progress-sqlite`, writes batches of up to 256 records per transaction,
//!   with `tracing`'s `NoSubscriber` as its default so nothing it does reaches a layer. It
//!   is not woken per record (that would cost the instrumented thread a system call per
//!   operation): it looks every 20 ms, sooner when the queue passes a quarter of its bounds
//!   or when the store is flushed; so a finished operation reaches the file within about
//!   20 ms plus the write. On Linux it runs at the lowest priority (nice 19): on a busy core
//!   it takes about 1.5 % from the program's threads, and it is only late, never stopped,
//!   when the machine is saturated (the queue absorbs it). A write that fails is counted
//!   ([`history_file_errors`](crate::StoreStats::history_file_errors)) and reported once
//!   ([`WRITE_WARNING`]); the in-memory history keeps working.
//! * **The file** is in WAL mode with `synchronous=NORMAL` (nothing acknowledged is lost when
//!   the process is killed; a power loss may lose the last transactions) or `FULL`
//!   ([`Builder::history_file_sync_full`](crate::Builder::history_file_sync_full)). Several
//!   processes may write and read one file at once. A new file has 16 KiB pages (SQLite's
//!   default is 4 KiB; an operation's JSON then spans fewer pages, each written with two
//!   system calls to the WAL and again at its checkpoint), or 4 KiB when it is bounded below
//!   4 MiB; the WAL is checkpointed at about 4 MiB (a quarter of a bound on bytes, if less).
//!   A row per operation, keyed by
//!   (run id, operation id) — the run id is random per store, so ids of different processes
//!   never collide — holds the operation as the crate's versioned JSON
//!   ([`ProgressState::to_json`](crate::ProgressState::to_json)) and indexed columns (type,
//!   name, status, times, failure count, host, pid). A schema version table guards the
//!   layout ([`FILE_SCHEMA_VERSION`]): an older file is migrated step by step when opened for
//!   writing, a file of a newer version is refused for writing with a clear
//!   [`BuildError`](crate::BuildError) (and read as far as possible by [`HistoryFile`]).
//!   [`Builder::history_file_max_bytes`](crate::Builder::history_file_max_bytes) bounds its
//!   size.
//! * **Naming operations across runs**: operation ids count per process, so they repeat
//!   across runs. An operation of another run carries its [`RunId`] in
//!   [`ProgressState::run`](crate::ProgressState::run) and is named `ID@RUN`
//!   ([`OperationRef`]); the store's own operations have no `run` and keep their bare ids.
//!   [`Store::get`](crate::Store::get) finds the store's own operations (in memory, then in
//!   the file), [`Store::get_ref`](crate::Store::get_ref) any run's.
//! * **Crashes**: each root that runs 50 ms or more is written as `running` (through the same
//!   queue: the start is noted when the root is first entered, its snapshot taken 50 ms
//!   later), brought up to date every [`CHECKPOINT`] (10 s;
//!   [`Builder::history_file_checkpoint`](crate::Builder::history_file_checkpoint)) while it
//!   runs, and replaced by its final state; shorter operations only get their final row.
//!   A row still `running` whose process is gone (same host, no such pid: checked through
//!   `/proc`, so on Linux) reads as *interrupted*
//!   ([`StoredOperation::interrupted`]); the next store that opens the file for writing also
//!   sets an explicit `interrupted` flag on such rows, so other hosts see it too. An
//!   interrupted operation reads cancelled, reason
//!   [`CancelReason::Interrupted`](crate::CancelReason::Interrupted), it and every level of it
//!   that had not finished (a status filter `cancelled` finds it, `running` does not); it has
//!   no completion time, and its state is its last checkpoint (or the snapshot taken at its
//!   start).
//! * **Reading**: [`Store::history`](crate::Store::history) answers from memory and the file
//!   (filters and limit applied in SQL, served by indexes), newest first, without duplicates
//!   of this store's own operations; [`HistoryFile`] reads a file with no layer (the CLI's
//!   `--db`). Reads of everything ([`Store::write_history_jsonl`](crate::Store::write_history_jsonl)
//!   without a limit, [`Store::export_all_json`](crate::Store::export_all_json),
//!   [`HistoryFile::for_each`], `export --db`) go a page of 256 operations at a time.
//! * **Faults** never reach the program: a write that fails (a lock held past the busy
//!   timeout of 5 s, a full disk, the file deleted or replaced while running) costs those
//!   operations in the file only, counted and reported once ([`WRITE_WARNING`]).
//!
//! * **Retention** (off by default: the file keeps everything):
//!   [`Builder::history_file_retention`](crate::Builder::history_file_retention) bounds the
//!   finished operations the file keeps by count and age, oldest first; the writer thread
//!   prunes when it opens the file and then at most every 10 s or 1,000 writes.
//!   [`Builder::history_file_retain_bytes`](crate::Builder::history_file_retain_bytes) bounds
//!   the bytes its operations take: after each batch it writes, the writer compares the pages
//!   in use (`page_count - freelist_count`, two header reads) with the bound and, past it,
//!   deletes the oldest finished operations down to 90% of it. The file does not shrink: the
//!   pages freed go to SQLite's free list and the next writes reuse them (no `VACUUM`, no
//!   `auto_vacuum`, which would need a rewrite of existing files), so it stops growing at
//!   about the bound. The WAL file beside it comes on top: with the bound, the writer
//!   checkpoints it every quarter of the bound (at least 16, at most 1,000 pages) and
//!   truncates it back to that (`wal_autocheckpoint`, `journal_size_limit`); a long reader
//!   can hold a checkpoint back. Rows of operations still running are never pruned
//!   (interrupted ones are, as finished). Batches go in chunks of at most a quarter of the
//!   bound, room made before each.
//! * **Priors**: at start, the completed nodes of the newest completed operations in the file
//!   (at most 50 operations, 20,000 nodes) feed the priors of estimates, so the first
//!   operations of a new run already have an ETA (basis `history`).
//!
//! * **The end of the program**: the writer thread does not outlive the process, so what is
//!   still queued when it ends would be lost. Dropping the layer (its dispatcher, or the end of
//!   a `with_default` scope) waits for the queue to be written, and on Unix so does a normal
//!   exit (`main` returning, `std::process::exit`: an `atexit` hook, for a global dispatcher,
//!   whose layer is never dropped), each at most [`EXIT_FLUSH`] (500 ms). A kill, an abort or
//!   a crash skips both: what was acknowledged
//!   ([`history_file_written`](crate::StoreStats::history_file_written)) is in the file,
//!   the last ~20 ms may not be. [`Store::flush_history`](crate::Store::flush_history) waits
//!   as long as you choose.

mod reader;
mod schema;
mod writer;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::Store;
use crate::export::Exporter;
use crate::model::{OperationRef, ProgressState, RunId};

use crate::store::HistoryQuery;

pub use reader::READ_WARNING;
pub use schema::FILE_SCHEMA_VERSION;
pub use writer::{CHECKPOINT, EXIT_FLUSH, QUEUE_CAPACITY, QUEUE_MAX_NODES, WRITE_WARNING};

/// Settings of [`Builder::history_file`](crate::Builder::history_file).
#[derive(Clone, Debug, Default)]
pub(crate) struct FileConfig {
    pub(crate) path: PathBuf,
    pub(crate) sync_full: bool,
    pub(crate) retention: Retention,
    /// Hard bound on the file's size (`PRAGMA max_page_count` of the writer).
    pub(crate) max_bytes: Option<u64>,
    /// How long the layer's drop and the process's exit wait for the queue (`None`:
    /// [`EXIT_FLUSH`]).
    pub(crate) exit_flush: Option<std::time::Duration>,
    /// How often a running root's row is brought up to date (`None`: [`CHECKPOINT`]).
    pub(crate) checkpoint: Option<std::time::Duration>,
}

/// How many finished operations the file keeps, for how long, and in how many bytes
/// (`None`: no bound).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Retention {
    pub(crate) max_rows: Option<u64>,
    pub(crate) max_age: Option<std::time::Duration>,
    pub(crate) max_bytes: Option<u64>,
}

/// Who writes: one per store that opened the file.
#[derive(Clone, Debug)]
pub(crate) struct RunInfo {
    pub(crate) run_id: i64,
    pub(crate) host: String,
    pub(crate) pid: i64,
    pub(crate) path: PathBuf,
}

/// Opens the file, registers this run, flags interrupted runs, installs the store's read
/// hook and starts the writer; returns the exporter the layer calls.
pub(crate) fn install(config: &FileConfig, store: &Store) -> Result<Arc<dyn Exporter>, String> {
    let small = [config.max_bytes, config.retention.max_bytes]
        .into_iter()
        .flatten()
        .any(|b| b < schema::SMALL_FILE);
    let page_size = if small { 4096 } else { schema::PAGE_SIZE };
    let conn = schema::open_read_write(&config.path, config.sync_full, page_size)?;
    let shown = config.path.display();
    if let Some(bytes) = config.max_bytes {
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| format!("history_file {shown}: {e}"))?;
        let pages = (writer::to_i64(bytes) / page.max(1)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| format!("history_file {shown}: {e}"))?;
    }
    if let Some(bound) = config.retention.max_bytes {
        // The WAL beside the file would otherwise reach SQLite's 1,000-page checkpoint
        // (~4 MiB) whatever the bound: checkpoint at a quarter of it, truncated back to that.
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| format!("history_file {shown}: {e}"))?;
        let quarter = writer::to_i64(bound / 4);
        let pages = (quarter / page.max(1)).clamp(16, 1_000);
        conn.query_row(&format!("PRAGMA wal_autocheckpoint = {pages}"), [], |_| {
            Ok(())
        })
        .and_then(|()| {
            conn.query_row(
                &format!("PRAGMA journal_size_limit = {}", pages * page),
                [],
                |_| Ok(()),
            )
        })
        .map_err(|e| format!("history_file {shown}: {e}"))?;
    } else {
        // SQLite checkpoints at 1,000 pages whatever their size: with 16 KiB pages that
        // would be a 16 MiB WAL. Kept at about 4 MiB, as with 4 KiB pages.
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| format!("history_file {shown}: {e}"))?;
        let pages = ((4 << 20) / page.max(512)).clamp(16, 1_000);
        conn.query_row(&format!("PRAGMA wal_autocheckpoint = {pages}"), [], |_| {
            Ok(())
        })
        .map_err(|e| format!("history_file {shown}: {e}"))?;
    }
    let run = RunInfo {
        run_id: new_run_id(),
        host: host_name(),
        pid: i64::from(std::process::id()),
        path: config.path.clone(),
    };
    let setup = || -> rusqlite::Result<()> {
        conn.execute(
            "INSERT INTO runs (run_id, host, pid, started_us, crate_version) VALUES (?1, ?2, ?3, ?4, ?5)",
            (
                run.run_id,
                &run.host,
                run.pid,
                now_us(),
                env!("CARGO_PKG_VERSION"),
            ),
        )?;
        for dead in reader::dead_runs(&conn)? {
            conn.execute(
                "UPDATE operations SET interrupted = 1 WHERE run_id = ?1 AND status = 'running'",
                [dead],
            )?;
        }
        Ok(())
    };
    setup().map_err(|e| format!("history_file {shown}: {e}"))?;
    let (read, _) = schema::open_read_only(&config.path)?;
    // Estimates of this run start from the durations of the last runs. A file that cannot be
    // read for this only costs the head start.
    if let Ok(mut durations) = reader::prior_durations(&read) {
        store.seed_priors(&mut durations);
    }
    let counters = Arc::new(writer::Counters::default());
    if let Some(wait) = config.exit_flush {
        counters.set_exit_flush(wait);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
    writer::spawn(
        conn,
        rx,
        counters.clone(),
        run.clone(),
        store.downgrade(),
        config.retention,
        config.checkpoint.unwrap_or(CHECKPOINT),
    )?;
    store.set_history_source(Arc::new(reader::FileSource {
        conn: Mutex::new(read),
        run: RunId::from_u64(u64::try_from(run.run_id).unwrap_or(0)),
        counters: counters.clone(),
        store: store.downgrade(),
        path: config.path.clone(),
    }));
    Ok(Arc::new(writer::SqliteExporter::new(tx, counters)))
}

/// One operation read from a history file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoredOperation {
    /// The operation as it was written: its final state, or for an interrupted one the
    /// snapshot taken when its root started, its unfinished levels cancelled
    /// ([`CancelReason::Interrupted`](crate::CancelReason::Interrupted)). Its
    /// [`run`](ProgressState::run) is set.
    pub state: Arc<ProgressState>,
    /// The run (one store in one process) that wrote it; operation ids repeat across runs.
    pub run: RunId,
    /// Host name of the writing process.
    pub host: String,
    /// Process id of the writing process.
    pub pid: u32,
    /// The process ended (was killed, crashed) while the operation was running.
    pub interrupted: bool,
}

/// Why a history file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFileError(String);

impl fmt::Display for HistoryFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HistoryFileError {}

/// A history file opened read-only, with no layer and no server (what `tracing-progress
/// history --db FILE` uses). It may be read while processes write it.
///
/// ```no_run
/// use tracing_progress::HistoryQuery;
/// use tracing_progress::sqlite::HistoryFile;
/// # fn docs() -> Result<(), tracing_progress::sqlite::HistoryFileError> {
/// let file = HistoryFile::open("progress.db")?;
/// for op in file.query(&HistoryQuery::new().limit(10))? {
///     let status = if op.interrupted { "interrupted" } else { op.state.status.as_str() };
///     println!("{} {} {status}", op.state.id, op.state.name);
/// }
/// # Ok(()) }
/// ```
pub struct HistoryFile {
    conn: Mutex<Connection>,
    path: PathBuf,
    version: i64,
}

impl fmt::Debug for HistoryFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

impl HistoryFile {
    /// Opens an existing history file read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, HistoryFileError> {
        let path = path.as_ref();
        let (conn, version) = schema::open_read_only(path).map_err(HistoryFileError)?;
        Ok(HistoryFile {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            version,
        })
    }

    /// The file's schema version ([`FILE_SCHEMA_VERSION`] or, read as far as possible, newer).
    pub fn schema_version(&self) -> i64 {
        self.version
    }

    /// Finished and interrupted operations matching `query`, newest first by completion (an
    /// interrupted one by its start).
    pub fn query(&self, query: &HistoryQuery) -> Result<Vec<StoredOperation>, HistoryFileError> {
        reader::query(&self.conn.lock(), query).map_err(|e| self.error(&e))
    }

    /// The stored operations `r` names: with its run, at most one; a bare id, every run's
    /// operation with this id (ids repeat across runs), newest first.
    pub fn get(
        &self,
        r: impl Into<OperationRef>,
    ) -> Result<Vec<StoredOperation>, HistoryFileError> {
        reader::get(&self.conn.lock(), r.into()).map_err(|e| self.error(&e))
    }

    /// Calls `f` with every operation matching `query` (its limit ignored), oldest first,
    /// reading the file a page at a time: memory stays bounded whatever the file's size.
    /// Returns how many; stops at the first error of `f`.
    pub fn for_each<E: From<HistoryFileError>>(
        &self,
        query: &HistoryQuery,
        mut f: impl FnMut(&StoredOperation) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut after = None;
        let mut count = 0;
        loop {
            let (page, next) = reader::page(&self.conn.lock(), query, false, after, PAGE)
                .map_err(|e| self.error(&e))?;
            for (_, op) in &page {
                f(op)?;
                count += 1;
            }
            match next {
                Some(k) => after = Some(k),
                None => return Ok(count),
            }
        }
    }

    fn error(&self, e: &rusqlite::Error) -> HistoryFileError {
        HistoryFileError(format!("history file {}: {e}", self.path.display()))
    }
}

/// Operations one page of [`HistoryFile::for_each`] holds.
const PAGE: usize = 256;

/// Wall-clock time, µs since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    writer::to_i64(crate::store::system_time_to_us(std::time::SystemTime::now()))
}

/// A random positive id per store: the process's random hash keys, time and pid.
fn new_run_id() -> i64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::store::system_time_to_us(std::time::SystemTime::now()));
    h.write_u32(std::process::id());
    (h.finish() >> 1) as i64
}

/// This machine's name, as well as the platform tells it without extra dependencies.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default()
}

/// Whether a process of this machine exists; `None` where that cannot be told (no `/proc`).
pub(crate) fn process_alive(pid: i64) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie (killed, not yet reaped) is gone too.
        Ok(stat) => Some(
            stat.rsplit_once(')')
                .is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        ),
        Err(_) => Some(false),
    }
}
