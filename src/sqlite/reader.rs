//! Queries: the history file as a [`HistorySource`] of the store, and the read-only
//! [`HistoryFile`](super::HistoryFile).

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::writer::{Counters, to_i64};
use super::{StoredOperation, host_name, process_alive};
use crate::Store;
use crate::model::{ProgressState, Status};
use crate::store::{HistoryQuery, HistorySource, SourceStats, SourcedState, StoreInner};

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

/// Finished (and interrupted) operations matching `q`, newest first; filters and limit in SQL.
pub(crate) fn query(conn: &Connection, q: &HistoryQuery) -> rusqlite::Result<Vec<StoredOperation>> {
    let dead = dead_runs(conn)?;
    let mut sql = String::from(
        "SELECT run_id, host, pid, interrupted, state_json FROM operations WHERE \
         (status != 'running' OR interrupted = 1",
    );
    if !dead.is_empty() {
        sql.push_str(" OR run_id IN (");
        for (i, run) in dead.iter().enumerate() {
            let _ = write!(sql, "{}{run}", if i == 0 { "" } else { "," });
        }
        sql.push(')');
    }
    sql.push(')');
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        let _ = write!(sql, " AND {clause} ?{}", args.len());
    };
    if let Some(t) = &q.operation_type {
        arg(&mut sql, "operation_type =", t.clone().into());
    }
    if let Some(s) = q.status {
        arg(&mut sql, "status =", s.as_str().to_string().into());
    }
    if let Some(n) = &q.name_contains {
        // ASCII case folding in SQL; the exact check runs again on the decoded rows.
        arg(&mut sql, "0 < instr(lower(name),", n.clone().into());
        sql.push(')');
    }
    for m in &q.meta {
        // A text pre-check; the exact one runs on the decoded rows.
        arg(&mut sql, "0 < instr(state_json,", m.json_needle().into());
        sql.push(')');
    }
    if let Some(t) = q.since_us {
        arg(&mut sql, "finished_us >=", to_i64(t).into());
    }
    if let Some(t) = q.until_us {
        arg(&mut sql, "finished_us <=", to_i64(t).into());
    }
    sql.push_str(" ORDER BY finished_us DESC");
    // Metadata filters run on the decoded rows, so the limit is applied after them.
    let limit_after = q.limit.filter(|_| !q.meta.is_empty());
    if let Some(limit) = q.limit.filter(|_| q.meta.is_empty()) {
        let _ = write!(sql, " LIMIT {}", to_i64(limit as u64));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let name = q.name_contains.as_deref();
    let mut rows = stored(
        &mut stmt,
        rusqlite::params_from_iter(args),
        &dead,
        |state| name.is_none_or(|n| state.name.to_lowercase().contains(n)) && q.matches_meta(state),
    )?;
    rows.truncate(limit_after.unwrap_or(usize::MAX));
    Ok(rows)
}

/// Decodes rows of `run_id, host, pid, interrupted, state_json` into stored operations, keeping
/// those `keep` accepts. A row whose JSON this version cannot read (a newer shape) is skipped,
/// not fatal.
fn stored(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    dead: &[i64],
    keep: impl Fn(&ProgressState) -> bool,
) -> rusqlite::Result<Vec<StoredOperation>> {
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (run_id, host, pid, flagged, json) = row?;
        let Ok(state) = serde_json::from_str::<ProgressState>(&json) else {
            continue;
        };
        if !keep(&state) {
            continue;
        }
        let interrupted = state.status == Status::Running && (flagged || dead.contains(&run_id));
        out.push(StoredOperation {
            state: Arc::new(state),
            run_id,
            host,
            pid: u32::try_from(pid).unwrap_or(0),
            interrupted,
        });
    }
    Ok(out)
}

/// Every row of one operation id (ids repeat across runs), newest first.
pub(crate) fn get(conn: &Connection, id: u64) -> rusqlite::Result<Vec<StoredOperation>> {
    let dead = dead_runs(conn)?;
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, host, pid, interrupted, state_json FROM operations WHERE op_id = ?1 \
         ORDER BY finished_us DESC",
    )?;
    stored(&mut stmt, [to_i64(id)], &dead, |_| true)
}

/// The file as the store's second history source.
pub(crate) struct FileSource {
    pub(crate) conn: Mutex<Connection>,
    pub(crate) run_id: i64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) store: Weak<StoreInner>,
    pub(crate) path: std::path::PathBuf,
}

impl HistorySource for FileSource {
    fn query(&self, q: &HistoryQuery) -> Vec<SourcedState> {
        let result = query(&self.conn.lock(), q);
        match result {
            Ok(rows) => rows
                .into_iter()
                .map(|r| SourcedState {
                    this_store: r.run_id == self.run_id,
                    state: r.state,
                })
                .collect(),
            Err(e) => {
                if let Some(store) = self.store.upgrade().map(Store::from_inner) {
                    store.warn_once(
                        READ_WARNING,
                        &format!(
                            "cannot read the history file {}: {e} (history answers from memory)",
                            self.path.display()
                        ),
                    );
                }
                Vec::new()
            }
        }
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
