//! Random subscriber stacks and random span programs: whatever the setup, the host never
//! panics, every tracked span's node ends in a terminal status, counts add up, and nothing is
//! left live once every span closed.

use std::io;
use std::time::Duration;

use proptest::prelude::*;
use tracing::{Dispatch, Instrument};
use tracing_progress::{ProgressLevel, ProgressSpanExt, Status, Store};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// Every stack shares this base: the registry under an optional global level filter.
type Base = Layered<Option<LevelFilter>, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync>;

/// One progress layer and how it is added.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    Plain,
    Reload,
    Some,
    None,
}

#[derive(Clone, Debug)]
struct Stack {
    global: Option<LevelFilter>,
    progress: Vec<Wrap>,
    fmt: bool,
    fmt_filtered: bool,
}

/// A span program: a tree of spans, each tracked or not, with work inside.
#[derive(Clone, Debug)]
struct Node {
    tracked: bool,
    total: Option<u8>,
    incs: u8,
    error: bool,
    log_error: bool,
    cancel: bool,
    close_elsewhere: bool,
    async_dropped: bool,
    children: Vec<Node>,
}

fn stack() -> impl Strategy<Value = Stack> {
    let wrap = prop_oneof![
        Just(Wrap::Plain),
        Just(Wrap::Reload),
        Just(Wrap::Some),
        Just(Wrap::None)
    ];
    (
        prop_oneof![
            Just(None),
            Just(Some(LevelFilter::INFO)),
            Just(Some(LevelFilter::WARN))
        ],
        prop::collection::vec(wrap, 0..=2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(global, progress, fmt, fmt_filtered)| Stack {
            global,
            progress,
            fmt,
            fmt_filtered,
        })
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (
        any::<bool>(),
        prop::option::of(0u8..6),
        0u8..8,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(tracked, total, incs, error, log_error, cancel, close_elsewhere, async_dropped)| {
                Node {
                    tracked,
                    total,
                    incs,
                    error,
                    log_error,
                    cancel,
                    close_elsewhere,
                    async_dropped,
                    children: Vec::new(),
                }
            },
        );
    leaf.prop_recursive(4, 24, 4, |inner| {
        (inner.clone(), prop::collection::vec(inner, 0..4)).prop_map(|(mut n, children)| {
            n.children = children;
            n.async_dropped = false;
            n
        })
    })
}

/// Builds the subscriber; the stores of the progress layers that are really installed.
fn build(stack: &Stack) -> (Dispatch, Vec<Store>) {
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut stores = Vec::new();
    for wrap in &stack.progress {
        let (layer, store) = tracing_progress::layer::<Base>();
        match wrap {
            Wrap::Plain => layers.push(layer.boxed()),
            Wrap::Reload => {
                let (layer, handle) = tracing_subscriber::reload::Layer::new(layer);
                std::mem::forget(handle);
                layers.push(layer.boxed());
            }
            Wrap::Some => layers.push(Some(layer).boxed()),
            Wrap::None => {
                layers.push(None::<tracing_progress::ProgressLayer<Base>>.boxed());
                continue;
            }
        }
        stores.push(store);
    }
    if stack.fmt {
        let fmt = tracing_subscriber::fmt::layer().with_writer(io::sink);
        if stack.fmt_filtered {
            layers.push(fmt.with_filter(LevelFilter::WARN).boxed());
        } else {
            layers.push(fmt.boxed());
        }
    }
    let subscriber = tracing_subscriber::registry()
        .with(stack.global)
        .with(layers);
    (Dispatch::new(subscriber), stores)
}

fn count_tracked(n: &Node) -> usize {
    usize::from(n.tracked) + n.children.iter().map(count_tracked).sum::<usize>()
}

fn exec(n: &Node, stores: &[Store], rt: &tokio::runtime::Runtime) {
    if n.async_dropped {
        // A future with a span of its own, dropped by a timeout while it waits.
        let span = if n.tracked {
            tracing::info_span!("fetch", progress.level = "fetch")
        } else {
            tracing::info_span!("fetch_helper")
        };
        let fut = async { tokio::time::sleep(Duration::from_secs(10)).await }.instrument(span);
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_millis(1), fut).await });
        return;
    }
    let span = match (n.tracked, n.total) {
        (true, Some(t)) => tracing::info_span!("unit", progress.level = "unit", progress.total = t),
        (true, None) => tracing::info_span!("unit", progress.level = "unit"),
        (false, _) => tracing::info_span!("helper", x = 1),
    };
    {
        let _g = span.enter();
        for _ in 0..n.incs {
            span.inc(1);
        }
        if n.cancel {
            for s in stores {
                for id in s.active_ids() {
                    let _ = s.cancel(id);
                }
            }
            let _ = span.is_cancelled();
        }
        for c in &n.children {
            exec(c, stores, rt);
        }
        if n.log_error {
            tracing::error!("something went wrong, retrying");
        }
        if n.error {
            tracing::error!(error = "returned error");
        }
    }
    if n.close_elsewhere {
        // The registry closes parents through the closing thread's default dispatcher, as a
        // global subscriber would be.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::spawn(move || tracing::dispatcher::with_default(&dispatch, || drop(span)))
            .join()
            .expect("close thread");
    } else {
        drop(span);
    }
}

fn check_level(l: &ProgressLevel) -> Result<(), TestCaseError> {
    prop_assert!(l.status.is_finished(), "{} ended {:?}", l.name, l.status);
    let failed = l
        .children
        .iter()
        .filter(|c| c.status == Status::Failed)
        .count() as u64
        + l.folded.iter().map(|f| f.failed).sum::<u64>();
    prop_assert_eq!(l.failed, failed, "failed children of {}", l.name);
    if let Some(below) = l.failures_below() {
        let failed_below = l
            .walk()
            .skip(1)
            .filter(|d| d.status == Status::Failed)
            .count() as u64;
        prop_assert!(
            below.count >= 1 && below.count <= failed_below,
            "{}: {} of {}",
            l.name,
            below.count,
            failed_below
        );
    }
    for c in &l.children {
        check_level(c)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_stack_any_program_ends_clean(stack in stack(), programs in prop::collection::vec(node(), 1..4)) {
        let (dispatch, stores) = build(&stack);
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        tracing::dispatcher::with_default(&dispatch, || {
            for p in &programs {
                exec(p, &stores, &rt);
            }
        });
        drop(rt);
        let visible = stack.global != Some(LevelFilter::WARN);
        for store in &stores {
            prop_assert!(store.active().is_empty(), "nothing left live: {:?}", store.active_ids());
            let history = store.history(&Default::default());
            let nodes: usize = history.iter().map(|s| s.root.walk().count()).sum();
            let seen: u64 = history.iter().map(|s| s.metrics.nodes_seen).sum();
            prop_assert_eq!(seen as usize, nodes, "counts add up");
            let expected: usize = if visible { programs.iter().map(count_tracked).sum() } else { 0 };
            prop_assert_eq!(nodes, expected, "one node per tracked span");
            for op in history.iter() {
                check_level(&op.root)?;
            }
            if !visible {
                prop_assert!(store.stats().has_warning(tracing_progress::SetupWarning::LEVEL_FILTERED));
            }
        }
    }
}
