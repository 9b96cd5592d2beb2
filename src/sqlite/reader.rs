//! Queries: the history file as a [`HistorySource`] of the store, and the read-only
//! [`HistoryFile`](super::HistoryFile).

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;

use super::writer::{Counters, to_i64};
use super::{StoredOperation, host_name, process_alive};
use crate::Store;
use crate::model::{CancelReason, OperationRef, ProgressLevel, ProgressState, RunId, Status};
use crate::store::{HistoryQuery, HistorySource, Page, PageKey, SourceStats, StoreInner};

/// [`SetupWarning::code`](crate::SetupWarning::code) of a history file that could not be read
/// by [`Store::history`](crate::Store::history) (it then answers from memory).
pub const READ_WARNING: &str = "sqlite.read";

/// Runs with rows still `running` whose process is gone (same host, no such pid).
pub(crate) fn dead_runs(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT r.run_id, r.host, r.pid FROM operations o JOIN runs r \
         ON r.run_id = o.run_id WHERE o.status = 'running' AND o.interrupted = 0",
    )?;
    let host = host_name();
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut dead = Vec::new();
    for row in rows {
        let (run, run_host, pid) = row?;
        if run_host == host && process_alive(pid) == Some(false) {
            dead.push(run);
        }
    }
    Ok(dead)
}

/// The columns every read selects, in the order [`decode`] reads them.
const COLUMNS: &str = "run_id, host, pid, interrupted, state_json, finished_us, op_id";

/// The `WHERE` clause of `q`'s filters and its arguments. Every read goes through here, so a
/// new filter of [`HistoryQuery`] is one more line below.
struct Filter {
    sql: String,
    args: Vec<Value>,
}

impl Filter {
    fn new(q: &HistoryQuery, dead: &[i64]) -> Filter {
        // Finished rows, and running ones whose process is gone (interrupted).
        let mut f = Filter {
            sql: String::from("(status != 'running' OR interrupted = 1"),
            args: Vec::new(),
        };
        if !dead.is_empty() {
            f.sql.push_str(" OR run_id IN (");
            for (i, run) in dead.iter().enumerate() {
                let _ = write!(f.sql, "{}{run}", if i == 0 { "" } else { "," });
            }
            f.sql.push(')');
        }
        f.sql.push(')');
        if let Some(t) = &q.operation_type {
            f.and("operation_type = ?", t.clone().into());
        }
        // Rows still `running` here are interrupted ones, handed out as cancelled.
        match q.status {
            None => {}
            Some(Status::Running) => f.sql.push_str(" AND 0"),
            Some(Status::Cancelled) => f.sql.push_str(" AND status IN ('cancelled', 'running')"),
            Some(s) => f.and("status = ?", s.as_str().to_string().into()),
        }
        if let Some(w) = q.with_failures {
            f.and("with_failures = ?", i64::from(w).into());
        }
        if let Some(n) = &q.name_contains {
            f.and("tp_name_contains(name, ?)", n.clone().into());
        }
        for m in &q.meta {
            // A text pre-check; the exact one runs on the decoded rows (`keeps`).
            f.and("0 < instr(state_json, ?)", m.json_needle().into());
        }
        if let Some(t) = q.since_us {
            f.and("finished_us >= ?", to_i64(t).into());
        }
        if let Some(t) = q.until_us {
            f.and("finished_us <= ?", to_i64(t).into());
        }
        f
    }

    /// Adds `AND clause`; its `?` becomes the next numbered argument.
    fn and(&mut self, clause: &str, v: Value) {
        self.args.push(v);
        let n = self.args.len();
        let _ = write!(self.sql, " AND {}", clause.replace('?', &format!("?{n}")));
    }
}

/// `name.to_lowercase().contains(needle)` in SQL (the needle is lowercase already), the very
/// test [`HistoryQuery::matches`] makes in memory.
pub(crate) fn add_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "tp_name_contains",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let name = ctx.get_raw(0).as_str().unwrap_or("");
            let needle = ctx.get_raw(1).as_str().unwrap_or("");
            Ok(name.to_lowercase().contains(needle))
        },
    )
}

