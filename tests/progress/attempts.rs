//! Attempts: a retried unit is one node with its earlier attempts; the parent's status and
//! counts are the last attempt's.

use tracing::{info, info_span, warn};
use tracing_progress::{Builder, ProgressSpanExt, ProgressState, Status};

use crate::support::{node, only_finished, shape, with_layer};

/// A block that fails on the attempts listed in `fail_on`, after logging a line.
#[tracing::instrument(err, skip(fail_on), fields(progress.level = "block", progress.name = name, progress.total = 4))]
fn block(name: &str, attempt: u32, fail_on: &[u32]) -> Result<(), String> {
    let span = tracing::Span::current();
    span.inc(2);
    info!(attempt, "reading input");
    if fail_on.contains(&attempt) {
        warn!("checksum mismatch");
        return Err(format!("attempt {attempt}: checksum mismatch"));
    }
    span.inc(2);
    Ok(())
}

/// Runs `name` up to `max` times, like an app's retry loop.
fn with_retries(name: &str, max: u32, fail_on: &[u32]) -> Result<(), String> {
    let mut last = Ok(());
    for attempt in 1..=max {
        last = block(name, attempt, fail_on);
        if last.is_ok() {
            break;
        }
    }
    last
}

#[tracing::instrument(err, skip_all, fields(progress.level = "song", progress.name = "song-1", progress.total = 3))]
fn song(fail_on: &[u32], max: u32) -> Result<(), String> {
    block("Load", 1, &[])?;
    with_retries("Detect", max, fail_on)?;
    block("Export", 1, &[])?;
    Ok(())
}

fn run_setlist(fail_on: &'static [u32], max: u32) -> ProgressState {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let setlist = info_span!(
            "setlist",
            progress.level = "setlist",
            progress.name = "S",
            progress.total = 1
        );
        let _s = setlist.enter();
        let _ = song(fail_on, max);
    });
    (*only_finished(&store)).clone()
}

#[test]
fn a_block_that_failed_once_then_succeeded_is_one_node_and_leaves_its_song_completed() {
    let op = run_setlist(&[1], 3);
    assert_eq!(
        shape(&op.root),
        "S[completed](song-1[completed](Load[completed],Detect[completed],Export[completed]))",
        "one node per block, in its place:\n{op}"
    );
    let song = node(&op, "song-1");
    assert!(!song.with_failures, "the retry succeeded:\n{op}");
    assert_eq!((song.current, song.failed, song.total), (3, 0, Some(3)));
    assert_eq!(song.percentage, Some(100.0));
    assert!(song.failures_below().is_none());
    assert_eq!(op.root.status, Status::Completed);
    assert!(!op.with_failures && op.error.is_none(), "{op}");
    assert_eq!(op.metrics.nodes_failed, 0);
    assert_eq!(op.metrics.retried, 1);

    let detect = node(&op, "Detect");
    assert_eq!(detect.attempt(), 2);
    assert_eq!(
        (detect.current, detect.total),
        (4, Some(4)),
        "the last attempt's own counts"
    );
    let attempts = detect.attempts().expect("attempts");
    assert_eq!(attempts.earlier.len(), 1);
    let first = &attempts.earlier[0];
    assert_eq!((first.number, first.status), (1, Status::Failed));
    assert_eq!((first.current, first.total), (2, Some(4)));
    assert!(first.started_at_us > 0 && first.started_at_us <= detect.timing.started_at_us.unwrap());
    let err = first.error.as_deref().expect("the failed attempt's error");
    assert_eq!(&*err.message, "attempt 1: checksum mismatch");
    let lines: Vec<_> = err
        .recent_events
        .iter()
        .filter_map(|e| e.message.as_deref())
        .collect();
    assert_eq!(
        lines,
        ["reading input", "checksum mismatch"],
        "the failed attempt's recent events"
    );
    // The node's own events are the last attempt's.
    let own: Vec<_> = detect
        .recent_events
        .iter()
        .filter_map(|e| e.message.as_deref())
        .collect();
    assert_eq!(own, ["reading input"]);
}

