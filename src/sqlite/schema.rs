//! The file's tables, its schema version and the migrations between versions.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

/// Version of the history file's tables this build writes and reads.
pub const FILE_SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of `operations`, the same in every version so far (what changed is the key and
/// the indexes). A macro, not a `const`: `concat!` takes only literals.
macro_rules! operations_columns {
    () => {
        "
    run_id         INTEGER NOT NULL,
    op_id          INTEGER NOT NULL,
    operation_type TEXT NOT NULL,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    with_failures  INTEGER NOT NULL,
    started_us     INTEGER,
    completed_us   INTEGER,
    finished_us    INTEGER NOT NULL,
    duration_us    INTEGER,
    failures       INTEGER NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    interrupted    INTEGER NOT NULL DEFAULT 0,
    state_json     TEXT NOT NULL,"
    };
}

/// The names of those columns, in order (a copy between versions).
macro_rules! operations_names {
    () => {
        "run_id, op_id, operation_type, name, status, with_failures, started_us, \
         completed_us, finished_us, duration_us, failures, host, pid, interrupted, state_json"
    };
}

/// Version 1: runs (one per process and store), operations keyed by (run, operation id).
/// Kept as it was: new files are created at version 1 and migrated, like old ones.
const SCHEMA_V1: &str = concat!(
    "
CREATE TABLE runs (
    run_id      INTEGER PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_us  INTEGER NOT NULL,
    crate_version TEXT NOT NULL
);
CREATE TABLE operations (",
    operations_columns!(),
    "
    PRIMARY KEY (run_id, op_id)
) WITHOUT ROWID;
CREATE INDEX operations_finished ON operations (finished_us);
CREATE INDEX operations_type ON operations (operation_type, finished_us);
CREATE INDEX operations_status ON operations (status, finished_us);
CREATE INDEX operations_running ON operations (run_id) WHERE status = 'running';
"
);

/// The steps from each version to the next: `MIGRATIONS[0]` takes version 1 to 2, and so on.
/// A new file is created at version 1 and goes through all of them, so old and new files end
/// with the same tables.
const MIGRATIONS: &[&str] = &[MIGRATION_2];

/// Version 2: `operations` becomes a rowid table (version 1's `WITHOUT ROWID` stored every
/// operation's JSON inside the key's b-tree, so an index scan read through the big rows: a
/// filtered query over 100,000 operations took 46 ms at p50, 0.9 s at p99, in
/// `benches/sqlite.rs`); the indexes carry the whole
/// order (finished, run, id), type and status have a combined one, and operations can be
/// found by id alone (`show ID` without its run).
const MIGRATION_2: &str = concat!(
    "
CREATE TABLE operations_v2 (",
    operations_columns!(),
    "
    UNIQUE (run_id, op_id)
);
INSERT INTO operations_v2 (",
    operations_names!(),
    ")
    SELECT ",
    operations_names!(),
    "
    FROM operations ORDER BY finished_us;
DROP TABLE operations;
ALTER TABLE operations_v2 RENAME TO operations;
CREATE INDEX operations_finished ON operations (finished_us, run_id, op_id);
CREATE INDEX operations_type ON operations (operation_type, finished_us, run_id, op_id);
CREATE INDEX operations_status ON operations (status, finished_us, run_id, op_id);
CREATE INDEX operations_type_status ON operations
    (operation_type, status, finished_us, run_id, op_id);
CREATE INDEX operations_running ON operations (run_id) WHERE status = 'running';
CREATE INDEX operations_op ON operations (op_id);
"
);

/// Page size of a new file, unless it is bounded below [`SMALL_FILE`]: a finished operation's
/// JSON (12 KB for a 31-node setlist) spans few pages, and SQLite writes each page of the WAL
/// with two system calls and again at the checkpoint; 16 KiB pages took a quarter of the
/// writer's SQLite CPU off next to SQLite's default of 4 KiB (`benches/sqlite.rs`). An
/// existing file keeps the page size it was created with (changing it means a `VACUUM`).
pub(crate) const PAGE_SIZE: i64 = 16 * 1024;

/// A file bounded below this (`history_file_max_bytes`, `history_file_retain_bytes`) is created
/// with SQLite's default 4 KiB pages: its bound is then kept to a finer grain, and its tables'
/// empty pages (eight b-trees) take 32 KiB, not 128 KiB.
pub(crate) const SMALL_FILE: u64 = 4 << 20;

/// Opens (creating if needed) the file for writing, in WAL mode, migrated to this version. A
/// new file gets pages of `page_size` bytes.
pub(crate) fn open_read_write(
    path: &Path,
    sync_full: bool,
    page_size: i64,
) -> Result<Connection, String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!(
            "history_file {shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("history_file {shown}: is a directory, not a file"));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        if path.exists() {
            format!("history_file {shown}: cannot open: {e}")
        } else {
            format!(
                "history_file {shown}: cannot create the file (is its directory writable?): {e}"
            )
        }
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("history_file {shown}: {e}"))?;
    // Only takes on a file with no tables yet, and only before it is in WAL mode; a no-op on
    // every other.
    conn.execute_batch(&format!("PRAGMA page_size = {page_size};"))
        .map_err(|e| not_a_database(path, &e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| not_a_database(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "history_file {shown}: could not switch to WAL mode (journal mode is {mode})"
        ));
    }
    let sync = if sync_full { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(|e| format!("history_file {shown}: {e}"))?;
    migrate(&conn).map_err(|e| format!("history_file {shown}: {e}"))?;
    Ok(conn)
}

/// Opens an existing file read-only (no migration; a newer version is read as far as it can be).
pub(crate) fn open_read_only(path: &Path) -> Result<(Connection, i64), String> {
    let shown = path.display();
    if !path.is_file() {
        return Err(format!("history file {shown}: no such file"));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("history file {shown}: cannot open: {e}"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("history file {shown}: {e}"))?;
    let version = read_version(&conn).map_err(|e| not_a_database(path, &e))?;
    super::reader::add_functions(&conn).map_err(|e| format!("history file {shown}: {e}"))?;
    match version {
        Some(v) => Ok((conn, v)),
        None => Err(format!(
            "history file {shown}: not a tracing-progress history file (no schema version table)"
        )),
    }
}

fn not_a_database(path: &Path, e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            format!("history_file {}: not a SQLite database", path.display())
        }
        _ => format!("history_file {}: {e}", path.display()),
    }
}

