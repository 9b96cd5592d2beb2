//! Child side: when the environment names a parent, the first store built in the process
//! reports its operations there from a thread of its own.
//!
//! Instrumented code never waits on the parent, with one bounded exception: when an operation
//! finishes, the thread that closed it waits up to [`FINAL_REPORT_WAIT`] for the report that
//! carries its final state, so a child that exits right after its work still tells the parent
//! how it ended. A dead or slow parent (a write that fails or takes longer than
//! [`WRITE_TIMEOUT`]) ends the reporting; the child's own store keeps working.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::wire::{MAX_LINE_BYTES, MAX_REPORT_NODES, Message, PROTOCOL_VERSION, to_wire};
use super::{ENV_GRAFT, ENV_PARENT, STATS};
use crate::Store;
use crate::export::Exporter;
use crate::model::{OperationId, ProgressState};

/// Reports are sent at most this often (a change is sent at most this late).
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(20);
/// Longest a write to the parent may take before the parent counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest the thread closing an operation waits for its final report to be written. It
/// returns as soon as the report is out (a few ms); the bound is for a loaded machine, where
/// the report thread can wait for a core longer than 100 ms (seen in CI: the parent then kept
/// the last periodic report, one unit short).
const FINAL_REPORT_WAIT: Duration = Duration::from_millis(500);
/// Finished operations kept in reports (the newest ones).
const KEEP_FINISHED: usize = 16;

/// [`SetupWarning::code`](crate::SetupWarning::code) of a child whose parent could not be
/// reached.
pub(crate) const PARENT_WARNING: &str = "process.parent";

struct Link {
    state: Mutex<LinkState>,
    cv: Condvar,
}

#[derive(Default)]
struct LinkState {
    lost: bool,
    /// Operations whose final state was written.
    reported_final: VecDeque<OperationId>,
    /// Threads waiting in `operation_finished`.
    waiting: u32,
}

impl Link {
    fn lose(&self) {
        self.state.lock().lost = true;
        STATS.parent_lost.store(1, Ordering::Relaxed);
        self.cv.notify_all();
    }
}

struct FinalReport(Arc<Link>);

impl Exporter for FinalReport {
    fn operation_finished(&self, state: &Arc<ProgressState>) {
        let deadline = Instant::now() + FINAL_REPORT_WAIT;
        let mut s = self.0.state.lock();
        s.waiting += 1;
        self.0.cv.notify_all();
        while !s.lost && !s.reported_final.contains(&state.id) {
            if self.0.cv.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.waiting -= 1;
    }
}

fn connect(address: &str) -> std::io::Result<UnixStream> {
    #[cfg(target_os = "linux")]
    if let Some(name) = address.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        return UnixStream::connect_addr(&addr);
    }
    UnixStream::connect(address)
}

/// Starts reporting to the parent named by the environment, for the first store built in this
/// process; the exporter makes closing an operation wait (briefly) for its final report.
pub(crate) fn install(store: &Store) -> Option<Arc<dyn Exporter>> {
    static STARTED: OnceLock<()> = OnceLock::new();
    let address = std::env::var(ENV_PARENT).ok()?;
    let token = std::env::var(ENV_GRAFT).ok()?;
    STARTED.set(()).ok()?;
    let link = Arc::new(Link {
        state: Mutex::default(),
        cv: Condvar::new(),
    });
    let fail = |e: &dyn std::fmt::Display| {
        STATS.parent_lost.store(1, Ordering::Relaxed);
        store.warn_once(
            PARENT_WARNING,
            &format!("cannot report progress to the parent process at {address}: {e}; progress stays in this process"),
        );
    };
    let mut stream = match connect(&address) {
        Ok(s) => s,
        Err(e) => {
            fail(&e);
            return None;
        }
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let hello = Message {
        v: PROTOCOL_VERSION,
        kind: "hello".into(),
        graft: Some(token),
        pid: Some(std::process::id()),
        ..Message::default()
    };
    let mut line = serde_json::to_vec(&hello).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        fail(&e);
        return None;
    }
    let reader = stream.try_clone().ok();
    {
        let store = store.clone();
        let link = link.clone();
        let spawned = std::thread::Builder::new()
            .name("progress-report".into())
            .spawn(move || report_loop(store, stream, &link));
        if let Err(e) = spawned {
            fail(&e);
            return None;
        }
    }
    if let Some(reader) = reader {
        let store = store.clone();
        let link = link.clone();
        let _ = std::thread::Builder::new()
            .name("progress-parent".into())
            .spawn(move || read_loop(store, reader, &link));
    }
    Some(Arc::new(FinalReport(link)))
}

