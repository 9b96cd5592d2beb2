//! `watch`: follows the event stream and shows running operations live.
//!
//! A reader thread holds the `GET /api/events` stream (reconnecting with `Last-Event-ID`, so
//! no final state is lost) and hands events over a channel; the main thread keeps the latest
//! state of each operation and draws it:
//!
//! * on a terminal, in place through indicatif, at most ten times a second;
//! * otherwise as plain lines, the active path of an operation when it changed (at most one a
//!   second per operation), and each final state;
//! * with `--json`, one JSON object per event: `{"event":"snapshot","data":{...}}`;
//! * with `--ndjson`, the library's progress stream (`view::ProgressStream`): one JSON object
//!   per line per change of a node, each node at most once a second (status changes at once),
//!   final states included.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::io::{BufReader, IsTerminal};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_progress::ProgressState;
use tracing_progress::view::{Detail, ProgressStream, Verbose, active_path, format_duration};

use crate::client::{Client, SseEvent, parse_state, read_events};
use crate::error::{CliError, Exit, print, print_line, stdout_error};

/// How long the stream may stay down before `watch` gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(10);
/// Pause between reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// With nothing heard about the watched operation for this long, ask for it directly.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Plain mode prints an operation's changed line at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// The in-place view is redrawn at most ten times a second.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// `--ndjson`: how often held-back changes are looked at again with no new event.
const STREAM_TICK: Duration = Duration::from_millis(250);

pub(crate) struct WatchOptions {
    pub(crate) id: Option<u64>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) detail: Detail,
    pub(crate) json: bool,
    pub(crate) ndjson: bool,
}

enum Msg {
    Event(SseEvent),
    Failed(CliError),
}

pub(crate) fn run(client: Client, opts: WatchOptions) -> Result<(), CliError> {
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| started + t);
    let client = Arc::new(client);
    let mode = if opts.ndjson {
        Mode::Ndjson
    } else if opts.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Plain
    };
    let mut view = View::new(mode, opts.id, opts.detail, client.base());

    if let Some(id) = opts.id {
        let (state, text) = client.operation(id)?;
        if state.status.is_finished() {
            return view.end(&state, &text);
        }
        view.snapshot(state, &text)?;
    }

    let (tx, rx) = mpsc::channel();
    spawn_reader(client.clone(), tx);
    let mut last_heard = Instant::now();
    loop {
        let now = Instant::now();
        if let Some(deadline) = deadline
            && now >= deadline
        {
            view.close();
            let waited = opts.timeout.unwrap_or_default();
            return match opts.id {
                Some(id) => Err(CliError::new(
                    Exit::Timeout,
                    format!(
                        "timed out after {}: operation {id} is still running",
                        human_duration(waited)
                    ),
                )),
                None => Ok(()),
            };
        }
        let every = if mode == Mode::Ndjson {
            STREAM_TICK
        } else {
            CHECK_EVERY
        };
        let wait = deadline.map_or(every, |d| (d - now).min(every));
        match rx.recv_timeout(wait) {
            Ok(Msg::Event(event)) => match event.event.as_str() {
                "snapshot" => {
                    let state = parse_state(&event.data)?;
                    if opts.id.is_none_or(|id| id == state.id.as_u64()) {
                        last_heard = Instant::now();
                        view.snapshot(state, &event.data)?;
                    }
                }
                "finished" => {
                    let state = parse_state(&event.data)?;
                    match opts.id {
                        Some(id) if id == state.id.as_u64() => {
                            return view.end(&state, &event.data);
                        }
                        Some(_) => {}
                        None => view.finished(&state, &event.data)?,
                    }
                }
                "ready" | "missed" => {
                    if let Some(id) = opts.id {
                        last_heard = Instant::now();
                        if let Some((state, text)) = finished(&client, id)? {
                            return view.end(&state, &text);
                        }
                    } else if event.event == "missed" {
                        view.missed(&event.data)?;
                    }
                }
                _ => {}
            },
            Ok(Msg::Failed(e)) => {
                view.close();
                return Err(e);
            }
            Err(RecvTimeoutError::Timeout) => view.tick()?,
            Err(RecvTimeoutError::Disconnected) => {
                view.close();
                return Err(CliError::failure("the event stream reader stopped"));
            }
        }
        if let Some(id) = opts.id
            && last_heard.elapsed() >= CHECK_EVERY
        {
            last_heard = Instant::now();
            if let Some((state, text)) = finished(&client, id)? {
                return view.end(&state, &text);
            }
        }
    }
}

/// The operation's final state, if it finished.
fn finished(client: &Client, id: u64) -> Result<Option<(ProgressState, String)>, CliError> {
    let (state, text) = client.operation(id)?;
    Ok(state.status.is_finished().then_some((state, text)))
}

