//! Child processes inside the parent's tree (feature `process`, Unix).
//!
//! In the parent, [`CommandExt::spawn_tracked`] (or [`CommandExt::progress_link`] for a
//! command spawned some other way, e.g. `tokio::process::Command::as_std_mut`) hangs a
//! `subprocess` node under the current tracked span and passes the child, through
//! environment variables, where to report and the W3C `TRACEPARENT` (with feature `otel`). In
//! the child, [`Builder::build`](crate::Builder::build) (and so [`layer()`](crate::layer))
//! notices them and reports its operations; the parent splices the latest report under the
//! subprocess node, live, in its snapshots, page, CLI, views and history. The node carries the
//! child's `pid`, `command` and, once [`TrackedChild::wait`] saw it end, `exit_code` or
//! `signal`: a child that exits non-zero or is killed ends failed with it, and one that never
//! reports is a plain subprocess node. Cancelling the parent's operation reaches the child
//! ([`is_cancelled`](crate::is_cancelled) turns true there).
//!
//! The transport is a Unix socket the parent listens on (abstract on Linux), one connection
//! per child, speaking a versioned JSON-lines protocol that any language can speak: see
//! `docs/subprocess.md`. Both sides are bounded: the child reports from its own thread, with
//! write timeouts, and gives up on a slow or dead parent while it keeps working; the parent
//! reads lines of at most [`MAX_LINE_BYTES`], keeps at most [`MAX_REPORT_NODES`] nodes of a
//! report (the latest only) and at most [`MAX_CONNECTIONS`] children at once.
//!
//! ```no_run
//! use std::process::Command;
//! use tracing_progress::process::CommandExt;
//!
//! #[tracing::instrument(fields(progress.level = "block"))]
//! fn encode() -> std::io::Result<()> {
//!     let status = Command::new("encoder").arg("in.wav").spawn_tracked()?.wait()?;
//!     if !status.success() {
//!         tracing::error!(%status, "encoder failed");
//!     }
//!     Ok(())
//! }
//! ```

mod child;
mod parent;
mod wire;

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Span;

pub(crate) use child::install as install_child;
use parent::GraftCell;
pub use parent::MAX_CONNECTIONS;
pub use wire::{MAX_LINE_BYTES, MAX_REPORT_DEPTH, MAX_REPORT_NODES, PROTOCOL_VERSION};

use crate::model::NodeId;

/// Environment variable with the parent's socket address (`@name`: Linux abstract socket).
pub const ENV_PARENT: &str = "TRACING_PROGRESS_PARENT";
/// Environment variable with the token that names the child's subprocess node.
pub const ENV_GRAFT: &str = "TRACING_PROGRESS_GRAFT";
/// Environment variable with the W3C trace context of the spawning span (feature `otel`).
pub const ENV_TRACEPARENT: &str = "TRACEPARENT";

/// Counters of this process's subprocess reporting, both sides; see [`stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessStats {
    /// Connections accepted from children.
    pub connections: u64,
    /// Connections refused: over [`MAX_CONNECTIONS`].
    pub refused: u64,
    /// Connections closed for a bad hello (unknown or reused token, none within 5 s).
    pub rejected: u64,
    /// Reports applied.
    pub reports: u64,
    /// Lines that were not a message (not JSON, wrong shape, longer than [`MAX_LINE_BYTES`]).
    pub garbage: u64,
    /// Messages of a protocol version this side does not speak.
    pub unsupported_version: u64,
    /// Well-formed messages of an unknown type (ignored).
    pub ignored: u64,
    /// Reported nodes dropped past [`MAX_REPORT_NODES`] or [`MAX_REPORT_DEPTH`].
    pub nodes_dropped: u64,
    /// Children connected now.
    pub open_connections: u64,
    /// Child side: reports sent to the parent.
    pub sent: u64,
    /// Child side: true once the parent could not be reached or stopped reading; the child
    /// then keeps working and reporting to its own store only.
    pub parent_lost: bool,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    rejected: AtomicU64,
    reports: AtomicU64,
    garbage: AtomicU64,
    unsupported_version: AtomicU64,
    ignored: AtomicU64,
    nodes_dropped: AtomicU64,
    sent: AtomicU64,
    parent_lost: AtomicU64,
}

static STATS: Counters = Counters {
    connections: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    reports: AtomicU64::new(0),
    garbage: AtomicU64::new(0),
    unsupported_version: AtomicU64::new(0),
    ignored: AtomicU64::new(0),
    nodes_dropped: AtomicU64::new(0),
    sent: AtomicU64::new(0),
    parent_lost: AtomicU64::new(0),
};

/// This process's subprocess counters (process-wide: one socket serves every store).
pub fn stats() -> ProcessStats {
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    ProcessStats {
        connections: l(&STATS.connections),
        refused: l(&STATS.refused),
        rejected: l(&STATS.rejected),
        reports: l(&STATS.reports),
        garbage: l(&STATS.garbage),
        unsupported_version: l(&STATS.unsupported_version),
        ignored: l(&STATS.ignored),
        nodes_dropped: l(&STATS.nodes_dropped),
        open_connections: parent::open_connections() as u64,
        sent: l(&STATS.sent),
        parent_lost: l(&STATS.parent_lost) > 0,
    }
}