/// Finished (and interrupted) operations matching `q`, newest first; filters and limit in SQL.
pub(crate) fn query(conn: &Connection, q: &HistoryQuery) -> rusqlite::Result<Vec<StoredOperation>> {
    let dead = dead_runs(conn)?;
    let filter = Filter::new(q, &dead);
    let mut sql = format!(
        "SELECT {COLUMNS} FROM operations WHERE {} \
         ORDER BY finished_us DESC, run_id DESC, op_id DESC",
        filter.sql
    );
    // Metadata filters run on the decoded rows, so then the limit is applied after them.
    if let Some(limit) = q.limit.filter(|_| q.meta.is_empty()) {
        let _ = write!(sql, " LIMIT {}", to_i64(limit as u64));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(filter.args), decode)?;
    let mut out = stored(rows, &dead)?;
    if !q.meta.is_empty() {
        out.retain(|op| q.matches_meta(&op.state));
        out.truncate(q.limit.unwrap_or(usize::MAX));
    }
    Ok(out)
}

/// One page of `q` (its limit ignored) in (finished, run, id) order, strictly after `after`;
/// also the key of the page's last row when the page is full (more may follow).
pub(crate) fn page(
    conn: &Connection,
    q: &HistoryQuery,
    newest_first: bool,
    after: Option<PageKey>,
    n: usize,
) -> rusqlite::Result<Page<StoredOperation>> {
    let dead = dead_runs(conn)?;
    let mut filter = Filter::new(q, &dead);
    let (cmp, order) = if newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((finished, run, id)) = after {
        filter.args.extend([
            to_i64(finished).into(),
            to_i64(run).into(),
            to_i64(id).into(),
        ]);
        let k = filter.args.len();
        let _ = write!(
            filter.sql,
            " AND (finished_us, run_id, op_id) {cmp} (?{}, ?{}, ?{k})",
            k - 2,
            k - 1
        );
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM operations WHERE {} \
         ORDER BY finished_us {order}, run_id {order}, op_id {order} LIMIT {}",
        filter.sql,
        to_i64(n as u64)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(filter.args))?;
    let mut out = Vec::new();
    let mut seen = 0;
    let mut last = None;
    while let Some(row) = rows.next()? {
        let raw = decode(row)?;
        let key = raw.key();
        seen += 1;
        last = Some(key);
        if let Some(op) = raw.into_stored(&dead)
            && q.matches_meta(&op.state)
        {
            out.push((key, op));
        }
    }
    Ok((out, if seen == n { last } else { None }))
}

/// One row as read, before its JSON is decoded.
struct Row {
    run_id: i64,
    host: String,
    pid: i64,
    flagged: bool,
    json: String,
    finished_us: i64,
    op_id: i64,
}

impl Row {
    fn key(&self) -> PageKey {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        (u(self.finished_us), u(self.run_id), u(self.op_id))
    }

    /// The stored operation; `None` when its JSON is of a shape this version cannot read (a
    /// newer one): skipped, not fatal.
    fn into_stored(self, dead: &[i64]) -> Option<StoredOperation> {
        let mut state = serde_json::from_str::<ProgressState>(&self.json).ok()?;
        let run = RunId::from_u64(u64::try_from(self.run_id).unwrap_or(0));
        state.run = Some(run);
        let interrupted =
            state.status == Status::Running && (self.flagged || dead.contains(&self.run_id));
        if interrupted {
            interrupt(&mut state);
        }
        Some(StoredOperation {
            state: Arc::new(state),
            run,
            host: self.host,
            pid: u32::try_from(self.pid).unwrap_or(0),
            interrupted,
        })
    }
}

/// An operation whose process ended while it ran, as it is handed out: it and every level of
/// it not finished read cancelled, reason [`CancelReason::Interrupted`], with no estimate (it
/// will never finish, and must not read running forever).
fn interrupt(state: &mut ProgressState) {
    fn level(l: &mut ProgressLevel) {
        if !l.status.is_finished() {
            l.status = Status::Cancelled;
            l.cancel_reason = Some(CancelReason::Interrupted);
            l.estimate = None;
            l.stalled = false;
        }
        l.children.iter_mut().for_each(level);
    }
    state.status = Status::Cancelled;
    level(&mut state.root);
}

fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        run_id: r.get(0)?,
        host: r.get(1)?,
        pid: r.get(2)?,
        flagged: r.get(3)?,
        json: r.get(4)?,
        finished_us: r.get(5)?,
        op_id: r.get(6)?,
    })
}

fn stored(
    rows: impl Iterator<Item = rusqlite::Result<Row>>,
    dead: &[i64],
) -> rusqlite::Result<Vec<StoredOperation>> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row?.into_stored(dead));
    }
    Ok(out)
}

