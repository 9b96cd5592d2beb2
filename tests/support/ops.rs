//! A store fed by a real layer, and operations on it: run to their end, or held open on a
//! helper thread until the test lets them finish.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Dispatch, info_span};
use tracing_progress::{Builder, FailOn, OperationId, ProgressSpanExt, Store};
use tracing_subscriber::Registry;
use tracing_subscriber::prelude::*;

use super::TIMEOUT;

/// A store fed by a real layer, and the dispatch that feeds it (usable from any thread).
pub struct Traced {
    pub dispatch: Dispatch,
    pub store: Store,
}

impl Traced {
    /// The fixture's failures are plain ERROR events, so its layer fails nodes on every ERROR
    /// event (`FailOn::ErrorEvents`; the default only fails on returned errors).
    pub fn new(layer: Builder) -> Self {
        let (layer, store) = layer
            .fail_on(FailOn::ErrorEvents)
            .build::<Registry>()
            .expect("valid builder");
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        Traced { dispatch, store }
    }

    /// Runs one operation of type `kind` to its end on this thread:
    ///
    /// ```text
    /// kind "name" (total 2)
    /// ├ step "step-1" (block_id = 7)   with fail: warn "disk almost full", error "disk full" (path = "/data/in.wav")
    /// └ step "step-2"
    ///                                  with fail: error "import failed" on the operation
    /// ```
    pub fn run(&self, kind: &str, name: &str, fail: bool) -> OperationId {
        tracing::dispatcher::with_default(&self.dispatch, || {
            let op = info_span!(
                "op",
                progress.level = kind,
                progress.operation = kind,
                progress.name = name,
                progress.total = 2u64
            );
            let id = op.operation_id().expect("tracked");
            op.in_scope(|| {
                info_span!(
                    "step",
                    progress.level = "step",
                    progress.name = "step-1",
                    block_id = 7u64
                )
                .in_scope(|| {
                    if fail {
                        tracing::warn!(free_mb = 3u64, "disk almost full");
                        tracing::error!(path = "/data/in.wav", "disk full");
                    }
                });
                info_span!("step", progress.level = "step", progress.name = "step-2")
                    .in_scope(|| {});
                if fail {
                    tracing::error!("import failed");
                }
            });
            id
        })
    }

    /// Starts a `setlist` operation that plans three songs and runs the first; the returned
    /// span keeps it open (drop it to end the setlist: the two others then read skipped):
    ///
    /// ```text
    /// setlist "name" (progress.planned = "a.wav, b.wav, c.wav")
    /// ├ song "a.wav"   completed
    /// ├ song "b.wav"   pending, planned
    /// └ song "c.wav"   pending, planned
    /// ```
    pub fn planned(&self, name: &str) -> tracing::Span {
        tracing::dispatcher::with_default(&self.dispatch, || {
            let op = info_span!(
                "setlist",
                progress.level = "setlist",
                progress.operation = "setlist",
                progress.name = name,
                progress.planned = "a.wav, b.wav, c.wav",
                progress.planned_level = "song"
            );
            op.in_scope(|| {
                info_span!("song", progress.level = "song", progress.name = "a.wav").in_scope(|| {})
            });
            op
        })
    }

    /// Runs one operation whose step is retried once, like an app's retry loop:
    ///
    /// ```text
    /// sync "name"
    /// └ upload "a.bin"   attempt 1: warn "slow link", error "connection reset"; attempt 2 ok
    /// ```
    pub fn run_retried(&self, name: &str) -> OperationId {
        tracing::dispatcher::with_default(&self.dispatch, || {
            let op = info_span!(
                "op",
                progress.level = "sync",
                progress.operation = "sync",
                progress.name = name,
                progress.total = 1u64
            );
            let id = op.operation_id().expect("tracked");
            op.in_scope(|| {
                for attempt in 1..=3u32 {
                    let ok =
                        info_span!("upload", progress.level = "upload", progress.name = "a.bin")
                            .in_scope(|| {
                                if attempt == 1 {
                                    tracing::warn!(rtt_ms = 900u64, "slow link");
                                    tracing::error!("connection reset");
                                    return false;
                                }
                                true
                            });
                    if ok {
                        break;
                    }
                }
            });
            id
        })
    }

    /// Starts an operation of type `kind` that stays running on a helper thread until
    /// [`Held::finish`], drop, or a cancel:
    ///
    /// ```text
    /// kind "name" (0/1)
    /// └ part "part-1" (0/10 blocks)   ← entered, moved by Held::inc
    /// ```
    pub fn hold(&self, kind: &str, name: &str) -> Held {
        let dispatch = self.dispatch.clone();
        let (kind, name) = (kind.to_owned(), name.to_owned());
        let (inc_tx, inc_rx) = mpsc::channel::<u64>();
        let (ack_tx, acked) = mpsc::channel::<()>();
        let (id_tx, id_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let op = info_span!(
                    "op",
                    progress.level = kind.as_str(),
                    progress.operation = kind.as_str(),
                    progress.name = name.as_str(),
                    progress.total = 1u64
                );
                let _op = op.enter();
                let part = info_span!(
                    "part",
                    progress.level = "part",
                    progress.name = "part-1",
                    progress.total = 10u64,
                    progress.unit = "blocks"
                );
                let _part = part.enter();
                let _ = id_tx.send(op.operation_id().expect("tracked"));
                loop {
                    match inc_rx.recv_timeout(Duration::from_millis(10)) {
                        Ok(n) => {
                            part.inc(n);
                            let _ = ack_tx.send(());
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) if !op.is_cancelled() => {}
                        // Finished (the sender is gone) or cancelled.
                        Err(_) => break,
                    }
                }
            })
        });
        Held {
            id: id_rx.recv_timeout(TIMEOUT).expect("held operation started"),
            inc: Some(inc_tx),
            acked,
            thread: Some(thread),
        }
    }
}

/// An operation held open on a helper thread; see [`Traced::hold`].
pub struct Held {
    pub id: OperationId,
    inc: Option<mpsc::Sender<u64>>,
    acked: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Held {
    /// Adds `n` units to its part; returns once the store has them.
    #[track_caller]
    pub fn inc(&self, n: u64) {
        let sent = self.inc.as_ref().is_some_and(|tx| tx.send(n).is_ok());
        assert!(sent, "the held operation has already ended");
        self.acked
            .recv_timeout(TIMEOUT)
            .expect("the held operation applied the increment");
    }

    /// Ends it (completed, or cancelled if a cancel was requested) and waits until it has.
    pub fn finish(mut self) {
        self.inc.take();
        self.thread
            .take()
            .expect("not finished yet")
            .join()
            .expect("held operation thread");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.inc.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
