//! `tracing-progress`: the command-line client of a program's progress HTTP API (feature
//! `cli`; the server is `tracing_progress::http::Server`).
//!
//! ```text
//! tracing-progress ls --all --status failed
//! tracing-progress show 42 --detail normal
//! tracing-progress watch 42 --timeout 10m
//! tracing-progress export --format jsonl -o history.jsonl
//! TRACING_PROGRESS_TOKEN=s3cret tracing-progress cancel 42 --wait
//! tracing-progress wait --type setlist_processing --timeout 30m && echo done
//! ```

mod client;
mod error;
mod offline;
mod table;
mod wait;
mod watch;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use tracing_progress::view::{Detail, Verbose, active_path};
use tracing_progress::{OperationRef, ProgressState};

use crate::client::{Client, Query, parse_state};
use crate::error::{CliError, Exit, one_line, print, print_line, stdout_error};
use crate::watch::{WatchOptions, human_duration, parse_duration};

/// Where the server listens unless told otherwise (`tracing_progress::http::DEFAULT_PORT`).
const DEFAULT_ADDR: &str = "http://127.0.0.1:7878";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other failure (an unexpected answer, an output file that cannot be written)
  2  usage: bad arguments, or a parameter the server rejected
  3  the server cannot be reached, or the connection was lost
  4  no such operation
  5  the token is missing or wrong, or the server does not allow the action
  6  --timeout passed before the operation finished (watch ID, cancel --wait, wait)
  7  wait: the operation failed
  8  wait: the operation was cancelled
  9  wait: the operation completed with failures below it";

/// Lists, shows, follows, exports and cancels the operations of a program instrumented with
/// tracing-progress, through its HTTP API.
#[derive(Parser, Debug)]
#[command(name = "tracing-progress", version, after_help = EXIT_CODES)]
struct Cli {
    /// Address of the program's HTTP API: http://HOST:PORT, HOST:PORT or a port on 127.0.0.1
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TRACING_PROGRESS_ADDR",
        default_value = DEFAULT_ADDR,
        value_name = "URL"
    )]
    addr: String,

    /// Token of the server, sent as "Authorization: Bearer TOKEN" (needed to cancel)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "TRACING_PROGRESS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

    /// Print the API's JSON instead of text, for scripts
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List running operations (with --all, finished ones too)
    Ls(LsArgs),
    /// Show one operation and its whole tree
    Show(ShowArgs),
    /// Follow operations live; with an ID, until that operation finishes
    Watch(WatchArgs),
    /// List finished operations, newest first
    History(HistoryArgs),
    /// Export finished operations as JSON or JSON lines, oldest first
    Export(ExportArgs),
    /// Ask a running operation to cancel (needs the token)
    Cancel(CancelArgs),
    /// Wait until an operation ends; the exit code says how (0 completed, 7 failed, 8
    /// cancelled, 9 completed with failures, 6 timeout)
    Wait(WaitArgs),
}

#[derive(Args, Debug)]
struct Filters {
    /// Only this status: pending, running, completed, completed_with_failures, failed,
    /// cancelled (`completed` includes the ones with failures below; history: operations
    /// interrupted by the end of their process are cancelled)
    #[arg(long)]
    status: Option<String>,

    /// Only this operation type (exact)
    #[arg(long = "type", value_name = "TYPE")]
    operation_type: Option<String>,

    /// Only names containing this (case-insensitive)
    #[arg(long)]
    name: Option<String>,

    /// Only operations that finished (running ones: now) at or after this time: unix
    /// milliseconds, RFC 3339 (2026-01-01T00:00:00Z) or a date (2026-01-01)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,

    /// Only operations that finished (running ones: now) at or before this time
    #[arg(long, value_name = "TIME")]
    until: Option<String>,

    /// Only operations with a node whose metadata field passes: KEY=VALUE (numbers compare as
    /// numbers, the rest as text) or KEY>N, KEY>=N, KEY<N, KEY<=N; `meta.KEY` also works;
    /// repeat for more conditions (all must hold)
    #[arg(long, value_name = "FILTER", value_parser = parse_meta)]
    meta: Vec<String>,

    /// At most this many, up to 10000 (by default ls and history show 100, export all)
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// Checks a `--meta` filter here, so a typo is a usage error before any request.
fn parse_meta(s: &str) -> Result<String, String> {
    s.parse::<tracing_progress::MetaFilter>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl Filters {
    fn query(&self) -> Query {
        let mut q: Query = Vec::new();
        let mut add = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                q.push((name, v.clone()));
            }
        };
        add("status", &self.status);
        add("type", &self.operation_type);
        add("name", &self.name);
        add("since", &self.since);
        add("until", &self.until);
        add("limit", &self.limit.map(|n| n.to_string()));
        for m in &self.meta {
            q.push(("meta", m.clone()));
        }
        q
    }
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Also list finished operations (running ones first)
    #[arg(long, short = 'a')]
    all: bool,