/// Rows of one operation: of one run, or of every run that has this id (ids repeat across
/// runs), newest first.
pub(crate) fn get(conn: &Connection, r: OperationRef) -> rusqlite::Result<Vec<StoredOperation>> {
    let dead = dead_runs(conn)?;
    let id = to_i64(r.id.as_u64());
    match r.run {
        Some(run) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM operations WHERE run_id = ?1 AND op_id = ?2"
            ))?;
            let rows = stmt.query_map((to_i64(run.as_u64()), id), decode)?;
            stored(rows, &dead)
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM operations WHERE op_id = ?1 ORDER BY finished_us DESC"
            ))?;
            let rows = stmt.query_map([id], decode)?;
            stored(rows, &dead)
        }
    }
}

/// The file as the store's second history source.
pub(crate) struct FileSource {
    pub(crate) conn: Mutex<Connection>,
    pub(crate) run: RunId,
    pub(crate) counters: Arc<Counters>,
    pub(crate) store: Weak<StoreInner>,
    pub(crate) path: std::path::PathBuf,
}

impl FileSource {
    /// The stored state as the store hands it out: this run's own without `run`.
    fn own(&self, op: StoredOperation) -> Arc<ProgressState> {
        if op.run != self.run {
            return op.state;
        }
        let mut state = Arc::unwrap_or_clone(op.state);
        state.run = None;
        Arc::new(state)
    }

    /// `result`, or on error a one-time warning and `empty`.
    fn or_warn<T>(&self, result: rusqlite::Result<T>, empty: T) -> T {
        result.unwrap_or_else(|e| {
            if let Some(store) = self.store.upgrade().map(Store::from_inner) {
                store.warn_once(
                    READ_WARNING,
                    &format!(
                        "cannot read the history file {}: {e} (history answers from memory)",
                        self.path.display()
                    ),
                );
            }
            empty
        })
    }
}

impl HistorySource for FileSource {
    fn query(&self, q: &HistoryQuery) -> Vec<Arc<ProgressState>> {
        let rows = self.or_warn(query(&self.conn.lock(), q), Vec::new());
        rows.into_iter().map(|r| self.own(r)).collect()
    }

    fn page(
        &self,
        q: &HistoryQuery,
        newest_first: bool,
        after: Option<PageKey>,
        n: usize,
    ) -> Page<Arc<ProgressState>> {
        let (rows, next) = self.or_warn(
            page(&self.conn.lock(), q, newest_first, after, n),
            (Vec::new(), None),
        );
        let rows = rows.into_iter().map(|(k, r)| (k, self.own(r))).collect();
        (rows, next)
    }

    fn get(&self, r: OperationRef) -> Option<Arc<ProgressState>> {
        let r = OperationRef::new(Some(r.run.unwrap_or(self.run)), r.id);
        let rows = self.or_warn(get(&self.conn.lock(), r), Vec::new());
        rows.into_iter().next().map(|op| self.own(op))
    }

    fn run(&self) -> RunId {
        self.run
    }

    fn stats(&self) -> SourceStats {
        self.counters.stats()
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.counters.flush(timeout)
    }
}

/// Completed operations read at start for the priors of estimates.
pub(crate) const PRIOR_OPERATIONS: i64 = 50;
/// Most completed nodes taken from them.
pub(crate) const PRIOR_NODES: usize = 20_000;

/// Durations of completed nodes of the newest completed operations, oldest first (so the
/// priors' rings keep the newest).
pub(crate) fn prior_durations(
    conn: &Connection,
) -> rusqlite::Result<std::collections::VecDeque<crate::estimate::FinishedNode>> {
    let mut stmt = conn.prepare(
        "SELECT state_json FROM operations WHERE status = 'completed' \
         ORDER BY finished_us DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([PRIOR_OPERATIONS], |r| r.get::<_, String>(0))?;
    let mut states = Vec::new();
    for row in rows {
        if let Ok(state) = serde_json::from_str::<ProgressState>(&row?) {
            states.push(state);
        }
    }
    let mut out = std::collections::VecDeque::new();
    for state in states.iter().rev() {
        let mut stack = vec![&state.root];
        while let Some(level) = stack.pop() {
            if out.len() >= PRIOR_NODES {
                return Ok(out);
            }
            if level.status == Status::Completed {
                out.push_back(crate::estimate::FinishedNode {
                    level_type: level.level_type.clone(),
                    name: level.name.clone(),
                    duration_us: level.timing.elapsed_us,
                });
            }
            stack.extend(level.children.iter());
        }
    }
    Ok(out)
}