/// The version recorded in the file, `None` when it has no version table.
fn read_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_table: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tracing_progress_schema'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(None);
    }
    conn.query_row(
        "SELECT max(version) FROM tracing_progress_schema",
        [],
        |r| r.get::<_, Option<i64>>(0),
    )
}

/// Creates the tables or upgrades them; refuses a file of a newer version.
fn migrate(conn: &Connection) -> Result<(), String> {
    // An immediate transaction, so two processes opening a new file do not both create it.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let version = read_version(&tx).map_err(|e| e.to_string())?;
    let from = match version {
        Some(v) if v > FILE_SCHEMA_VERSION => {
            return Err(format!(
                "written by a newer tracing-progress (file schema {v}; this version knows up to \
                 {FILE_SCHEMA_VERSION}); it is not opened for writing: use a newer \
                 tracing-progress or another file"
            ));
        }
        Some(v) if v < 1 => return Err(format!("unknown file schema version {v}")),
        Some(v) => v,
        None => {
            let tables: i64 = tx
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| e.to_string())?;
            if tables > 0 {
                return Err("a SQLite database of something else (it has tables but no \
                     tracing-progress schema version)"
                    .to_string());
            }
            tx.execute_batch(
                "CREATE TABLE tracing_progress_schema (version INTEGER NOT NULL, \
                 migrated_us INTEGER NOT NULL);",
            )
            .map_err(|e| e.to_string())?;
            tx.execute_batch(SCHEMA_V1).map_err(|e| e.to_string())?;
            1
        }
    };
    for (to, step) in (from + 1..=FILE_SCHEMA_VERSION).zip(
        MIGRATIONS
            .iter()
            .skip(usize::try_from(from - 1).unwrap_or(0)),
    ) {
        tx.execute_batch(step)
            .map_err(|e| format!("migrating the file from schema {} to {to}: {e}", to - 1))?;
    }
    if from < FILE_SCHEMA_VERSION || version.is_none() {
        tx.execute(
            "INSERT INTO tracing_progress_schema (version, migrated_us) VALUES (?1, ?2)",
            (FILE_SCHEMA_VERSION, super::now_us()),
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}