    #[command(flatten)]
    filters: Filters,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    #[command(flatten)]
    filters: Filters,

    /// Read this history file (`Builder::history_file`) instead of asking a server
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// Operation id (from `ls` or `history`): `ID`, or `ID@RUN` for another run's operation
    /// read from a history file
    id: OperationRef,

    /// How much to show per level
    #[arg(long, value_enum, default_value_t = DetailArg::Verbose)]
    detail: DetailArg,

    /// Show levels down to this depth (1: the operation's direct children)
    #[arg(long, value_name = "N")]
    max_depth: Option<usize>,

    /// Show at most this many children per level; the middle ones are summed up
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_children: usize,

    /// Read this history file (`Builder::history_file`) instead of asking a server
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Operation id to follow until it finishes; without one, every running operation
    id: Option<u64>,

    /// Stop after this long (30s, 500ms, 10m); with an ID that is still running, exit 6
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,

    /// How much of the final state to print
    #[arg(long, value_enum, default_value_t = DetailArg::Normal)]
    detail: DetailArg,

    /// Print one JSON object per line per change of a node (versioned shape
    /// `tracing_progress::view::StreamRecord`), each node at most once a second, status
    /// changes at once: for CI logs and other programs
    #[arg(long)]
    ndjson: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Output format: a JSON array, or one JSON object per line
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,

    /// Write to this file instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    filters: Filters,

    /// Read this history file (`Builder::history_file`) instead of asking a server
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CancelArgs {
    /// Operation id
    id: u64,

    /// Wait until the operation has ended, then print its final state
    #[arg(long)]
    wait: bool,

    /// With --wait, give up after this long (exit 6)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "wait")]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .multiple(true)
        .args(["id", "operation_type", "name", "meta"])
))]
struct WaitArgs {
    /// Operation id to wait for
    #[arg(conflicts_with_all = ["operation_type", "name", "meta"])]
    id: Option<u64>,

    /// Without an ID: wait for the first operation of this type (exact) to finish, one
    /// running now or one that starts later
    #[arg(long = "type", value_name = "TYPE")]
    operation_type: Option<String>,

    /// Without an ID: ... whose name contains this (case-insensitive)
    #[arg(long)]
    name: Option<String>,

    /// Without an ID: ... with a node whose metadata passes this filter (as in `ls --meta`)
    #[arg(long, value_name = "FILTER", value_parser = parse_meta)]
    meta: Vec<String>,

    /// Give up after this long (exit 6)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,

    /// How much of the final state to print
    #[arg(long, value_enum, default_value_t = DetailArg::Summary)]
    detail: DetailArg,
}

