//! Parent side: one socket per process that children report to, and the subprocess nodes
//! (grafts) their reports fill.
//!
//! One thread accepts; each connection gets a small thread that reads lines with a short
//! timeout, so it can pass a cancel request on. Memory per connection is bounded by the line
//! limit and the node limit of a report; connections are capped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::STATS;
use super::wire::{
    Converter, MAX_LINE_BYTES, MAX_REPORT_DEPTH, MAX_REPORT_NODES, Message, PROTOCOL_VERSION,
    WireNode,
};
use crate::model::{
    CancelReason, ErrorInfo, ErrorOrigin, FailureSummary, FieldValue, Metadata, NodeId,
    ProgressLevel, Status, Timing,
};
use crate::store::graft::{Graft, GraftLink};

/// Most children connected at once; more are refused (and counted).
pub const MAX_CONNECTIONS: usize = 256;
/// Stack of a connection thread: parsing a report recurses once per nesting level, up to
/// serde_json's limit of 128 (tested in a debug build); only the touched pages cost memory.
const CONNECTION_STACK: usize = 1024 * 1024;
/// A child must say hello within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection thread looks for a cancel request while the child is quiet.
const POLL: Duration = Duration::from_millis(20);
/// Longest [`GraftCell::exited`] waits for the child's connection to be read to its end: a
/// child's last report can still be in the socket when its exit is seen (the reading thread
/// not scheduled yet on a loaded machine), and the subtree would end one report short.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

pub(crate) fn now_us() -> u64 {
    crate::store::system_time_to_us(std::time::SystemTime::now())
}

/// A random 64-bit value (std's hasher keys are random per process and per `RandomState`).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_us());
    h.write_u32(std::process::id());
    h.finish()
}

/// The process's socket: its address as children get it in `TRACING_PROGRESS_PARENT`.
pub(crate) struct Listener {
    pub(crate) address: String,
}

static LISTENER: OnceLock<Result<Listener, String>> = OnceLock::new();
static GRAFTS: OnceLock<Mutex<HashMap<u64, Weak<GraftCell>>>> = OnceLock::new();
static OPEN: AtomicUsize = AtomicUsize::new(0);

fn grafts() -> &'static Mutex<HashMap<u64, Weak<GraftCell>>> {
    GRAFTS.get_or_init(Default::default)
}

/// The listener, started on first use.
pub(crate) fn listener() -> Result<&'static Listener, &'static str> {
    LISTENER
        .get_or_init(start_listener)
        .as_ref()
        .map_err(|e| e.as_str())
}

fn start_listener() -> Result<Listener, String> {
    let name = format!(
        "tracing-progress-{}-{:016x}",
        std::process::id(),
        random_u64()
    );
    let (socket, address) = bind(&name).map_err(|e| format!("progress socket: {e}"))?;
    std::thread::Builder::new()
        .name("progress-accept".into())
        .spawn(move || accept_loop(socket))
        .map_err(|e| format!("progress socket thread: {e}"))?;
    Ok(Listener { address })
}

#[cfg(target_os = "linux")]
fn bind(name: &str) -> io::Result<(UnixListener, String)> {
    // An abstract socket: no file to clean up, gone with the process.
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    Ok((UnixListener::bind_addr(&addr)?, format!("@{name}")))
}

#[cfg(not(target_os = "linux"))]
fn bind(name: &str) -> io::Result<(UnixListener, String)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join("s");
    let listener = UnixListener::bind(&path)?;
    Ok((listener, path.to_string_lossy().into_owned()))
}

