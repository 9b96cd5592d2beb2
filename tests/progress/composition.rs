//! Our layer next to fmt, EnvFilter and per-layer filters changes nothing they do.

use std::io;
use std::sync::{Arc, Mutex};

use tracing::{debug_span, info, info_span, warn};
use tracing_progress::{Builder, ProgressSpanExt};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn workload() {
    let setlist = info_span!(
        "setlist",
        progress.level = "setlist",
        progress.total = 2,
        venue = "club"
    );
    let _s = setlist.enter();
    info!("starting");
    for i in 0..2 {
        let song = info_span!(
            "song",
            progress.level = "song",
            progress.current = tracing::field::Empty,
            i
        );
        let _g = song.enter();
        song.set_total(10);
        for n in 0..10 {
            song.inc(1);
            if n == 5 {
                song.record("progress.current", 6u64);
            }
        }
        info!(progress.inc = 1u64, "song done");
        debug_span!("hidden", progress.level = "hidden")
            .in_scope(|| warn!("inside a filtered span"));
        tracing::debug!("filtered out");
    }
    tracing::error!(code = 7, "one failure");
}

fn fmt_layer<S>(buf: &Buffer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(buf.clone())
        .without_time()
        .with_ansi(false)
}

fn fmt_output(with_progress: bool) -> String {
    let buf = Buffer::default();
    let filter = EnvFilter::new("info");
    if with_progress {
        let (layer, _store) = Builder::new().build().unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .with(fmt_layer(&buf));
        tracing::subscriber::with_default(subscriber, workload);
    } else {
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(&buf));
        tracing::subscriber::with_default(subscriber, workload);
    }
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn fmt_output_is_byte_identical_with_and_without_our_layer() {
    let without = fmt_output(false);
    let with = fmt_output(true);
    assert!(
        without.contains("song done") && without.contains("one failure"),
        "{without}"
    );
    assert!(!without.contains("filtered out"));
    assert_eq!(with, without);
}

#[test]
fn layer_order_does_not_matter_for_fmt_output() {
    let buf = Buffer::default();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(buf.clone())
        .without_time()
        .with_ansi(false);
    let (layer, store) = Builder::new().build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(fmt)
        .with(EnvFilter::new("info"))
        .with(layer);
    tracing::subscriber::with_default(subscriber, workload);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(out, fmt_output(false));
    assert_eq!(store.history(&Default::default()).len(), 1);
}

#[test]
fn per_layer_filter_hides_spans_from_us_only() {
    let (layer, store) = Builder::new().build().unwrap();
    let buf = Buffer::default();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(buf.clone())
        .without_time()
        .with_ansi(false);
    let subscriber = tracing_subscriber::registry()
        .with(layer.with_filter(LevelFilter::INFO))
        .with(fmt.with_filter(LevelFilter::DEBUG));
    tracing::subscriber::with_default(subscriber, || {
        let root = info_span!("root", progress.level = "root");
        let _r = root.enter();
        let dbg = debug_span!("dbg", progress.level = "dbg");
        let _d = dbg.enter();
        tracing::debug!("debug event for fmt");
        info_span!("leaf", progress.level = "leaf").in_scope(|| {
            tracing::Span::current().inc(2);
        });
    });
    let op = &store.history(&Default::default())[0];
    // the debug span is invisible to our layer: the leaf attaches to the root
    assert_eq!(op.root.children.len(), 1);
    assert_eq!(&*op.root.children[0].name, "leaf");
    assert_eq!(op.root.children[0].current, 2);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("dbg") && out.contains("debug event for fmt"),
        "fmt still sees it: {out}"
    );
}

/// Two progress layers in one subscriber (a library's and its application's): each keeps its
/// own store, both see every tracked span, and the extension methods reach both.
#[test]
fn two_progress_layers_in_one_subscriber_are_independent() {
    let (app, app_store) = tracing_progress::layer();
    let (lib, lib_store) = Builder::new()
        .history_limit(5)
        .build()
        .expect("valid builder");
    let subscriber = tracing_subscriber::registry().with(app).with(lib);
    tracing::subscriber::with_default(subscriber, || {
        for run in 0..2u64 {
            let job = info_span!("job", progress.level = "job", progress.total = 3, run);
            let _j = job.enter();
            for _ in 0..3 {
                let step = info_span!("step", progress.level = "step", progress.total = 10);
                let _s = step.enter();
                step.inc(4);
                info!(progress.inc = 6, "rest");
            }
            // Cancelling in one store is seen by the span through either layer.
            if run == 1 {
                let id = app_store.active_ids()[0];
                app_store.cancel(id).expect("running");
                assert!(job.is_cancelled());
            }
        }
    });
    for store in [&app_store, &lib_store] {
        assert_eq!(store.active().len(), 0, "nothing left live");
        let history = store.history(&Default::default());
        assert_eq!(history.len(), 2);
        let first = &history[1];
        assert_eq!(first.root.status, tracing_progress::Status::Completed);
        assert_eq!(first.root.current, 3);
        assert!(first.root.children.iter().all(|c| c.current == 10));
    }
    // The cancel was asked of the application's store only; the library's ran to its end.
    assert_eq!(
        app_store.history(&Default::default())[0].root.status,
        tracing_progress::Status::Cancelled
    );
    assert_eq!(
        lib_store.history(&Default::default())[0].root.status,
        tracing_progress::Status::Completed
    );
}