impl WaitArgs {
    fn filters(&self) -> Query {
        let mut q: Query = Vec::new();
        if let Some(t) = &self.operation_type {
            q.push(("type", t.clone()));
        }
        if let Some(n) = &self.name {
            q.push(("name", n.clone()));
        }
        for m in &self.meta {
            q.push(("meta", m.clone()));
        }
        q
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DetailArg {
    /// The header and one line per level
    Summary,
    /// Status, timing and progress of each level
    Normal,
    /// Everything: metadata, metrics, error fields
    Verbose,
}

impl From<DetailArg> for Detail {
    fn from(d: DetailArg) -> Self {
        match d {
            DetailArg::Summary => Detail::Summary,
            DetailArg::Normal => Detail::Normal,
            DetailArg::Verbose => Detail::Verbose,
        }
    }
}

impl DetailArg {
    fn as_str(self) -> &'static str {
        match self {
            DetailArg::Summary => "summary",
            DetailArg::Normal => "normal",
            DetailArg::Verbose => "verbose",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A JSON array of operations
    Json,
    /// One operation per line
    Jsonl,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(CliError::Failed { exit, message }) => {
            let _ = writeln!(io::stderr().lock(), "error: {message}");
            ExitCode::from(exit as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    // An empty TRACING_PROGRESS_ADDR means the default, like an unset one.
    let addr = match cli.addr.trim() {
        "" => DEFAULT_ADDR,
        addr => addr,
    };
    let json = cli.json;
    // With --db no server is involved.
    match &cli.command {
        Command::History(HistoryArgs {
            filters,
            db: Some(db),
        }) => return offline::history(db, filters, json),
        Command::Show(args @ ShowArgs { db: Some(db), .. }) => {
            return offline::show(db, args, json);
        }
        Command::Export(args @ ExportArgs { db: Some(db), .. }) => {
            return offline::export(db, args, json);
        }
        _ => {}
    }
    let client = Client::new(addr, cli.token)?;
    match cli.command {
        Command::Ls(args) => {
            let mut query = args.filters.query();
            if args.all {
                query.push(("include", "all".to_owned()));
            }
            list(&client, "/api/operations", &query, json, args.all)
        }
        Command::History(args) => list(&client, "/api/history", &args.filters.query(), json, true),
        Command::Show(args) => show(&client, &args, json),
        Command::Watch(args) => watch::run(
            client,
            WatchOptions {
                id: args.id,
                timeout: args.timeout,
                detail: args.detail.into(),
                json,
                ndjson: args.ndjson,
            },
        ),
        Command::Export(args) => export(&client, &args, json),
        Command::Cancel(args) => cancel(&client, &args, json),
        Command::Wait(args) => wait::run(
            &client,
            wait::WaitOptions {
                id: args.id,
                filters: args.filters(),
                timeout: args.timeout,
                detail: args.detail.into(),
                json,
            },
        ),
    }
}

/// A list answer. Each operation is read on its own, so one this client cannot read (a newer
/// schema, a value it does not know) is counted and skipped instead of failing the list.
#[derive(Deserialize)]
struct OperationList {
    operations: Vec<serde_json::Value>,
    truncated: bool,
}

/// `ls` and `history`.
fn list(
    client: &Client,
    path: &str,
    query: &Query,
    json: bool,
    finished_too: bool,
) -> Result<(), CliError> {
    let text = client.get_text(path, query)?;
    if json {
        return print_line(text.trim_end());
    }
    let list: OperationList = serde_json::from_str(&text)
        .map_err(|e| CliError::failure(format!("unexpected answer from the server: {e}")))?;
    if list.operations.is_empty() && !list.truncated {
        let what = if finished_too {
            "operations"
        } else {
            "running operations"
        };
        let filtered = query.iter().any(|(name, _)| *name != "include");
        return print_line(&if filtered {
            format!("no {what} match")
        } else {
            format!("no {what}")
        });
    }
    let listed = list.operations.len();
    let mut unreadable = Vec::new();
    let operations: Vec<ProgressState> = list
        .operations
        .into_iter()
        .filter_map(|v| {
            let id = v.get("id").and_then(serde_json::Value::as_u64);
            serde_json::from_value(v)
                .map_err(|e| unreadable.push((id, e)))
                .ok()
        })
        .collect();
    let mut out = table::operations(&operations);
    if list.truncated {
        out.push_str(&format!(
            "(more match: showing the first {listed}; use --limit to see more)\n"
        ));
    }
    if let Some((id, e)) = unreadable.first() {
        let id = id.map_or_else(|| "?".to_owned(), |id| id.to_string());
        out.push_str(&format!(
            "({} operation{} not shown: this client cannot read {} (first: id {id}: {e}); \
             --json shows the server's answer as it is)\n",
            unreadable.len(),
            if unreadable.len() == 1 { "" } else { "s" },
            if unreadable.len() == 1 { "it" } else { "them" },
        ));
    }
    print(&out)
}

/// `show ID`: the verbose view, rendered here from the JSON so every option works.
fn show(client: &Client, args: &ShowArgs, json: bool) -> Result<(), CliError> {
    let path = format!("/api/operations/{}", args.id);
    let text = client.get_text(&path, &Vec::new())?;
    if json {
        return print_line(text.trim_end());
    }
    let mut view = Verbose::new(args.detail.into()).max_children(args.max_children);
    if let Some(depth) = args.max_depth {
        view = view.max_depth(depth);
    }
    match parse_state(&text) {
        Ok(state) => print_line(&view.render(&state)),
        // A server with a newer schema still renders itself.
        Err(_) => {
            let query = vec![("detail", args.detail.as_str().to_owned())];
            print_line(&client.get_text(&format!("{path}/text"), &query)?)
        }
    }
}

/// `export`: the history as JSON lines from the server, or turned into a JSON array.
fn export(client: &Client, args: &ExportArgs, json: bool) -> Result<(), CliError> {
    let resp = client.get("/api/history.jsonl", &args.filters.query())?;
    let mut reader = BufReader::new(resp.into_body().into_reader());
    write_records(args, json, |emit| {
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| ExportError::Read(client.lost(&e)))?;
            if n == 0 {
                return Ok(());
            }
            let record = line.trim();
            if !record.is_empty() {
                emit(record)?;
            }
        }
    })
}

/// One JSON record to write; the writer's error stops the export.
pub(crate) type Emit<'a> = dyn FnMut(&str) -> Result<(), ExportError> + 'a;

/// Writes what `records` hands over to stdout or `--output`, in `--format`, with the summary.
pub(crate) fn write_records(
    args: &ExportArgs,
    json: bool,
    records: impl FnOnce(&mut Emit<'_>) -> Result<(), ExportError>,
) -> Result<(), CliError> {
    let count = match &args.output {
        None => {
            let stdout = io::stdout().lock();
            write_export(stdout, args.format, records).map_err(|e| match e {
                ExportError::Read(e) => e,
                ExportError::Write(e) => stdout_error(e),
            })?
        }
        Some(file) => export_to_file(file, args.format, records)?,
    };
    if let Some(file) = &args.output {
        let shown = one_line(&file.display().to_string());
        if json {
            let summary = serde_json::json!({
                "file": file.display().to_string(),
                "format": if args.format == Format::Json { "json" } else { "jsonl" },
                "operations": count,
            });
            print_line(&summary.to_string())?;
        } else {
            let _ = writeln!(
                io::stderr().lock(),
                "exported {count} operation{} to {shown}",
                if count == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

fn export_to_file(
    file: &Path,
    format: Format,
    records: impl FnOnce(&mut Emit<'_>) -> Result<(), ExportError>,
) -> Result<u64, CliError> {
    let shown = one_line(&file.display().to_string());
    let out =
        File::create(file).map_err(|e| CliError::failure(format!("cannot create {shown}: {e}")))?;
    match write_export(BufWriter::new(out), format, records) {
        Ok(count) => Ok(count),
        Err(e) => {
            // Leave no half-written export behind.
            let _ = std::fs::remove_file(file);
            Err(match e {
                ExportError::Read(e) => e,
                ExportError::Write(e) => CliError::failure(format!("cannot write {shown}: {e}")),
            })
        }
    }
}

/// Why an export stopped.
pub(crate) enum ExportError {
    /// Reading the records failed (server or file).
    Read(CliError),
    /// Writing the output failed.
    Write(io::Error),
}

impl From<tracing_progress::sqlite::HistoryFileError> for ExportError {
    fn from(e: tracing_progress::sqlite::HistoryFileError) -> Self {
        ExportError::Read(CliError::failure(e.to_string()))
    }
}

/// Writes the records one per line, or wrapped in an array; returns how many.
fn write_export(
    mut out: impl Write,
    format: Format,
    records: impl FnOnce(&mut Emit<'_>) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let mut count = 0u64;
    if format == Format::Json {
        out.write_all(b"[").map_err(ExportError::Write)?;
    }
    records(&mut |record: &str| {
        let sep: &[u8] = match (format, count) {
            (Format::Jsonl, _) => b"",
            (Format::Json, 0) => b"\n",
            (Format::Json, _) => b",\n",
        };
        out.write_all(sep)
            .and_then(|()| out.write_all(record.as_bytes()))
            .map_err(ExportError::Write)?;
        if format == Format::Jsonl {
            out.write_all(b"\n").map_err(ExportError::Write)?;
        }
        count += 1;
        Ok(())
    })?;
    if format == Format::Json {
        let end: &[u8] = if count == 0 { b"]\n" } else { b"\n]\n" };
        out.write_all(end).map_err(ExportError::Write)?;
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(count)
}

/// `cancel ID`, and with `--wait`, until it has ended.
fn cancel(client: &Client, args: &CancelArgs, json: bool) -> Result<(), CliError> {
    let id = args.id;
    let answer = client.post_text(&format!("/api/operations/{id}/cancel"))?;
    if !args.wait {
        return if json {
            print_line(answer.trim_end())
        } else {
            print_line(&format!("cancel requested for operation {id}"))
        };
    }
    if !json {
        print_line(&format!(
            "cancel requested for operation {id}; waiting for it to end"
        ))?;
    }
    let deadline = args.timeout.map(|t| Instant::now() + t);
    loop {
        let (state, text) = client.operation(id)?;
        if state.status.is_finished() {
            return if json {
                print_line(text.trim_end())
            } else {
                print_line(&active_path(&state))
            };
        }
        if let (Some(deadline), Some(timeout)) = (deadline, args.timeout)
            && Instant::now() >= deadline
        {
            return Err(CliError::new(
                Exit::Timeout,
                format!(
                    "timed out after {}: operation {id} is still running (cancel requested)",
                    human_duration(timeout)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