fn accept_loop(socket: UnixListener) {
    for stream in socket.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors and the like: wait a little rather than spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if OPEN.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            STATS.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        OPEN.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("progress-child".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                serve(stream);
                OPEN.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            STATS.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Code(i32),
    Signal(i32),
}

/// One subprocess node: what the parent knows of the child, and the child's latest report.
pub(crate) struct GraftCell {
    id: u64,
    secret: u64,
    connected: AtomicBool,
    link: OnceLock<GraftLink>,
    state: Mutex<GraftState>,
    /// Signalled when the connection's thread stops reading (`GraftState::drained`).
    drained_cv: Condvar,
}

struct GraftState {
    /// The child's connection was read to its end (or given up on).
    drained: bool,
    node_id: NodeId,
    name: Arc<str>,
    command: Arc<str>,
    created_us: u64,
    spawned_us: Option<u64>,
    exited_us: Option<u64>,
    pid: Option<u32>,
    exit: Option<Exit>,
    spawn_error: Option<Arc<str>>,
    cancel_sent: bool,
    reports: u64,
    reported: Vec<ProgressLevel>,
    errors: Vec<ErrorInfo>,
    ids: HashMap<String, NodeId>,
    max_text: usize,
    max_metadata: usize,
}

fn target() -> Arc<str> {
    static T: OnceLock<Arc<str>> = OnceLock::new();
    T.get_or_init(|| Arc::from("tracing_progress::process"))
        .clone()
}

fn span_name() -> Arc<str> {
    static T: OnceLock<Arc<str>> = OnceLock::new();
    T.get_or_init(|| Arc::from("subprocess")).clone()
}

impl GraftCell {
    pub(crate) fn new(
        name: &str,
        command: &str,
        max_text: usize,
        max_metadata: usize,
    ) -> Arc<Self> {
        let cell = Arc::new(GraftCell {
            id: NodeId::next().as_u64(),
            secret: random_u64(),
            connected: AtomicBool::new(false),
            link: OnceLock::new(),
            drained_cv: Condvar::new(),
            state: Mutex::new(GraftState {
                drained: false,
                node_id: NodeId::next(),
                name: Arc::from(name),
                command: Arc::from(command),
                created_us: now_us(),
                spawned_us: None,
                exited_us: None,
                pid: None,
                exit: None,
                spawn_error: None,
                cancel_sent: false,
                reports: 0,
                reported: Vec::new(),
                errors: Vec::new(),
                ids: HashMap::new(),
                max_text,
                max_metadata,
            }),
        });
        let mut map = grafts().lock();
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(cell.id, Arc::downgrade(&cell));
        cell
    }

    /// The token a child presents (`TRACING_PROGRESS_GRAFT`).
    pub(crate) fn token(&self) -> String {
        format!("{}-{:016x}", self.id, self.secret)
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.state.lock().node_id
    }

    pub(crate) fn set_link(&self, link: GraftLink) {
        let _ = self.link.set(link);
    }

    fn changed(&self) {
        if let Some(link) = self.link.get() {
            link.changed();
        }
    }

    pub(crate) fn spawned(&self, pid: u32) {
        {
            let mut s = self.state.lock();
            s.pid = Some(pid);
            s.spawned_us = Some(now_us());
        }
        self.changed();
    }

    pub(crate) fn spawn_failed(&self, error: &io::Error) {
        {
            let mut s = self.state.lock();
            let message = format!("could not start {}: {error}", s.command);
            s.spawn_error = Some(clip(&message, s.max_text));
            s.exited_us = Some(now_us());
        }
        self.changed();
    }

    pub(crate) fn exited(&self, status: &ExitStatus) {
        {
            let mut s = self.state.lock();
            if s.exit.is_some() {
                return;
            }
            // Its last reports first: the child is gone, so its end of the socket is closed
            // and the connection's thread reaches the end as soon as it runs.
            if self.connected.load(Ordering::Acquire) {
                let deadline = Instant::now() + DRAIN_WAIT;
                while !s.drained {
                    if self.drained_cv.wait_until(&mut s, deadline).timed_out() {
                        break;
                    }
                }
            }
            s.exit = Some(match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            });
            s.exited_us = Some(now_us());
        }
        self.changed();
    }

    /// Replaces the reported subtree.
    fn report(&self, nodes: Vec<WireNode>) {
        let now = now_us();
        let base: Vec<Arc<str>> = self.link.get().map(|l| l.path.clone()).unwrap_or_default();
        {
            let mut guard = self.state.lock();
            let s = &mut *guard;
            let mut path = base;
            path.push(s.name.clone());
            // The whole tree within 56 levels, so its JSON (two nestings a level, plus metadata and
            // the wrappers around a state) stays under serde_json's limit of 128.
            let max_depth = MAX_REPORT_DEPTH
                .min(56usize.saturating_sub(path.len()))
                .max(1);
            let mut conv = Converter {
                ids: &mut s.ids,
                seen: HashMap::new(),
                max_text: s.max_text,
                max_metadata: s.max_metadata,
                budget: MAX_REPORT_NODES,
                max_depth,
                dropped: 0,
                target: target(),
                span_name: span_name(),
                errors: Vec::new(),
            };
            let mut levels = Vec::new();
            for (i, n) in nodes.into_iter().enumerate() {
                if conv.budget == 0 {
                    conv.dropped += 1;
                    continue;
                }
                levels.push(conv.level(n, i.to_string(), &mut path, 0, now));
            }
            let Converter {
                seen,
                dropped,
                errors,
                ..
            } = conv;
            // Only positions still reported keep their ids: the map stays as big as a report.
            s.ids = seen;
            s.reported = levels;
            s.errors = errors;
            s.reports += 1;
            STATS.nodes_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        STATS.reports.fetch_add(1, Ordering::Relaxed);
        self.changed();
    }

    /// Whether a cancel request should go to the child now (true once).
    fn cancel_due(&self) -> bool {
        let cancelled = self.link.get().is_some_and(|l| l.is_cancelled());
        if !cancelled {
            return false;
        }
        let mut s = self.state.lock();
        !std::mem::replace(&mut s.cancel_sent, true)
    }
}

fn clip(s: &str, max: usize) -> Arc<str> {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&s[..end])
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Ends every open node of a finished child's report with `status`.
fn close_open(levels: &mut [ProgressLevel], status: Status, at_us: u64) {
    for l in levels {
        if !l.status.is_finished() {
            l.status = status;
            l.timing.completed_at_us = Some(at_us);
            l.estimate = None;
            if status == Status::Cancelled {
                l.cancel_reason = Some(CancelReason::Requested);
            }
        }
        close_open(&mut l.children, status, at_us);
    }
}

impl Graft for GraftCell {
    fn level(&self, now_us: u64) -> ProgressLevel {
        let s = self.state.lock();
        let path = || {
            let mut p: Vec<Arc<str>> = self.link.get().map(|l| l.path.clone()).unwrap_or_default();
            p.push(s.name.clone());
            p
        };
        let cancel_sent = s.cancel_sent;
        let mut children = s.reported.clone();
        let all_cancelled =
            !children.is_empty() && children.iter().all(|c| c.status == Status::Cancelled);
        let (status, message) = match (&s.spawn_error, s.exit) {
            (Some(e), _) => (Status::Failed, Some(e.clone())),
            (None, None) if s.spawned_us.is_some() => (Status::Running, None),
            (None, None) => (Status::Pending, None),
            (None, Some(Exit::Code(0))) if cancel_sent && all_cancelled => {
                (Status::Cancelled, None)
            }
            (None, Some(Exit::Code(0))) => (Status::Completed, None),
            (None, Some(Exit::Code(code))) => (
                Status::Failed,
                Some(Arc::from(format!("{} exited with status {code}", s.name))),
            ),
            (None, Some(Exit::Signal(sig))) => (
                Status::Failed,
                Some(Arc::from(format!(
                    "{} killed by signal {sig} ({})",
                    s.name,
                    signal_name(sig)
                ))),
            ),
        };
        if status.is_finished() {
            close_open(&mut children, status, s.exited_us.unwrap_or(now_us));
        }
        let mut metadata = Metadata::default();
        metadata.insert("command", FieldValue::Str(s.command.clone()));
        if let Some(pid) = s.pid {
            metadata.insert("pid", FieldValue::U64(u64::from(pid)));
        }
        match s.exit {
            Some(Exit::Code(c)) => metadata.insert("exit_code", FieldValue::I64(i64::from(c))),
            Some(Exit::Signal(sig)) => {
                metadata.insert("signal", FieldValue::I64(i64::from(sig)));
                metadata.insert("signal_name", FieldValue::from(signal_name(sig)));
            }
            None => {}
        }
        metadata.insert("reports", FieldValue::U64(s.reports));
        let error = (status == Status::Failed).then(|| {
            Box::new(ErrorInfo {
                message: message.clone().unwrap_or_else(|| Arc::from("failed")),
                origin: ErrorOrigin::Explicit,
                node_id: s.node_id,
                path: path(),
                target: target(),
                location: None,
                fields: Metadata::default(),
                at_us: s.exited_us.unwrap_or(now_us),
                propagated: !s.errors.is_empty(),
                recent_events: Vec::new(),
            })
        });
        let failures_below = match (s.errors.first(), s.errors.last()) {
            (Some(first), Some(last)) => Some(Box::new(FailureSummary {
                count: s.errors.len() as u64,
                first: first.clone(),
                last: last.clone(),
            })),
            _ => None,
        };
        // One reported root (the usual case) lends its counters and estimate to the node.
        let single = (children.len() == 1).then(|| &children[0]);
        let start = s.spawned_us.unwrap_or(s.created_us);
        let end = s.exited_us.unwrap_or(now_us).max(start);
        let percentage = match status {
            Status::Completed => Some(100.0),
            _ => single.and_then(|c| c.percentage),
        };
        ProgressLevel {
            current: single.map_or(0, |c| c.current),
            total: single.and_then(|c| c.total),
            percentage,
            unit: single.and_then(|c| c.unit.clone()),
            message: message.or_else(|| single.and_then(|c| c.message.clone())),
            timing: Timing {
                created_at_us: s.created_us,
                started_at_us: s.spawned_us,
                completed_at_us: s.exited_us,
                elapsed_us: end - start,
                busy_us: end - start,
                idle_us: start.saturating_sub(s.created_us),
            },
            error,
            with_failures: status == Status::Completed && failures_below.is_some(),
            failures_below,
            cancel_reason: (status == Status::Cancelled).then_some(CancelReason::Requested),
            metadata,
            estimate: single
                .filter(|_| status == Status::Running)
                .and_then(|c| c.estimate.clone()),
            // After everything read from `single`, which borrows it.
            children,
            ..ProgressLevel::blank(
                s.node_id,
                span_name(),
                s.name.clone(),
                span_name(),
                target(),
                status,
            )
        }
    }
}

/// Reads lines of at most [`MAX_LINE_BYTES`]; a longer one is skipped to its end.
struct Lines {
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
    skipping: bool,
}

enum Read {
    Line,
    Oversized,
    Idle,
    Closed,
}

impl Lines {
    fn next(&mut self) -> Read {
        loop {
            let buf = match self.reader.fill_buf() {
                Ok([]) => return Read::Closed,
                Ok(buf) => buf,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read::Idle;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Read::Closed,
            };
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            if !self.skipping {
                if self.line.len() + chunk.len() > MAX_LINE_BYTES {
                    self.skipping = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = done.unwrap_or(buf.len());
            self.reader.consume(used);
            if done.is_some() {
                if std::mem::replace(&mut self.skipping, false) {
                    return Read::Oversized;
                }
                return Read::Line;
            }
        }
    }
}

fn send(stream: &mut UnixStream, msg: &Message) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn refuse(stream: &mut UnixStream, why: &str) {
    send(
        stream,
        &Message {
            v: PROTOCOL_VERSION,
            kind: "error".into(),
            message: Some(why.into()),
            ..Message::default()
        },
    );
}

/// One child's connection: hello, then reports until it closes.
fn serve(stream: UnixStream) {
    STATS.connections.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut lines = Lines {
        reader: BufReader::with_capacity(16 * 1024, stream),
        line: Vec::new(),
        skipping: false,
    };
    // Hello first.
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let cell = loop {
        match lines.next() {
            Read::Line => {}
            Read::Oversized => {
                STATS.garbage.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Read::Idle if Instant::now() < deadline => continue,
            Read::Idle | Read::Closed => {
                STATS.rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let line = std::mem::take(&mut lines.line);
        let Ok(msg) = serde_json::from_slice::<Message>(&line) else {
            STATS.garbage.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if msg.v != PROTOCOL_VERSION {
            STATS.unsupported_version.fetch_add(1, Ordering::Relaxed);
            refuse(
                &mut out,
                &format!(
                    "unsupported protocol version {}; this parent speaks 1",
                    msg.v
                ),
            );
            return;
        }
        if msg.kind != "hello" {
            STATS.garbage.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let cell = msg.graft.as_deref().and_then(lookup);
        match cell {
            Some(c) if !c.connected.swap(true, Ordering::AcqRel) => break c,
            _ => {
                STATS.rejected.fetch_add(1, Ordering::Relaxed);
                refuse(&mut out, "unknown or already connected graft token");
                return;
            }
        }
    };
    // However the loop ends, a waiting `exited` is told.
    struct Drained<'a>(&'a GraftCell);
    impl Drop for Drained<'_> {
        fn drop(&mut self) {
            self.0.state.lock().drained = true;
            self.0.drained_cv.notify_all();
        }
    }
    let _drained = Drained(&cell);
    loop {
        if cell.cancel_due() {
            send(
                &mut out,
                &Message {
                    v: PROTOCOL_VERSION,
                    kind: "cancel".into(),
                    ..Message::default()
                },
            );
        }
        match lines.next() {
            Read::Line => {}
            Read::Oversized => {
                STATS.garbage.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Read::Idle => {
                // The operation is gone, or the child ended and went quiet: nothing to wait for.
                let live = cell.link.get().is_none_or(|l| l.is_live());
                if !live {
                    return;
                }
                continue;
            }
            Read::Closed => return,
        }
        let line = std::mem::take(&mut lines.line);
        with_parse_slot(|| {
            let Ok(msg) = serde_json::from_slice::<Message>(&line) else {
                STATS.garbage.fetch_add(1, Ordering::Relaxed);
                return;
            };
            drop(line);
            if msg.v != PROTOCOL_VERSION {
                STATS.unsupported_version.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match (msg.kind.as_str(), msg.nodes) {
                ("report", Some(nodes)) => cell.report(nodes),
                _ => {
                    STATS.ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// Reports parsed at once, process-wide: a burst from many children holds at most this many
/// parsed-but-not-yet-kept reports; the others wait (their children's writes slow down).
const PARSE_SLOTS: usize = 2;

static PARSING: Mutex<usize> = Mutex::new(0);
static PARSED: parking_lot::Condvar = parking_lot::Condvar::new();

/// Runs `f` in one of the [`PARSE_SLOTS`].
fn with_parse_slot<R>(f: impl FnOnce() -> R) -> R {
    {
        let mut busy = PARSING.lock();
        while *busy >= PARSE_SLOTS {
            PARSED.wait(&mut busy);
        }
        *busy += 1;
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            *PARSING.lock() -= 1;
            PARSED.notify_one();
        }
    }
    let _release = Release;
    f()
}

fn lookup(token: &str) -> Option<Arc<GraftCell>> {
    let (id, secret) = token.split_once('-')?;
    let id: u64 = id.parse().ok()?;
    let secret = u64::from_str_radix(secret, 16).ok()?;
    let cell = grafts().lock().get(&id)?.upgrade()?;
    (cell.secret == secret).then_some(cell)
}

/// Counters of this process's parent side, for [`super::stats`].
pub(crate) fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: Vec<u8>) -> Vec<&'static str> {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            a.write_all(&data).unwrap();
        });
        let mut lines = Lines {
            reader: BufReader::with_capacity(1024, b),
            line: Vec::new(),
            skipping: false,
        };
        let mut out = Vec::new();
        loop {
            match lines.next() {
                Read::Line => {
                    out.push(if lines.line == b"ok" { "ok" } else { "other" });
                    lines.line.clear();
                }
                Read::Oversized => out.push("oversized"),
                Read::Idle => {}
                Read::Closed => break,
            }
        }
        writer.join().unwrap();
        out
    }

    #[test]
    fn an_oversized_line_is_skipped_whole_and_the_next_one_read() {
        let mut data = b"ok\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        data.extend(b"\nok\nnot ok\n");
        assert_eq!(lines_of(data), ["ok", "oversized", "ok", "other"]);
    }

    fn wire(name: &str, children: Vec<WireNode>) -> WireNode {
        WireNode {
            name: name.into(),
            children,
            ..WireNode::default()
        }
    }

    #[test]
    fn reports_are_cut_to_the_node_and_depth_limits_and_keep_ids() {
        let cell = GraftCell::new("tool", "tool --x", 16, 4);
        // Deeper than the depth limit.
        let mut deep = wire("leaf", Vec::new());
        for _ in 0..(MAX_REPORT_DEPTH + 5) {
            deep = wire("level", vec![deep]);
        }
        let wide: Vec<_> = (0..MAX_REPORT_NODES + 50)
            .map(|i| wire(&i.to_string(), Vec::new()))
            .collect();
        cell.report(vec![deep, wire("wide", wide)]);
        let level = cell.level(now_us());
        let depth = |mut l: &ProgressLevel| {
            let mut d = 0;
            while let Some(c) = l.children.first() {
                l = c;
                d += 1;
            }
            d
        };
        assert_eq!(depth(&level.children[0]), MAX_REPORT_DEPTH - 1);
        let nodes: usize = level.children.iter().map(|c| c.walk().count()).sum();
        assert_eq!(nodes, MAX_REPORT_NODES);
        // The same positions keep their ids in the next report.
        let first_id = level.children[0].id;
        cell.report(vec![wire("renamed", Vec::new())]);
        let again = cell.level(now_us());
        assert_eq!(again.children[0].id, first_id);
        assert_eq!(again.children.len(), 1);
    }

    #[test]
    fn texts_are_cut_on_a_char_boundary_and_bad_statuses_noted() {
        let cell = GraftCell::new("tool", "tool", 16, 1);
        let mut node = wire(&"é".repeat(20), Vec::new());
        node.status = Some("exploded".into());
        node.metadata.insert("a", FieldValue::from("x"));
        node.metadata.insert("b", FieldValue::from("y"));
        cell.report(vec![node]);
        let level = cell.level(now_us());
        let c = &level.children[0];
        assert_eq!(&*c.name, "é".repeat(8));
        assert_eq!(c.status, Status::Running);
        assert_eq!(c.input_errors.len(), 1);
        assert_eq!(c.metadata.len(), 1);
    }

    #[test]
    fn the_deepest_report_json_accepts_fits_a_connection_thread() {
        let nested = |depth: usize| {
            let mut line = String::from(r#"{"v":1,"type":"report","nodes":["#);
            for _ in 0..depth {
                line.push_str(r#"{"name":"n","children":["#);
            }
            line.push_str(r#"{"name":"leaf"}"#);
            for _ in 0..depth {
                line.push_str("]}");
            }
            line.push_str("]}");
            line
        };
        let handle = std::thread::Builder::new()
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                // The deepest nesting serde_json accepts (its recursion limit), parsed,
                // converted and dropped on a connection thread's stack.
                let (depth, msg) = (0..200)
                    .rev()
                    .find_map(|d| {
                        serde_json::from_str::<Message>(&nested(d))
                            .ok()
                            .map(|m| (d, m))
                    })
                    .unwrap();
                let cell = GraftCell::new("tool", "tool", 64, 4);
                cell.report(msg.nodes.unwrap());
                (depth, cell.level(now_us()).walk().count())
            })
            .unwrap();
        let (depth, nodes) = handle.join().unwrap();
        assert!(depth > MAX_REPORT_DEPTH, "{depth}");
        assert_eq!(nodes, 1 + MAX_REPORT_DEPTH);
    }

    #[test]
    fn tokens_must_match_their_secret() {
        let cell = GraftCell::new("tool", "tool", 64, 4);
        assert!(lookup(&cell.token()).is_some());
        let (id, _) = cell
            .token()
            .split_once('-')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap();
        assert!(lookup(&format!("{id}-0")).is_none());
        assert!(lookup("garbage").is_none());
        assert!(lookup("1-zz").is_none());
    }
}
