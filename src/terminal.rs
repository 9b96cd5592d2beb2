//! A live terminal view of running operations (feature `terminal`).
//!
//! [`LiveView::start`] spawns a thread that redraws the running operations in place, at most
//! ten times a second, through `indicatif` (which owns the cursor movement and clearing).
//! Log lines written through [`LiveViewHandle::log_writer`] (give it to `fmt::layer()
//! .with_writer(..)`) are printed *above* the view: the view is lifted, the line printed,
//! the view redrawn. When stdout is not a terminal (a pipe, a file, CI) the view falls back to
//! plain text printed every [`LiveView::plain_interval`], or, with [`LiveView::ndjson`], to
//! the machine-readable [`ProgressStream`](crate::view::ProgressStream) (one JSON object per
//! line per change, for CI logs). When the handle is finished or dropped the view is cleared,
//! so nothing is left on screen but the logs.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! let (progress, store) = tracing_progress::layer();
//! let live = tracing_progress::terminal::LiveView::new(store.clone()).start();
//! tracing_subscriber::registry()
//!     .with(progress)
//!     .with(tracing_subscriber::fmt::layer().with_writer(live.log_writer()))
//!     .init();
//! // ... run the work ...
//! live.finish();
//! ```

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

use crate::model::ProgressState;
use crate::store::Store;

type Render = Arc<dyn Fn(&ProgressState) -> String + Send + Sync>;

/// The fastest redraw: ten times a second.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// Settings of a live view; [`start`](LiveView::start) it to get a [`LiveViewHandle`].
///
/// | setting | default |
/// |---|---|
/// | [`refresh`](LiveView::refresh) | 100 ms (the minimum: ≤ 10 redraws/s) |
/// | [`plain_interval`](LiveView::plain_interval) | 1 s |
/// | [`render_with`](LiveView::render_with) | the verbose view, one line per level, long runs collapsed |
/// | [`plain_render_with`](LiveView::plain_render_with) | the verbose view, full detail |
/// | [`plain`](LiveView::plain) | decided by whether stdout is a terminal |
/// | [`ndjson`](LiveView::ndjson) | off: plain mode prints text |
#[must_use]
pub struct LiveView {
    store: Store,
    refresh: Duration,
    plain_interval: Duration,
    render: Render,
    plain_render: Render,
    plain: Option<bool>,
    ndjson: bool,
}

impl fmt::Debug for LiveView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveView")
            .field("refresh", &self.refresh)
            .field("plain_interval", &self.plain_interval)
            .field("plain", &self.plain)
            .field("ndjson", &self.ndjson)
            .finish_non_exhaustive()
    }
}

impl LiveView {
    /// A view of the running operations of `store`.
    pub fn new(store: Store) -> Self {
        LiveView {
            store,
            refresh: MIN_REFRESH,
            plain_interval: Duration::from_secs(1),
            render: Arc::new(default_render),
            plain_render: Arc::new(default_plain_render),
            plain: None,
            ndjson: false,
        }
    }

    /// How often the in-place view is redrawn (at least 100 ms apart).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(MIN_REFRESH);
        self
    }

    /// How often plain text is printed when stdout is not a terminal (at least 100 ms apart).
    pub fn plain_interval(mut self, every: Duration) -> Self {
        self.plain_interval = every.max(MIN_REFRESH);
        self
    }

    /// How an operation is drawn in place.
    pub fn render_with(
        mut self,
        f: impl Fn(&ProgressState) -> String + Send + Sync + 'static,
    ) -> Self {
        self.render = Arc::new(f);
        self
    }

    /// How an operation is printed in plain mode.
    pub fn plain_render_with(
        mut self,
        f: impl Fn(&ProgressState) -> String + Send + Sync + 'static,
    ) -> Self {
        self.plain_render = Arc::new(f);
        self
    }

    /// Forces plain mode on or off instead of asking whether stdout is a terminal.
    pub fn plain(mut self, on: bool) -> Self {
        self.plain = Some(on);
        self
    }

    /// In plain mode, writes the [`ProgressStream`](crate::view::ProgressStream) to stdout
    /// instead of text: one JSON object per line per change of a node, each node at most once
    /// per [`plain_interval`](Self::plain_interval) (status changes at once), final states
    /// included. The in-place view on a terminal is unchanged.
    pub fn ndjson(mut self, on: bool) -> Self {
        self.ndjson = on;
        self
    }

    /// Starts drawing on a background thread.
    pub fn start(self) -> LiveViewHandle {
        let plain = self.plain.unwrap_or_else(|| !io::stdout().is_terminal());
        let bar = (!plain).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout_with_hz(10));
            if let Ok(style) = ProgressStyle::with_template("{msg}") {
                bar.set_style(style);
            }
            bar
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let view_bar = bar.clone();
        let thread = std::thread::Builder::new()
            .name("tracing-progress-live-view".into())
            .spawn(move || {
                // Nothing this thread does may feed back into the layer.
                let _quiet =
                    tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
                if view_bar.is_none() && self.ndjson {
                    return self.stream(&stopped);
                }
                let every = if view_bar.is_some() {
                    self.refresh
                } else {
                    self.plain_interval
                };
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let active = self.store.active();
                    match &view_bar {
                        Some(bar) => bar.set_message(frame(&active, &*self.render)),
                        None if !active.is_empty() => {
                            let text = frame(&active, &*self.plain_render);
                            let mut out = io::stdout().lock();
                            let _ = out.write_all(text.as_bytes());
                            let _ = out.write_all(b"\n\n");
                            let _ = out.flush();
                        }
                        None => {}
                    }
                }
            })
            .ok();
        LiveViewHandle {
            bar,
            stop: Some(stop),
            thread,
        }
    }
}