#[test]
fn a_unit_whose_last_attempt_failed_counts_as_one_failure() {
    let op = run_setlist(&[1, 2, 3], 3);
    let song = node(&op, "song-1");
    assert_eq!(song.status, Status::Failed);
    assert_eq!(
        (song.current, song.failed),
        (1, 1),
        "Load done, Detect failed once:\n{op}"
    );
    let below = song.failures_below().expect("failures below the song");
    assert_eq!(below.count, 1, "one unit failed, not one per attempt");
    assert_eq!(
        &*below.first.message, "attempt 3: checksum mismatch",
        "{op}"
    );
    assert_eq!(op.root.failures_below().map(|f| f.count), Some(1));
    let detect = node(&op, "Detect");
    assert_eq!(detect.attempt(), 3);
    let numbers: Vec<_> = detect
        .attempts()
        .unwrap()
        .earlier
        .iter()
        .map(|a| (a.number, a.status))
        .collect();
    assert_eq!(numbers, [(1, Status::Failed), (2, Status::Failed)]);
    // Detect failed once as a unit; the song passed its error up (not a root cause).
    assert_eq!(op.metrics.nodes_failed, 2, "Detect and the song:\n{op}");
    assert_eq!(op.metrics.retried, 2);
    assert_eq!(op.root.walk().filter(|l| &*l.name == "Detect").count(), 1);
}

#[test]
fn earlier_attempts_are_bounded() {
    let fail: Vec<u32> = (1..=19).collect();
    let fail: &'static [u32] = Box::leak(fail.into_boxed_slice());
    let op = run_setlist(fail, 20);
    let detect = node(&op, "Detect");
    let a = detect.attempts().unwrap();
    assert_eq!(a.number, 20);
    assert_eq!(a.earlier.len(), tracing_progress::Attempts::MAX_EARLIER);
    assert_eq!(a.omitted, 19 - a.earlier.len() as u32);
    assert_eq!(a.earlier.last().unwrap().number, 19);
    assert_eq!(a.failed_before(), 19);
    assert_eq!(detect.status, Status::Completed);
    assert!(!node(&op, "song-1").with_failures);
}

#[test]
fn not_attempts_different_key_no_prior_failure_different_parent_or_no_key() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("job", progress.level = "job", progress.name = "J");
        let _r = root.enter();
        // Different key: a failed "a" does not make "b" its retry.
        let _ = block("a", 1, &[1]);
        let _ = block("b", 1, &[]);
        // No prior failure: the same file processed twice is two units.
        let _ = block("c", 1, &[]);
        let _ = block("c", 1, &[]);
        // Different parent: each group's "d" is its own.
        for g in ["g1", "g2"] {
            let group = info_span!("group", progress.level = "group", progress.name = g);
            let _g = group.enter();
            let _ = block("d", 1, &[u32::from(g == "g1")]);
        }
        // No key (the name is the span name): a loop of unnamed steps is not a retry loop.
        for fail in [true, false] {
            let step = info_span!("step", progress.level = "step");
            let _s = step.enter();
            if fail {
                step.fail("boom");
            }
        }
    });
    let op = only_finished(&store);
    assert_eq!(
        shape(&op.root),
        "J[completed](a[failed],b[completed],c[completed],c[completed],\
         g1[completed](d[failed]),g2[completed](d[completed]),step[failed],step[completed])",
        "{op}"
    );
    assert!(op.root.walk().all(|l| l.attempts().is_none()), "{op}");
    assert_eq!(op.root.failed, 2);
    assert_eq!(op.root.failures_below().map(|f| f.count), Some(3));
    assert_eq!(op.metrics.retried, 0);
}

