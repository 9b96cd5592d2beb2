//! Streamed list bodies: a JSON array or JSON lines written one operation at a time.
//!
//! A list request holds only the ids of what it lists, never the operations or their JSON: each
//! chunk of the body (about [`CHUNK`] bytes, or one operation when that is bigger) is
//! serialized when hyper asks for it, so a request's memory is one chunk plus hyper's write
//! buffer whatever the response's size. Each operation is looked up when it is written
//! (running ones snapshotted then); one that history evicted meanwhile is left out, so a slow
//! reader never keeps evicted operations alive. The request's permit (the cap on heavy requests) is held until the body
//! ends, and a body still being written at the request deadline is cut off (the client sees a
//! truncated answer, which no JSON parser accepts as complete). Serializing takes CPU from the
//! program, so each body pauses after a chunk as long as the chunk took ([`IDLE_PER_BUSY`]).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::limits::{Counters, GaugeGuard};
use super::params::{Filters, Include};
use crate::model::{OperationId, OperationRef, ProgressState};
use crate::store::{HistoryQuery, Store};

/// Bytes a chunk collects before it is handed to hyper.
const CHUNK: usize = 64 * 1024;

/// Time a list body waits after each chunk, per unit of time it took to serialize it: 3.0
/// keeps one list request to a quarter of a core at most, so big answers slow down rather
/// than the instrumented program (the server's runtime is one thread, whatever the number of
/// requests).
const IDLE_PER_BUSY: f64 = 3.0;

/// What a heavy request holds while its body is written.
pub(crate) struct HeavyPermit {
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) _gauge: Option<GaugeGuard>,
}

enum Phase {
    Open,
    Active(VecDeque<OperationId>),
    History(VecDeque<OperationRef>),
    Close,
    Done,
}

struct ListStream {
    store: Store,
    query: HistoryQuery,
    limit: usize,
    include: Include,
    lines: bool,
    phase: Phase,
    listed: usize,
    listed_active: HashSet<OperationId>,
    truncated: bool,
    deadline: Instant,
    counters: Arc<Counters>,
    _permit: HeavyPermit,
}

/// `{"operations":[...],"truncated":bool}` for `filters`, running operations first (oldest
/// first), then finished ones (newest first).
pub(crate) fn operations_array(
    store: Store,
    filters: Filters,
    permit: HeavyPermit,
    deadline: Instant,
    counters: Arc<Counters>,
) -> Body {
    let stream = ListStream {
        store,
        limit: filters.limit.unwrap_or(usize::MAX),
        query: filters.query,
        include: filters.include,
        lines: false,
        phase: Phase::Open,
        listed: 0,
        listed_active: HashSet::new(),
        truncated: false,
        deadline,
        counters,
        _permit: permit,
    };
    body(stream)
}

/// The finished operations of `filters` as JSON lines, oldest first; returns the body and
/// whether more matched than the limit.
pub(crate) fn history_lines(
    store: Store,
    filters: Filters,
    permit: HeavyPermit,
    deadline: Instant,
    counters: Arc<Counters>,
) -> (Body, bool) {
    let limit = filters.limit.unwrap_or(usize::MAX);
    let mut ids: Vec<OperationRef> = store
        .history(&filters.query.clone().limit(limit.saturating_add(1)))
        .iter()
        .map(|s| s.reference())
        .collect();
    let truncated = ids.len() > limit;
    ids.truncate(limit);
    ids.reverse();
    let stream = ListStream {
        store,
        limit,
        query: filters.query,
        include: Include::History,
        lines: true,
        phase: Phase::History(ids.into()),
        listed: 0,
        listed_active: HashSet::new(),
        truncated,
        deadline,
        counters,
        _permit: permit,
    };
    (body(stream), truncated)
}

fn body(stream: ListStream) -> Body {
    Body::from_stream(futures_util::stream::unfold(
        (stream, Duration::ZERO),
        |(mut s, pause)| async move {
            // The CPU budget: as long idle as the last chunk took to serialize.
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let started = Instant::now();
            let chunk = s.next_chunk()?;
            let pause = started.elapsed().mul_f64(IDLE_PER_BUSY);
            Some((chunk, (s, pause)))
        },
    ))
}

impl ListStream {
    /// The next piece of the body; `None` at its end.
    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if matches!(self.phase, Phase::Done) {
            return None;
        }
        if Instant::now() >= self.deadline {
            self.phase = Phase::Done;
            Counters::bump(&self.counters.requests_timed_out);
            return Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request time limit reached while writing the body",
            )));
        }
        let mut buf = Vec::with_capacity(CHUNK);
        while buf.len() < CHUNK {
            if let Err(e) = self.step(&mut buf) {
                self.phase = Phase::Done;
                return Some(Err(e));
            }
            if matches!(self.phase, Phase::Done) {
                break;
            }
        }
        Some(Ok(Bytes::from(buf)))
    }

    /// Writes at most one operation (or the array's brackets) and advances.
    fn step(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.phase {
            Phase::Open => {
                buf.extend_from_slice(br#"{"operations":["#);
                self.phase = if matches!(self.include, Include::Active | Include::All) {
                    Phase::Active(self.store.active_ids().into())
                } else {
                    self.history_phase()
                };
            }
            Phase::Active(ids) => match ids.pop_front() {
                None => self.phase = self.history_phase(),
                Some(id) => {
                    // Finished since the ids were read: listed from history (or not at all).
                    let Some(state) = self.store.get(id) else {
                        return Ok(());
                    };
                    if !self.query.matches(&state) {
                        return Ok(());
                    }
                    if self.listed == self.limit {
                        self.truncated = true;
                        self.phase = Phase::Close;
                        return Ok(());
                    }
                    self.listed_active.insert(id);
                    self.write(buf, &state)?;
                }
            },
            Phase::History(ids) => match ids.pop_front() {
                None => self.phase = Phase::Close,
                Some(r) => {
                    // Another run's operation (from the history file) is named with its run.
                    if let Some(state) = self.store.get_ref(r) {
                        self.write(buf, &state)?;
                    }
                }
            },
            Phase::Close => {
                if !self.lines {
                    buf.extend_from_slice(br#"],"truncated":"#);
                    buf.extend_from_slice(if self.truncated { b"true}" } else { b"false}" });
                }
                self.phase = Phase::Done;
            }
            Phase::Done => {}
        }
        Ok(())
    }

    /// The finished operations that still fit, newest first.
    fn history_phase(&mut self) -> Phase {
        if self.truncated || !matches!(self.include, Include::History | Include::All) {
            return Phase::Close;
        }
        let room = self.limit - self.listed;
        let mut ids: Vec<OperationRef> = self
            .store
            .history(&self.query.clone().limit(room.saturating_add(1)))
            .iter()
            .map(|s| s.reference())
            // One that finished while the running ones were written is listed already.
            .filter(|r| r.run.is_some() || !self.listed_active.contains(&r.id))
            .collect();
        if ids.len() > room {
            self.truncated = true;
            ids.truncate(room);
        }
        Phase::History(ids.into())
    }

    fn write(&mut self, buf: &mut Vec<u8>, state: &ProgressState) -> io::Result<()> {
        if !self.lines && self.listed > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut *buf, state).map_err(io::Error::other)?;
        if self.lines {
            buf.push(b'\n');
        }
        self.listed += 1;
        Ok(())
    }
}