/// `reload::Layer` does not forward `downcast_raw`; the extension methods still reach the
/// node through the registry, and cancellation keeps working.
#[test]
fn extension_methods_work_through_a_reload_layer() {
    let (progress, store) = tracing_progress::layer();
    let (reloadable, _handle) = tracing_subscriber::reload::Layer::new(progress);
    let subscriber = tracing_subscriber::registry().with(reloadable);
    tracing::subscriber::with_default(subscriber, || {
        let job = info_span!("job", progress.level = "job", progress.total = 4);
        let _j = job.enter();
        let id = job.operation_id().expect("reachable through the registry");
        job.inc(3);
        job.set_message("three done");
        assert!(!job.is_cancelled());
        store.cancel(id).unwrap();
        assert!(
            job.is_cancelled(),
            "cancellation must not be lost behind reload"
        );
        let state = store.get(id).unwrap();
        assert_eq!(state.root.current, 3);
        assert_eq!(state.root.message.as_deref(), Some("three done"));
    });
}

/// Three progress layers, one behind `reload`, one behind a per-layer filter: the extension
/// trait reaches every layer's node, and the "first layer" of `progress()`, `operation_id()`
/// is the first one added, whatever order the layers expose themselves in.
#[test]
fn extension_methods_reach_every_layer_and_the_first_is_the_first_added() {
    let (first, first_store) = tracing_progress::layer();
    let (hidden, hidden_store) = tracing_progress::layer();
    let (hidden, _handle) = tracing_subscriber::reload::Layer::new(hidden);
    let (last, last_store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry()
        .with(first)
        .with(hidden)
        .with(last.with_filter(LevelFilter::INFO));
    tracing::subscriber::with_default(subscriber, || {
        let job = info_span!("job", progress.level = "job", progress.total = 10);
        let id = job.operation_id().unwrap();
        assert!(
            first_store.get(id).is_some(),
            "operation_id is the first layer's"
        );
        let _j = job.enter();
        // An untracked helper span in between: the trait walks up to `job` in every table.
        info_span!("helper").in_scope(|| tracing::Span::current().inc(3));
        job.progress().inc(2);
        let current = |store: &tracing_progress::Store| store.active()[0].root.current;
        assert_eq!(current(&first_store), 5, "span.inc and the handle");
        assert_eq!(
            current(&hidden_store),
            3,
            "span.inc reaches the hidden layer"
        );
        assert_eq!(current(&last_store), 3, "and the filtered one");
        assert_eq!(job.progress().node_id(), job.progress_id());
    });
}

/// The most common setup, `fmt().with_env_filter(..)` with `RUST_LOG` unset, stops INFO spans
/// before the layer sees them: said once and flagged, never silent.
#[test]
fn a_global_filter_that_hides_progress_spans_is_reported() {
    let (progress, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("error"))
        .with_writer(io::sink)
        .finish()
        .with(progress);
    tracing::subscriber::with_default(subscriber, || {
        info_span!("job", progress.level = "job").in_scope(|| {});
    });
    assert_eq!(
        store.history(&Default::default()).len(),
        0,
        "nothing tracked"
    );
    assert!(
        store
            .stats()
            .has_warning(tracing_progress::SetupWarning::LEVEL_FILTERED),
        "{:?}",
        store.stats()
    );
    // The recommended setup: the filter on the output layer only. No warning, all tracked.
    let (progress, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(progress).with(
        tracing_subscriber::fmt::layer()
            .with_writer(io::sink)
            .with_filter(EnvFilter::new("error")),
    );
    tracing::subscriber::with_default(subscriber, || {
        info_span!("job", progress.level = "job").in_scope(|| {});
    });
    assert_eq!(store.history(&Default::default()).len(), 1);
    assert!(store.stats().warnings.is_empty(), "{:?}", store.stats());
}