/// The parent's side of one child: tells its subprocess node that the child started and how
/// it ended. Made by [`CommandExt::progress_link`]; [`TrackedChild`] drives it for you.
///
/// Outside a tracked span (or when the socket could not be opened) it is empty and every
/// method does nothing.
#[derive(Clone, Default)]
pub struct ChildLink {
    cell: Option<Arc<GraftCell>>,
}

impl std::fmt::Debug for ChildLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildLink")
            .field("node", &self.node_id())
            .finish()
    }
}

impl ChildLink {
    /// Id of the subprocess node, if there is one.
    pub fn node_id(&self) -> Option<NodeId> {
        self.cell.as_ref().map(|c| c.node_id())
    }

    /// The child started with this process id.
    pub fn spawned(&self, pid: u32) {
        if let Some(c) = &self.cell {
            c.spawned(pid);
        }
    }

    /// The child could not be started: the node ends failed with the error.
    pub fn spawn_failed(&self, error: &io::Error) {
        if let Some(c) = &self.cell {
            c.spawn_failed(error);
        }
    }

    /// The child ended: a non-zero code or a signal fails the node.
    pub fn exited(&self, status: &ExitStatus) {
        if let Some(c) = &self.cell {
            c.exited(status);
        }
    }
}

/// A child started by [`CommandExt::spawn_tracked`]: a [`Child`] whose end is recorded on its
/// subprocess node by [`wait`](Self::wait), [`try_wait`](Self::try_wait) and
/// [`wait_with_output`](Self::wait_with_output).
#[derive(Debug)]
pub struct TrackedChild {
    child: Child,
    link: ChildLink,
}

impl TrackedChild {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The link to the subprocess node.
    pub fn link(&self) -> &ChildLink {
        &self.link
    }

    /// The standard [`Child`] (pipes, `kill`). If you wait on it directly, tell
    /// [`link`](Self::link) how it ended.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends SIGKILL (see [`Child::kill`]); the node ends failed once the child is waited for.
    pub fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Waits for the child and records how it ended.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.link.exited(&status);
        Ok(status)
    }

    /// Records how the child ended, if it did.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if let Some(s) = &status {
            self.link.exited(s);
        }
        Ok(status)
    }

    /// Collects the output, waits and records how the child ended.
    pub fn wait_with_output(self) -> io::Result<Output> {
        let out = self.child.wait_with_output()?;
        self.link.exited(&out.status);
        Ok(out)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::process::Command {}
}

/// Spawning a child whose progress joins the parent's tree; on [`std::process::Command`].
pub trait CommandExt: sealed::Sealed {
    /// Prepares the command to report to a new `subprocess` node under the current tracked
    /// span (sets [`ENV_PARENT`], [`ENV_GRAFT`] and, with feature `otel`, [`ENV_TRACEPARENT`]).
    /// Outside a tracked span it removes those variables instead, so the child does not
    /// report to a node it was not meant for, and returns an empty link.
    ///
    /// Call [`ChildLink::spawned`] and [`ChildLink::exited`] yourself, e.g. around a
    /// `tokio::process::Command` prepared through `as_std_mut()`.
    fn progress_link(&mut self) -> ChildLink;

    /// [`progress_link`](Self::progress_link), then spawn.
    fn spawn_tracked(&mut self) -> io::Result<TrackedChild>;
}

fn describe(cmd: &Command) -> (String, String) {
    let program = cmd.get_program();
    let name = std::path::Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy()
        .into_owned();
    let mut line = program.to_string_lossy().into_owned();
    for a in cmd.get_args() {
        if line.len() > 512 {
            line.push_str(" ...");
            break;
        }
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    (name, line)
}

impl CommandExt for Command {
    fn progress_link(&mut self) -> ChildLink {
        self.env_remove(ENV_PARENT).env_remove(ENV_GRAFT);
        let span = Span::current();
        let (name, line) = describe(self);
        let mut link = ChildLink::default();
        let mut address = None;
        crate::layer::span_ext::with_node_handle(&span, |node| {
            // The socket is opened by the first child spawned inside a tracked span.
            let Ok(listener) = parent::listener() else {
                return;
            };
            let limits = node.limits();
            let cell = GraftCell::new(
                &name,
                &line,
                limits.max_text_len,
                limits.max_metadata_entries,
            );
            let graft: Arc<dyn crate::store::graft::Graft> = cell.clone();
            if let Some(l) = node.graft(graft) {
                cell.set_link(l);
                link.cell = Some(cell);
                address = Some(listener.address.as_str());
            }
        });
        if let (Some(cell), Some(address)) = (&link.cell, address) {
            self.env(ENV_PARENT, OsStr::new(address))
                .env(ENV_GRAFT, cell.token());
            #[cfg(feature = "otel")]
            if let Some(tp) = traceparent(&span) {
                self.env(ENV_TRACEPARENT, tp);
            }
        }
        link
    }

    fn spawn_tracked(&mut self) -> io::Result<TrackedChild> {
        let link = self.progress_link();
        match self.spawn() {
            Ok(child) => {
                link.spawned(child.id());
                Ok(TrackedChild { child, link })
            }
            Err(e) => {
                link.spawn_failed(&e);
                Err(e)
            }
        }
    }
}

/// The W3C `traceparent` of the span's OpenTelemetry context, when it has a valid one.
#[cfg(feature = "otel")]
fn traceparent(span: &Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