/// Cancel requests from the parent.
static CANCELLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn cancel_all(store: &Store) {
    for id in store.active_ids() {
        let _ = store.cancel(id);
    }
}

fn read_loop(store: Store, stream: UnixStream, link: &Link) {
    let mut reader = BufReader::new(stream.take_bounded());
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE_BYTES {
            continue;
        }
        let Ok(msg) = serde_json::from_slice::<Message>(&line) else {
            continue;
        };
        match msg.kind.as_str() {
            "cancel" => {
                CANCELLED.store(true, Ordering::Relaxed);
                cancel_all(&store);
            }
            "error" => {
                store.warn_once(
                    PARENT_WARNING,
                    &format!(
                        "the parent process refused progress reports: {}",
                        msg.message.as_deref().unwrap_or("no reason given")
                    ),
                );
                link.lose();
                break;
            }
            _ => {}
        }
    }
}

trait TakeBounded {
    fn take_bounded(self) -> std::io::Take<UnixStream>;
}

impl TakeBounded for UnixStream {
    // The parent sends a few short lines per child; a flood from it is cut off.
    fn take_bounded(self) -> std::io::Take<UnixStream> {
        std::io::Read::take(self, 64 * 1024 * 1024)
    }
}

fn report_loop(store: Store, mut stream: UnixStream, link: &Link) {
    let mut sub = store.subscribe();
    let mut ops: BTreeMap<OperationId, Arc<ProgressState>> = BTreeMap::new();
    let mut finished: VecDeque<OperationId> = VecDeque::new();
    let mut line = Vec::with_capacity(4096);
    loop {
        let changes = sub.wait(Duration::from_millis(250));
        if link.state.lock().lost {
            return;
        }
        if CANCELLED.load(Ordering::Relaxed) {
            for s in &changes.changed {
                if !s.cancel_requested {
                    let _ = store.cancel(s.id);
                }
            }
        }
        if changes.is_empty() {
            continue;
        }
        let mut new_final = Vec::new();
        for s in changes.changed {
            ops.insert(s.id, s);
        }
        for s in changes.finished {
            new_final.push(s.id);
            finished.push_back(s.id);
            ops.insert(s.id, s);
        }
        while finished.len() > KEEP_FINISHED {
            if let Some(old) = finished.pop_front() {
                ops.remove(&old);
            }
        }
        let mut budget = MAX_REPORT_NODES;
        let mut nodes = Vec::new();
        for s in ops.values() {
            if budget == 0 {
                break;
            }
            nodes.push(to_wire(&s.root, &mut budget));
        }
        let msg = Message {
            v: PROTOCOL_VERSION,
            kind: "report".into(),
            nodes: Some(nodes),
            ..Message::default()
        };
        line.clear();
        if serde_json::to_writer(&mut line, &msg).is_err() || line.len() > MAX_LINE_BYTES {
            // Too big for the parent to read: say less rather than nothing next time.
            continue;
        }
        line.push(b'\n');
        if stream.write_all(&line).is_err() {
            link.lose();
            return;
        }
        STATS.sent.fetch_add(1, Ordering::Relaxed);
        let waiting = {
            let mut s = link.state.lock();
            for id in new_final {
                s.reported_final.push_back(id);
                if s.reported_final.len() > 64 {
                    s.reported_final.pop_front();
                }
            }
            link.cv.notify_all();
            s.waiting
        };
        // At most one report per interval, unless an operation is waiting for its final one.
        if waiting == 0 {
            let mut s = link.state.lock();
            let _ = link
                .cv
                .wait_while_for(&mut s, |s| s.waiting == 0 && !s.lost, REPORT_INTERVAL);
        }
    }
}