/// Reads the stream on its own thread.
fn spawn_reader(client: Arc<Client>, tx: Sender<Msg>) {
    let reader_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("events".into())
        .spawn(move || read_stream(&client, &reader_tx));
    if let Err(e) = spawned {
        let _ = tx.send(Msg::Failed(CliError::failure(format!(
            "cannot start a thread: {e}"
        ))));
    }
}

/// Sends the stream's events until the receiver is gone; reconnects, resuming after the last
/// event seen, for up to `RECONNECT_FOR`.
fn read_stream(client: &Client, tx: &Sender<Msg>) {
    let mut last: Option<u64> = None;
    let mut connected = false;
    let mut down_since: Option<Instant> = None;
    loop {
        match client.events(last) {
            Ok(resp) => {
                connected = true;
                down_since = None;
                let reader = BufReader::new(resp.into_body().into_reader());
                let mut open = true;
                // A read error ends this connection like the end of the stream does.
                let _ = read_events(reader, |event| {
                    if let Some(id) = event.id {
                        last = Some(id);
                    }
                    open = tx.send(Msg::Event(event)).is_ok();
                    open
                });
                if !open {
                    return;
                }
            }
            Err(CliError::Failed {
                exit: Exit::Unreachable,
                message,
            }) if connected => {
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECONNECT_FOR {
                    let _ = tx.send(Msg::Failed(CliError::new(
                        Exit::Unreachable,
                        format!(
                            "the event stream ended and reconnecting failed for {}: {message}",
                            human_duration(RECONNECT_FOR)
                        ),
                    )));
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(e));
                return;
            }
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Json,
    Ndjson,
    Plain,
    Live,
}

struct View {
    mode: Mode,
    target: Option<u64>,
    detail: Detail,
    addr: String,
    /// Latest state of each running operation.
    ops: BTreeMap<u64, ProgressState>,
    /// Plain mode: the last line printed per operation, and when.
    printed: HashMap<u64, (String, Instant)>,
    bar: Option<ProgressBar>,
    /// `--ndjson`: what is due per node.
    stream: ProgressStream,
}

impl View {
    fn new(mode: Mode, target: Option<u64>, detail: Detail, addr: &str) -> Self {
        let bar = (mode == Mode::Live).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout_with_hz(10));
            if let Ok(style) = ProgressStyle::with_template("{msg}") {
                bar.set_style(style);
            }
            bar.set_message(format!("connecting to {addr} …"));
            bar.enable_steady_tick(REDRAW_EVERY);
            bar
        });
        View {
            mode,
            target,
            detail,
            addr: addr.to_owned(),
            ops: BTreeMap::new(),
            printed: HashMap::new(),
            bar,
            stream: ProgressStream::new(),
        }
    }

    /// A running operation changed.
    fn snapshot(&mut self, state: ProgressState, json: &str) -> Result<(), CliError> {
        let id = state.id.as_u64();
        match self.mode {
            Mode::Json => print_line(&json_event("snapshot", json))?,
            Mode::Ndjson => self.stream_lines(&state)?,
            Mode::Plain => {
                let line = self.line(&state);
                let due = match self.printed.get(&id) {
                    None => true,
                    Some((last, at)) => *last != line && at.elapsed() >= PLAIN_EVERY,
                };
                if due {
                    print_line(&line)?;
                    self.printed.insert(id, (line, Instant::now()));
                }
            }
            Mode::Live => {}
        }
        self.ops.insert(id, state);
        self.redraw();
        Ok(())
    }

    /// An operation other than the watched one finished (watching everything).
    fn finished(&mut self, state: &ProgressState, json: &str) -> Result<(), CliError> {
        let id = state.id.as_u64();
        self.ops.remove(&id);
        self.printed.remove(&id);
        match self.mode {
            Mode::Json => print_line(&json_event("finished", json))?,
            Mode::Ndjson => self.stream_lines(state)?,
            Mode::Plain => print_line(&self.line(state))?,
            Mode::Live => self.above(&self.line(state))?,
        }
        self.redraw();
        Ok(())
    }

    /// Final states were lost (watching everything).
    fn missed(&mut self, data: &str) -> Result<(), CliError> {
        let note = "some operations finished unseen; see `tracing-progress history`";
        match self.mode {
            Mode::Json => print_line(&json_event("missed", data)),
            // The stream's lines have one shape; the note goes to stderr.
            Mode::Ndjson => {
                let _ = writeln!(std::io::stderr().lock(), "{note}");
                Ok(())
            }
            Mode::Plain => print_line(note),
            Mode::Live => self.above(note),
        }
    }

    /// The watched operation finished: print its final state and stop.
    fn end(mut self, state: &ProgressState, json: &str) -> Result<(), CliError> {
        self.close();
        match self.mode {
            Mode::Json => print_line(&json_event("finished", json)),
            Mode::Ndjson => self.stream_lines(state),
            Mode::Plain => {
                print_line(&self.line(state))?;
                print("\n")?;
                print_line(&Verbose::new(self.detail).render(state))
            }
            Mode::Live => print_line(&Verbose::new(self.detail).render(state)),
        }
    }

    /// `--ndjson`: the lines due for this state.
    fn stream_lines(&mut self, state: &ProgressState) -> Result<(), CliError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut out = std::io::stdout().lock();
        self.stream
            .write(state, now, &mut out)
            .map(drop)
            .map_err(stdout_error)
    }

    /// No new event for a while: with `--ndjson`, changes held back may be due now.
    fn tick(&mut self) -> Result<(), CliError> {
        if self.mode != Mode::Ndjson {
            return Ok(());
        }
        let ops: Vec<ProgressState> = self.ops.values().cloned().collect();
        for state in &ops {
            self.stream_lines(state)?;
        }
        Ok(())
    }

    /// Prints a line above the in-place view.
    fn above(&self, line: &str) -> Result<(), CliError> {
        match &self.bar {
            Some(bar) => bar.suspend(|| print_line(line)),
            None => print_line(line),
        }
    }

    /// Clears the in-place view.
    fn close(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn line(&self, state: &ProgressState) -> String {
        if self.target.is_some() {
            active_path(state)
        } else {
            format!("#{} {}", state.id, active_path(state))
        }
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else {
            return;
        };
        // Each operation gets its share of the screen; within it the running levels stay and
        // finished ones give way first (the final `fit` still guards against wrapped lines).
        let (rows, cols) = console::Term::stdout().size();
        let share = (usize::from(rows).saturating_sub(1) / self.ops.len().max(1)).max(4);
        let summary = Verbose::new(Detail::Summary)
            .max_children(6)
            .max_lines(share.saturating_sub(3));
        let mut frame = String::new();
        for state in self.ops.values() {
            if !frame.is_empty() {
                frame.push_str("\n\n");
            }
            // Where it is now first: it stays visible when the tree is cut to the screen.
            frame.push_str(&self.line(state));
            frame.push('\n');
            frame.push_str(summary.render(state).trim_end());
        }
        if frame.is_empty() {
            frame = format!("no running operations at {} (waiting …)", self.addr);
        }
        bar.set_message(fit(&frame, usize::from(rows), usize::from(cols)));
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.close();
    }
}

