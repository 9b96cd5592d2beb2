//! What `ProgressLayer` costs on the instrumented code, next to the alternatives.
//!
//! Every configuration gets its own subscriber (`registry()` + one layer) installed with
//! `dispatcher::with_default`, so the groups below print their configurations side by side:
//!
//! * `span_lifecycle/*`: create + enter + exit + close one `block` span inside a long-lived,
//!   entered parent span (`op`, itself tracked by our layer). Configurations:
//!   - `floor`: a layer with no methods; the registry's own cost (slab slot, scope, close).
//!   - `minimal`: a layer that puts two `u64`s in the span's extensions; the cheapest
//!     possible "per-span state" layer.
//!   - `progress_untracked`: our layer, child span without `progress.*` fields.
//!   - `progress_tracked`: our layer, child with `progress.level = "block"` (a new node
//!     in the parent's operation, started, timed and closed; folding included once the
//!     operation passes `max_finished_nodes`).
//!   - `otel_noop`: `tracing-opentelemetry` with an always-on SDK tracer and no exporter,
//!     the lower bound of what an OTel pipeline pays per span.
//!   - `indicatif`: `tracing-indicatif` with default settings (one progress bar per span).
//! * `progress_update/*`: one update on an entered tracked span, three ways: the extension
//!   trait (`inc`, `set_current`), `span.record("progress.current", ..)` and an event
//!   `info!(progress.inc = 1)`.
//! * `parallel_updates/*`: two threads, 100k `inc(1)` each (time = the whole thing, both
//!   threads, thread spawns included). `different_operations` vs `same_operation` (one
//!   child node per thread under one operation) shows whether operations share a lock;
//!   `one_thread` is a single thread doing its 100k alone, the ideal for "no contention".
//!   These spans are each created on their own thread; `different_operations_one_creator`
//!   uses two operations created back to back on one thread, where cache-line sharing
//!   between their registry/heap data can slow both (it changes from run to run).
//! * `snapshot/get_10k_live`: `Store::get` of an operation with 10,000 open children.
//!
//! How to read it:
//! * `(progress_tracked - floor) / (minimal - floor)`: what tracking a span costs, in units
//!   of "the cheapest layer that keeps per-span state".
//! * `progress_untracked / floor`: the tax on spans that do not ask for progress (ideally
//!   close to 1: our layer only scans field names and looks up extensions).
//! * `different_operations` close to `one_thread` means operations do not serialize;
//!   `same_operation` above it shows contention on one operation's lock. On a loaded
//!   two-core machine any other busy process also shows up here as a slowdown.
//!
//! `tracing-indicatif` offers no way to pick the draw target; indicatif does not draw when
//! stderr is not a terminal, so run with stderr redirected (`2>/dev/null`) to keep terminal
//! drawing out of its numbers (a note is printed when stderr is a terminal).
//!
//! Run: `cargo bench --bench overhead` (2 to 3 minutes), or quicker and noisier with
//! `-- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::field::Empty;
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Span, Subscriber, dispatcher, info_span};
use tracing_progress::ProgressSpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// `inc(1)` calls per thread in `parallel_updates`.
const UPDATES_PER_THREAD: u64 = 100_000;
/// Open children of the operation in `snapshot`.
const LIVE_CHILDREN: usize = 10_000;

/// The floor: a layer that does nothing, so only the registry's work is measured.
struct NoopLayer;

impl<S: Subscriber> Layer<S> for NoopLayer {}

/// Roughly the size of the smallest useful per-span record (ids, a counter).
#[expect(
    dead_code,
    reason = "stored only so the insert has something realistic to move"
)]
struct SmallState(u64, u64);

/// The cheapest layer with per-span state: one extensions insert per new span.
struct MinimalLayer;

impl<S> Layer<S> for MinimalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SmallState(id.into_u64(), 0));
        }
    }
}

fn with_layer<L>(layer: L) -> Dispatch
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    Dispatch::new(tracing_subscriber::registry().with(layer))
}

/// Our layer on a fresh registry (a fresh store per configuration, so no state carries over).
fn progress_dispatch() -> (Dispatch, tracing_progress::Store) {
    let (layer, store) = tracing_progress::layer();
    (with_layer(layer), store)
}

/// The long-lived parent every lifecycle configuration runs under. It carries a
/// `progress.*` field in all configurations so that only the layer differs.
fn parent_span() -> Span {
    info_span!("op", progress.level = "op")
}

/// Benches one span's lifecycle under `dispatch`. The two span call sites are fixed, so the
/// same `block` callsite (fields and all) is used by every configuration except untracked.
fn lifecycle(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    dispatch: &Dispatch,
    tracked: bool,
) {
    dispatcher::with_default(dispatch, || {
        let parent = parent_span();
        let _entered = parent.enter();
        if tracked {
            group.bench_function(name, |b| {
                b.iter(|| info_span!("block", progress.level = "block").in_scope(|| ()))
            });
        } else {
            group.bench_function(name, |b| b.iter(|| info_span!("block").in_scope(|| ())));
        }
    });
}

fn span_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("span_lifecycle");

    lifecycle(&mut group, "floor", &with_layer(NoopLayer), true);
    lifecycle(&mut group, "minimal", &with_layer(MinimalLayer), true);

    let (dispatch, _store) = progress_dispatch();
    lifecycle(&mut group, "progress_untracked", &dispatch, false);
    let (dispatch, _store) = progress_dispatch();
    lifecycle(&mut group, "progress_tracked", &dispatch, true);

    // Always-on sampling so every span is recorded; no processor, so nothing is exported.
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("overhead-bench"));
    lifecycle(&mut group, "otel_noop", &with_layer(otel), true);
    drop(provider);

    let indicatif = tracing_indicatif::IndicatifLayer::new();
    lifecycle(&mut group, "indicatif", &with_layer(indicatif), true);

    group.finish();
}

