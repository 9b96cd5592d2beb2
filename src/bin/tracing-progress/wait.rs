//! `wait`: blocks until an operation ends and exits with a code that says how it ended.
//!
//! `wait ID` follows one operation. `wait --type T --name N --meta K=V` waits for the first
//! operation matching the filters to finish: one running when the wait begins, or one that
//! starts later (an operation that finished before the wait began does not count; "began" is
//! this machine's clock, compared with the server's completion times).
//!
//! Both poll the API (`/api/operations/ID`, or `/api/history?since=…&limit=1` with the
//! filters) every 200 ms: a short operation that starts and ends between two polls is still
//! seen, because finished operations are looked up in history, not in the running list.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing_progress::view::{Detail, Verbose, active_path};
use tracing_progress::{ProgressState, Status};

use crate::client::{Client, Query, parse_state};
use crate::error::{CliError, Exit, print_line};
use crate::watch::human_duration;

/// Between two polls.
const POLL_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct WaitOptions {
    pub(crate) id: Option<u64>,
    /// `type`, `name`, `meta` parameters (without an id).
    pub(crate) filters: Query,
    pub(crate) timeout: Option<Duration>,
    pub(crate) detail: Detail,
    pub(crate) json: bool,
}

pub(crate) fn run(client: &Client, opts: WaitOptions) -> Result<(), CliError> {
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let began_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (state, text) = loop {
        let found = match opts.id {
            Some(id) => {
                let (state, text) = client.operation(id)?;
                state.status.is_finished().then_some((state, text))
            }
            None => next_finished(client, &opts.filters, began_ms)?,
        };
        if let Some(done) = found {
            break done;
        }
        if let Some(deadline) = deadline {
            let now = Instant::now();
            if now >= deadline {
                let what = match opts.id {
                    Some(id) => format!("operation {id} is still running"),
                    None => "no matching operation finished".to_owned(),
                };
                return Err(CliError::new(
                    Exit::Timeout,
                    format!(
                        "timed out after {}: {what}",
                        human_duration(opts.timeout.unwrap_or_default())
                    ),
                ));
            }
            std::thread::sleep(POLL_EVERY.min(deadline - now));
        } else {
            std::thread::sleep(POLL_EVERY);
        }
    };
    if opts.json {
        print_line(text.trim_end())?;
    } else {
        print_line(&active_path(&state))?;
        print_line("")?;
        print_line(&Verbose::new(opts.detail).render(&state))?;
    }
    outcome(&state)
}

/// The newest operation matching the filters that finished since the wait began.
fn next_finished(
    client: &Client,
    filters: &Query,
    began_ms: u64,
) -> Result<Option<(ProgressState, String)>, CliError> {
    let mut query = filters.clone();
    query.push(("since", began_ms.to_string()));
    query.push(("limit", "1".to_owned()));
    let text = client.get_text("/api/history", &query)?;
    let list: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::failure(format!("unexpected answer from the server: {e}")))?;
    let Some(first) = list["operations"].as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    let text = first.to_string();
    let state = parse_state(&text)?;
    Ok(Some((state, text)))
}

/// Exit 0 for completed; the outcome's own code otherwise (the message goes to stderr).
fn outcome(state: &ProgressState) -> Result<(), CliError> {
    let id = state.id;
    let why = state
        .error
        .as_ref()
        .map(|e| format!(": {}", e.message))
        .unwrap_or_default();
    match state.status {
        Status::Completed if state.with_failures => Err(CliError::new(
            Exit::CompletedWithFailures,
            format!("operation {id} completed with failures{why}"),
        )),
        Status::Completed => Ok(()),
        Status::Failed => Err(CliError::new(
            Exit::OperationFailed,
            format!("operation {id} failed{why}"),
        )),
        Status::Cancelled => Err(CliError::new(
            Exit::Cancelled,
            format!("operation {id} was cancelled"),
        )),
        // Not reached: only finished states get here.
        Status::Pending | Status::Running => Err(CliError::failure(format!(
            "operation {id} is still {}",
            state.status
        ))),
    }
}