#[test]
fn explicit_attempts_by_field_and_by_trait() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("job", progress.level = "job", progress.name = "J");
        let _r = root.enter();
        // `progress.attempt` on unkeyed spans: the explicit number is the rule.
        for attempt in 1..=2u32 {
            let s = info_span!(
                "upload",
                progress.level = "upload",
                progress.attempt = attempt
            );
            let _g = s.enter();
            if attempt == 1 {
                s.fail("connection reset");
            }
        }
        // The trait call, after the span was created.
        for attempt in 1..=3u32 {
            let s = info_span!("fetch", progress.level = "fetch");
            s.set_attempt(attempt);
            let _g = s.enter();
            if attempt < 3 {
                s.fail("timeout");
            }
        }
        // An explicit number with nothing before it is only recorded.
        let s = info_span!("sync", progress.level = "sync", progress.attempt = 4u32);
        let _g = s.enter();
    });
    let op = only_finished(&store);
    assert_eq!(
        shape(&op.root),
        "J[completed](upload[completed],fetch[completed],sync[completed])",
        "{op}"
    );
    assert!(
        !op.with_failures && op.root.failures_below().is_none(),
        "{op}"
    );
    let upload = node(&op, "upload");
    assert_eq!(upload.attempt(), 2);
    let e = &upload.attempts().unwrap().earlier[0];
    assert_eq!(&*e.error.as_deref().unwrap().message, "connection reset");
    let fetch = node(&op, "fetch");
    assert_eq!(fetch.attempt(), 3);
    assert_eq!(fetch.attempts().unwrap().earlier.len(), 2);
    let sync = node(&op, "sync");
    assert_eq!(sync.attempt(), 4);
    assert!(sync.attempts().unwrap().earlier.is_empty());
    assert_eq!(op.metrics.nodes_failed, 0);
}

#[test]
fn a_retry_keeps_its_place_among_siblings_and_a_parent_total_is_not_double_counted() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!(
            "job",
            progress.level = "job",
            progress.name = "J",
            progress.total = 3
        );
        let _r = root.enter();
        let _ = block("a", 1, &[1]);
        let _ = block("b", 1, &[]);
        let _ = block("a", 2, &[]);
        let _ = block("c", 1, &[]);
    });
    let op = only_finished(&store);
    assert_eq!(
        shape(&op.root),
        "J[completed](a[completed],b[completed],c[completed])",
        "{op}"
    );
    assert_eq!(
        (op.root.current, op.root.failed, op.root.percentage),
        (3, 0, Some(100.0))
    );
    assert_eq!(op.metrics.nodes_retained, 4);
}

#[test]
fn attempts_round_trip_through_json() {
    let op = run_setlist(&[1], 3);
    let json = op.to_json();
    assert!(
        json.contains(
            "\"attempts\":{\"number\":2,\"earlier\":[{\"number\":1,\"status\":\"failed\""
        ),
        "{json}"
    );
    let back: ProgressState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, op);
}

#[tracing::instrument(err, skip(fail_times), fields(progress.level = "file", progress.name = path))]
async fn upload(path: &str, fail_times: u32, attempt: u32) -> Result<u64, String> {
    info!("connecting");
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    if attempt <= fail_times {
        warn!(status = 503u64, "server busy");
        return Err("server answered 503".into());
    }
    Ok(1024)
}

async fn upload_with_retry(path: &'static str, fail_times: u32) -> Result<u64, String> {
    for attempt in 1..=3 {
        match upload(path, fail_times, attempt).await {
            Ok(n) => return Ok(n),
            Err(e) if attempt < 3 => warn!(attempt, error = %e, "upload failed, retrying"),
            Err(e) => Err(e)?,
        }
    }
    unreachable!()
}