/// The frame cut to fit `rows - 1` terminal rows of `cols` columns (long lines wrap), ending
/// with a line that says how much was left out. Drawing more than the screen holds would
/// scroll the terminal and break the redraw in place.
fn fit(frame: &str, rows: usize, cols: usize) -> String {
    let room = rows.saturating_sub(1).max(2);
    let cols = cols.max(1);
    let height = |line: &str| line.chars().count().div_ceil(cols).max(1);
    let lines: Vec<&str> = frame.lines().collect();
    if lines.iter().map(|l| height(l)).sum::<usize>() <= room {
        return frame.to_owned();
    }
    let mut used = 1; // the closing note
    let mut kept = 0;
    for line in &lines {
        let h = height(line);
        if used + h > room {
            break;
        }
        used += h;
        kept += 1;
    }
    let mut out = lines[..kept].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    let note = format!(
        "… {} more lines (a taller terminal shows more)",
        lines.len() - kept
    );
    out.extend(note.chars().take(cols));
    out
}

fn json_event(event: &str, data: &str) -> String {
    format!(r#"{{"event":"{event}","data":{}}}"#, data.trim())
}

/// A `Duration` written the way the library writes durations ([`format_duration`]):
/// `250ms`, `1.5s`, `5.0s`, `0:02:00`.
pub(crate) fn human_duration(d: Duration) -> String {
    format_duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Parses `30`, `30s`, `1.5s`, `500ms`, `2m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: expected e.g. 30s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: expected ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fit_the_terminal() {
        let frame = "a\nbb\nccc\nd";
        assert_eq!(fit(frame, 10, 80), frame);
        assert_eq!(
            fit(frame, 4, 80),
            "a\nbb\n… 2 more lines (a taller terminal shows more)"
        );
        // Wrapped lines count as several rows; the note is cut to the width.
        assert_eq!(fit("aaaa\nb\nc", 4, 2), "aaaa\n… ");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(human_duration(Duration::from_secs(5)), "5.0s");
        assert_eq!(human_duration(Duration::from_secs(120)), "0:02:00");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::MAX), format_duration(u64::MAX));
    }
}
