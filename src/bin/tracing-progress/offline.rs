//! `history --db FILE` and `show ID --db FILE`: a history file read directly, read-only, with
//! no server.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tracing_progress::sqlite::{HistoryFile, StoredOperation};
use tracing_progress::view::Verbose;
use tracing_progress::{HistoryQuery, ProgressState};

use crate::error::{CliError, Exit, print, print_line};
use crate::{Emit, ExportArgs, ExportError, Filters, ShowArgs, table, write_records};

/// What `history` shows without `--limit` (as the server does).
const DEFAULT_LIMIT: u64 = 100;

fn open(db: &Path) -> Result<HistoryFile, CliError> {
    HistoryFile::open(db).map_err(|e| CliError::failure(e.to_string()))
}

fn query(filters: &Filters) -> Result<HistoryQuery, CliError> {
    let mut q = HistoryQuery::new();
    if let Some(s) = &filters.status {
        q = q.outcome(s).map_err(|e| CliError::usage(e.to_string()))?;
    }
    if let Some(t) = &filters.operation_type {
        q = q.operation_type(t.clone());
    }
    if let Some(n) = &filters.name {
        q = q.name_contains(n.clone());
    }
    if let Some(t) = &filters.since {
        q = q.since(unix_ms(t)?);
    }
    if let Some(t) = &filters.until {
        q = q.until(unix_ms(t)?);
    }
    for m in &filters.meta {
        let filter: tracing_progress::MetaFilter = m
            .parse()
            .map_err(|e: tracing_progress::ParseError| CliError::usage(e.to_string()))?;
        q = q.meta(filter);
    }
    let limit = filters.limit.unwrap_or(DEFAULT_LIMIT).min(10_000);
    Ok(q.limit(usize::try_from(limit).unwrap_or(usize::MAX)))
}

/// `--since`/`--until` with `--db`: unix milliseconds.
fn unix_ms(text: &str) -> Result<SystemTime, CliError> {
    let ms: u64 = text.trim().parse().map_err(|_| {
        CliError::usage(format!(
            "with --db, --since and --until take unix milliseconds (got {text:?})"
        ))
    })?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// The state as JSON (its `run` included) with where it came from: `host`, `pid`,
/// `interrupted`.
fn with_origin(op: &StoredOperation) -> serde_json::Value {
    let mut value = serde_json::to_value(&*op.state).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("host".into(), op.host.clone().into());
        map.insert("pid".into(), op.pid.into());
        map.insert("interrupted".into(), op.interrupted.into());
    }
    value
}

fn status(op: &StoredOperation) -> String {
    if op.interrupted {
        "interrupted".to_owned()
    } else {
        table::status(&op.state)
    }
}

/// `history --db FILE`: newest first; interrupted operations read `interrupted`.
pub(crate) fn history(db: &Path, filters: &Filters, json: bool) -> Result<(), CliError> {
    let file = open(db)?;
    let ops = file
        .query(&query(filters)?)
        .map_err(|e| CliError::failure(e.to_string()))?;
    if json {
        let list = serde_json::json!({
            "operations": ops.iter().map(with_origin).collect::<Vec<_>>(),
            "truncated": false,
        });
        return print_line(&list.to_string());
    }
    if ops.is_empty() {
        return print_line("no operations");
    }
    let states: Vec<ProgressState> = ops.iter().map(|o| (*o.state).clone()).collect();
    print(&table::operations_with_status(&states, |s| {
        states
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .and_then(|i| ops.get(i))
            .map_or_else(|| table::status(s), status)
    }))
}

/// `show ID --db FILE`: the newest run's operation with this id (ids repeat across runs).
pub(crate) fn show(db: &Path, args: &ShowArgs, json: bool) -> Result<(), CliError> {
    let file = open(db)?;
    let found = file
        .get(args.id)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let Some(op) = found.first() else {
        return Err(CliError::new(
            Exit::NotFound,
            format!("no operation {} in {}", args.id, db.display()),
        ));
    };
    if json {
        return print_line(&with_origin(op).to_string());
    }
    let mut view = Verbose::new(args.detail.into()).max_children(args.max_children);
    if let Some(depth) = args.max_depth {
        view = view.max_depth(depth);
    }
    let mut text = view.render(&op.state);
    if op.interrupted {
        text.push_str(&format!(
            "\ninterrupted: process {} on {} ended while this operation was running",
            op.pid, op.host
        ));
    }
    if found.len() > 1 {
        text.push_str(&format!(
            "\n({} runs have an operation {}; this is the newest, {}; name one as ID@RUN)",
            found.len(),
            args.id,
            op.state.reference()
        ));
    }
    print_line(&text)
}

/// `export --db FILE`: oldest first, read a page at a time (any file size, bounded memory);
/// with `--limit N`, the newest N. Each record is the state with its origin, as `history
/// --db --json` lists it.
pub(crate) fn export(db: &Path, args: &ExportArgs, json: bool) -> Result<(), CliError> {
    let file = open(db)?;
    // `for_each` ignores the query's limit: without --limit, everything.
    let q = query(&args.filters)?;
    let limited = args.filters.limit.is_some();
    write_records(args, json, |emit: &mut Emit<'_>| {
        if limited {
            let mut ops = file.query(&q)?;
            ops.reverse();
            for op in &ops {
                emit(&with_origin(op).to_string())?;
            }
            return Ok(());
        }
        file.for_each(&q, |op| -> Result<(), ExportError> {
            emit(&with_origin(op).to_string())
        })
        .map(|_| ())
    })
}
