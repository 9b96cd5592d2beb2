//! Estimates and stall flags through the real layer, with the store's clock driven by hand
//! (`Builder::clock`): deterministic, no sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_progress::{Builder, EstimateBasis, ProgressSpanExt, Store};
use tracing_subscriber::Registry;
use tracing_subscriber::prelude::*;

const S: u64 = 1_000_000;

/// A clock that moves only when told to, and the store whose estimates it ticks.
#[derive(Clone, Default)]
struct Hand {
    ms: Arc<AtomicU64>,
    store: Arc<std::sync::OnceLock<Store>>,
}

impl Hand {
    /// Time passes, then the store's estimate tick runs (as its thread would).
    fn advance_ms(&self, ms: u64) {
        self.pass_ms(ms);
        if let Some(store) = self.store.get() {
            store.tick_estimates();
        }
    }

    /// Time passes with no tick: only readers look.
    fn pass_ms(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Runs `f` with registry + our layer on a hand-driven clock (a custom clock turns the
/// store's own tick thread off, so ticks happen exactly when the test advances time).
fn with_clock<R>(builder: Builder, f: impl FnOnce(&Store, &Hand) -> R) -> R {
    let hand = Hand::default();
    let read = hand.ms.clone();
    let (layer, store) = builder
        .clock(move || Duration::from_millis(read.load(Ordering::SeqCst)))
        .build::<Registry>()
        .expect("valid builder");
    let _ = hand.store.set(store.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || f(&store, &hand))
}

#[test]
fn snapshot_carries_a_rate_estimate_after_some_progress() {
    with_clock(Builder::new(), |store, hand| {
        let span = tracing::info_span!(
            "import",
            progress.level = "import",
            progress.total = 1_000u64,
            progress.current = 200u64
        );
        let _guard = span.enter();
        let id = span.progress_id().unwrap();
        assert_eq!(store.get(id).unwrap().root.estimate, None, "no signal yet");
        // 20 units a second from 200, a UI looking every 500 ms.
        for step in 1..=80u64 {
            hand.advance_ms(500);
            span.inc(10);
            let state = store.get(id).unwrap();
            if step >= 60 {
                // 30 s and more in: 3τ, settled.
                let e = state.root.estimate.clone().expect("an estimate");
                let done = 200 + step * 10;
                let truth = (1_000 - done) * S / 20;
                assert_eq!(e.basis, EstimateBasis::Rate);
                assert!(
                    e.remaining_us.abs_diff(truth) <= truth / 20 + S / 2,
                    "{e:?} vs {truth}"
                );
                assert!(e.low_us <= e.remaining_us && e.remaining_us <= e.high_us);
                let rate = e.rate_per_s.unwrap();
                assert!((rate - 20.0).abs() < 1.0, "{rate}");
                assert!(!state.root.stalled);
            }
        }
        // It serializes in the documented shape.
        let json = store.get(id).unwrap().to_json();
        assert!(json.contains(r#""estimate":{"remaining_us":"#), "{json}");
        assert!(json.contains(r#""basis":"rate""#), "{json}");
    });
}

#[test]
fn stalled_after_k_usual_intervals_without_progress_and_not_before() {
    with_clock(Builder::new().stall_factor(4.0), |store, hand| {
        let span = tracing::info_span!("copy", progress.total = 100u64);
        let _guard = span.enter();
        let id = span.progress_id().unwrap();
        // One unit every 2 s, ticks every 500 ms (each right after the progress it sees).
        for step in 1..=40u64 {
            hand.pass_ms(500);
            if step % 4 == 0 {
                span.inc(1);
            }
            store.tick_estimates();
            assert!(
                !store.get(id).unwrap().root.stalled,
                "moving at step {step}"
            );
        }
        // No progress: not stalled before 4 × 2 s, stalled after.
        for _ in 0..15 {
            hand.advance_ms(500);
            assert!(!store.get(id).unwrap().root.stalled);
        }
        hand.advance_ms(1_000);
        assert!(
            store.get(id).unwrap().root.stalled,
            "8.5 s without progress"
        );
        // Progress again: not stalled any more.
        hand.advance_ms(500);
        span.inc(1);
        assert!(!store.get(id).unwrap().root.stalled);
    });
}

#[test]
fn history_of_finished_nodes_is_the_prior_and_parents_combine_children() {
    with_clock(Builder::new(), |store, hand| {
        // Earlier runs: three "encode" blocks of 10 s each.
        for _ in 0..3 {
            let op = tracing::info_span!("batch", progress.total = 1u64);
            let _op = op.enter();
            let block =
                tracing::info_span!("block", progress.level = "block", progress.name = "encode");
            let _b = block.enter();
            hand.advance_ms(10_000);
        }
        // A new run of 3 blocks, one after the other.
        let op = tracing::info_span!("batch", progress.total = 3u64);
        let _op = op.enter();
        let op_id = op.progress_id().unwrap();
        {
            let block =
                tracing::info_span!("block", progress.level = "block", progress.name = "encode");
            let _b = block.enter();
            hand.advance_ms(4_000);
            let state = store.get(op_id).unwrap();
            let b = &state.root.children[0];
            let e = b
                .estimate
                .clone()
                .expect("history estimate before any unit");
            assert_eq!((e.basis, e.remaining_us), (EstimateBasis::History, 6 * S));
            // The batch: this block's 6 s plus two more of 10 s each.
            let e = state.root.estimate.clone().expect("children estimate");
            assert_eq!(e.basis, EstimateBasis::Children);
            assert!(e.remaining_us.abs_diff(26 * S) < S / 100, "{e:?}");
            hand.advance_ms(6_000);
        }
        let _second =
            tracing::info_span!("block", progress.level = "block", progress.name = "encode");
        let _b = _second.enter();
        hand.advance_ms(2_000);
        let e = store.get(op_id).unwrap().root.estimate.clone().unwrap();
        // 8 s for the running one, 10 s for the last.
        assert!(e.remaining_us.abs_diff(18 * S) < S / 100, "{e:?}");
    });
}

#[test]
fn stall_factor_is_validated() {
    for bad in [0.5, f64::NAN, f64::INFINITY] {
        let err = Builder::new()
            .stall_factor(bad)
            .build::<Registry>()
            .unwrap_err();
        assert!(err.to_string().contains("stall_factor"), "{err}");
    }
    assert!(Builder::new().stall_factor(1.0).build::<Registry>().is_ok());
}

/// Through the real layer: estimates and stall flags as the store's tick sees them.
#[test]
fn ticks_through_the_layer_carry_estimate_and_stall() {
    with_clock(Builder::new().stall_factor(3.0), |store, hand| {
        let span = tracing::info_span!("scan", progress.total = 1_000u64);
        let _guard = span.enter();
        let id = span.progress_id().unwrap();
        let mut last = None;
        // 10 units a second, ticks every 250 ms, for 40 s (3τ and more).
        for step in 1..=160u64 {
            hand.pass_ms(250);
            if step % 4 == 0 {
                span.inc(10);
            }
            store.tick_estimates();
            last = store.get(id).unwrap().root.estimate.clone();
        }
        let e = last.expect("an estimate after 40 s of progress");
        assert_eq!(e.basis, EstimateBasis::Rate);
        assert!(e.remaining_us.abs_diff(60 * S) < 3 * S, "{e:?}");
        // Then nothing for 2.5 s (fine), and for 3.5 s (3 × the 1 s interval: stalled), seen
        // by a reader without any tick in between.
        hand.pass_ms(2_500);
        assert!(!store.get(id).unwrap().root.stalled);
        hand.pass_ms(1_000);
        assert!(store.get(id).unwrap().root.stalled);
    });
}