impl LiveView {
    /// The JSON-lines loop of [`ndjson`](Self::ndjson): every `refresh` the latest snapshots
    /// and the final states go through one stream, which decides what is due.
    fn stream(&self, stopped: &mpsc::Receiver<()>) {
        let mut stream = crate::view::ProgressStream::new().min_interval(self.plain_interval);
        let mut sub = self.store.subscribe();
        let mut out = io::stdout();
        loop {
            let stop = !matches!(
                stopped.recv_timeout(self.refresh),
                Err(RecvTimeoutError::Timeout)
            );
            // The subscription is for the final states; the running ones are read fresh each
            // time and let go at once (a snapshot kept here would make every later snapshot
            // of the operation a full build instead of a refresh in place).
            let finished = sub.poll().finished;
            let now = self.store.now_us();
            // The latest state of every running operation each time (a held-back change is
            // written once due), then the final states; a failed write (stdout closed) is not
            // the host's problem.
            let active = self.store.active();
            for op in active.iter().chain(&finished) {
                let _ = stream.write(op, now, &mut out);
            }
            stream.retain(|id| active.iter().any(|a| a.id == id));
            drop(active);
            if stop {
                return;
            }
        }
    }
}

fn frame(
    active: &[Arc<ProgressState>],
    render: &(dyn Fn(&ProgressState) -> String + Send + Sync),
) -> String {
    let mut text = String::new();
    for op in active {
        text.push_str(&render(op));
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    text.trim_end().to_string()
}

fn default_render(state: &ProgressState) -> String {
    // One line per level, fitted to the terminal (running levels first, a marker for what is
    // left out), keeps the live view redrawable in place.
    let (rows, _) = console::Term::stdout().size();
    crate::view::Verbose::new(crate::view::Detail::Summary)
        .max_children(6)
        .max_lines(usize::from(rows.max(4)) - 1)
        .render(state)
}

fn default_plain_render(state: &ProgressState) -> String {
    crate::view::Verbose::new(crate::view::Detail::Verbose)
        .max_children(8)
        .render(state)
}

/// A running live view; finish it (or drop it) to stop drawing and clear the view.
pub struct LiveViewHandle {
    bar: Option<ProgressBar>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for LiveViewHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveViewHandle")
            .field("in_place", &self.bar.is_some())
            .finish_non_exhaustive()
    }
}

impl LiveViewHandle {
    /// Whether the view is drawn in place (stdout is a terminal) rather than printed.
    pub fn in_place(&self) -> bool {
        self.bar.is_some()
    }

    /// A writer for `fmt::layer().with_writer(..)`: each log line goes to stderr above the
    /// view instead of through it.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            bar: self.bar.clone(),
        }
    }

    /// Stops drawing and clears the view from the terminal.
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for LiveViewHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Writes log lines above a live view; see [`LiveViewHandle::log_writer`].
#[derive(Clone)]
pub struct LogWriter {
    bar: Option<ProgressBar>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            bar: self.bar.clone(),
            buf: Vec::new(),
        }
    }
}

/// One log record, printed in one piece when dropped.
pub struct LineWriter {
    bar: Option<ProgressBar>,
    buf: Vec<u8>,
}

impl fmt::Debug for LineWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineWriter")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let print = || {
            let mut err = io::stderr().lock();
            let _ = err.write_all(&self.buf);
            let _ = err.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}