#[tracing::instrument(err, skip(files), fields(progress.level = "batch", progress.name = name, progress.total = files.len()))]
async fn batch(name: &str, files: &[(&'static str, u32)]) -> Result<(), String> {
    use tracing::Instrument;
    let mut tasks = Vec::new();
    for &(file, fails) in files {
        tasks.push(tokio::spawn(
            upload_with_retry(file, fails).in_current_span(),
        ));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The stranger's shape: tokio tasks, `#[instrument]`, a `for attempt in 1..=3` loop with `?`.
#[test]
fn concurrent_retry_loops_in_tokio_tasks() {
    let (layer, store) = Builder::new()
        .build::<tracing_subscriber::Registry>()
        .unwrap();
    use tracing_subscriber::prelude::*;
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    // One thread: the default dispatcher set below reaches the spawned tasks (a global one
    // would leak into the other tests of this binary).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _d = tracing::dispatcher::set_default(&dispatch);
        let ok = batch("ok", &[("p1", 1), ("p2", 0), ("p3", 2)]).await;
        assert!(ok.is_ok());
        let bad = batch("bad", &[("q1", 3), ("q2", 0)]).await;
        assert!(bad.is_err());
    });
    let h = store.history(&Default::default());
    let find = |name: &str| h.iter().find(|s| &*s.name == name).unwrap().clone();
    let ok = find("ok");
    assert_eq!(
        shape(&ok.root),
        "ok[completed](p1[completed],p2[completed],p3[completed])",
        "{ok}"
    );
    assert_eq!(
        (ok.root.current, ok.root.failed, ok.with_failures),
        (3, 0, false)
    );
    let attempts: Vec<_> = ok.root.children.iter().map(|c| c.attempt()).collect();
    assert_eq!(attempts, [2, 1, 3]);
    let bad = find("bad");
    assert_eq!(bad.status, Status::Failed);
    let q1 = node(&bad, "q1");
    assert_eq!((q1.status, q1.attempt()), (Status::Failed, 3));
    assert_eq!(bad.root.failed, 1, "{bad}");
    assert_eq!(bad.root.failures_below().map(|f| f.count), Some(1));
}

#[test]
fn the_automatic_rule_looks_at_the_operations_last_16_failures() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("job", progress.level = "job", progress.name = "J");
        let _r = root.enter();
        for i in 0..20 {
            let _ = block(&format!("k{i}"), 1, &[1]);
        }
        // k19 failed last: found. k0 failed 20 failures ago: a new unit.
        let _ = block("k19", 2, &[]);
        let _ = block("k0", 2, &[]);
        // An explicit attempt searches the parent's finished children whole.
        let s = info_span!(
            "block",
            progress.level = "block",
            progress.name = "k1",
            progress.attempt = 2u32
        );
        let _g = s.enter();
    });
    let op = only_finished(&store);
    let count = |name: &str| op.root.walk().filter(|l| &*l.name == name).count();
    assert_eq!(count("k19"), 1, "{op}");
    assert_eq!(node(&op, "k19").attempt(), 2);
    assert_eq!(count("k0"), 2, "{op}");
    assert_eq!(count("k1"), 1, "{op}");
    assert_eq!(node(&op, "k1").attempt(), 2);
    assert_eq!(op.root.failed, 18, "20 failed, 2 of them retried");
    assert_eq!(op.metrics.retried, 2);
}

#[test]
fn a_recovered_unit_leaves_the_other_failure_as_first_and_last() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("job", progress.level = "job", progress.name = "J");
        let _r = root.enter();
        let _ = block("a", 1, &[1]);
        let _ = block("b", 1, &[1]);
        let _ = block("a", 2, &[]);
    });
    let op = only_finished(&store);
    let below = op.root.failures_below().expect("b still failed");
    assert_eq!(below.count, 1);
    assert_eq!(&*below.first.message, "attempt 1: checksum mismatch");
    assert_eq!(below.first.path.last().map(|p| &**p), Some("b"), "{op}");
    assert_eq!(below.last.path.last().map(|p| &**p), Some("b"));
    assert_eq!(
        op.error.as_ref().map(|e| e.node_id),
        Some(node(&op, "b").id)
    );
}