fn progress_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("progress_update");
    let (dispatch, _store) = progress_dispatch();
    dispatcher::with_default(&dispatch, || {
        let parent = parent_span();
        let _op = parent.enter();
        let span = info_span!("block", progress.level = "block", progress.current = Empty);
        let _block = span.enter();

        group.bench_function("inc_ext", |b| b.iter(|| span.inc(black_box(1))));
        let mut n = 0u64;
        group.bench_function("set_current_ext", |b| {
            b.iter(|| {
                n += 1;
                span.set_current(black_box(n));
            })
        });
        let mut n = 0u64;
        group.bench_function("record_current", |b| {
            b.iter(|| {
                n += 1;
                span.record("progress.current", black_box(n));
            })
        });
        // The event finds its tracked span through the current scope.
        group.bench_function("event_inc", |b| {
            b.iter(|| tracing::info!(progress.inc = 1u64))
        });
    });
    group.finish();
}

/// `UPDATES_PER_THREAD` increments, one thread per span, `iters` times; returns wall time.
fn hammer(iters: u64, spans: &[&Span]) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        std::thread::scope(|s| {
            for span in spans {
                s.spawn(|| {
                    for _ in 0..UPDATES_PER_THREAD {
                        span.inc(black_box(1));
                    }
                });
            }
        });
    }
    start.elapsed()
}

/// Creates a span on a fresh thread, as a worker creating its own span would. Spans made
/// back to back on one thread can end up sharing cache lines, which is a layout effect
/// (it varies from run to run) rather than the locking this group is about.
fn span_on_own_thread(
    dispatch: &Dispatch,
    make: fn(Option<&Span>) -> Span,
    parent: Option<&Span>,
) -> Span {
    std::thread::scope(|s| {
        s.spawn(|| dispatcher::with_default(dispatch, || make(parent)))
            .join()
            .expect("span creation does not panic")
    })
}

fn root_op(_: Option<&Span>) -> Span {
    info_span!("op", progress.level = "op")
}

fn worker(parent: Option<&Span>) -> Span {
    info_span!(parent: parent.and_then(Span::id), "worker", progress.level = "worker")
}

fn parallel_updates(c: &mut Criterion) {
    let (dispatch, _store) = progress_dispatch();
    // Spans remember their dispatcher, so the hammering threads need no `with_default`.
    let op_a = span_on_own_thread(&dispatch, root_op, None);
    let op_b = span_on_own_thread(&dispatch, root_op, None);
    let shared = span_on_own_thread(&dispatch, root_op, None);
    let worker_1 = span_on_own_thread(&dispatch, worker, Some(&shared));
    let worker_2 = span_on_own_thread(&dispatch, worker, Some(&shared));
    // The same two operations created back to back on this thread (see `span_on_own_thread`).
    let (op_c, op_d) = dispatcher::with_default(&dispatch, || (root_op(None), root_op(None)));
    assert_ne!(op_a.operation_id(), op_b.operation_id());
    assert_eq!(worker_1.operation_id(), shared.operation_id());
    assert_eq!(worker_2.operation_id(), shared.operation_id());

    let mut group = c.benchmark_group("parallel_updates");
    // Each iteration is milliseconds long: few samples, flat sampling.
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    group.bench_function("one_thread", |b| {
        b.iter_custom(|iters| hammer(iters, &[&op_a]))
    });
    group.bench_function("different_operations", |b| {
        b.iter_custom(|iters| hammer(iters, &[&op_a, &op_b]))
    });
    group.bench_function("different_operations_one_creator", |b| {
        b.iter_custom(|iters| hammer(iters, &[&op_c, &op_d]))
    });
    group.bench_function("same_operation", |b| {
        b.iter_custom(|iters| hammer(iters, &[&worker_1, &worker_2]))
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let (dispatch, store) = progress_dispatch();
    let (op, children) = dispatcher::with_default(&dispatch, || {
        let op = parent_span();
        let children: Vec<Span> = op.in_scope(|| {
            (0..LIVE_CHILDREN)
                .map(|_| info_span!("block", progress.level = "block"))
                .collect()
        });
        (op, children)
    });
    let op_id = op.operation_id().expect("the parent is tracked");
    let state = store.get(op_id).expect("the operation is active");
    assert_eq!(
        state.root.children.len(),
        LIVE_CHILDREN,
        "all children are live nodes"
    );

    let mut group = c.benchmark_group("snapshot");
    group.sample_size(30).sampling_mode(SamplingMode::Flat);
    group.bench_function("get_10k_live", |b| b.iter(|| store.get(black_box(op_id))));
    group.finish();
    drop(children);
}

fn main() {
    if std::io::stderr().is_terminal() {
        eprintln!(
            "note: stderr is a terminal, so `indicatif` draws its bars there and its numbers \
             include terminal output; redirect stderr (2>/dev/null) to measure it hidden"
        );
    }
    // Modest defaults (command-line flags still override them) keep the run near 3 minutes.
    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    span_lifecycle(&mut c);
    progress_update(&mut c);
    parallel_updates(&mut c);
    snapshot(&mut c);
    c.final_summary();
}
