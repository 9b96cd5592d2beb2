//! A snapshot refreshed in place (its previous one dropped) reads the same as one built anew
//! (the previous one held), a snapshot once handed out never changes, and an operation lets
//! go of its last snapshot when nobody looks any more.

use std::sync::Arc;

use tracing::info_span;
use tracing_progress::{Builder, ProgressSpanExt};

use crate::support::{ManualClock, with_layer};

#[test]
fn refreshed_and_new_snapshots_agree_and_handed_out_ones_never_change() {
    let clock = ManualClock::new();
    let builder = Builder::new()
        .max_finished_children(4)
        .estimate_interval(None)
        .clock(clock.reader());
    with_layer(builder, |store| {
        let op = info_span!("batch", progress.level = "batch", progress.total = 40);
        let id = op.operation_id().unwrap();
        let _g = op.enter();
        let mut open = Vec::new();
        let mut kept = Vec::new();
        for step in 0..40u64 {
            clock.advance_ms(3);
            let item = info_span!(
                "item",
                progress.level = "item",
                progress.name = step,
                progress.total = 3
            );
            if step % 2 == 0 {
                item.in_scope(|| {
                    info_span!("part", progress.level = "part").in_scope(|| item.inc(1));
                    tracing::info!(step, "item half done");
                });
            }
            item.set_message(&format!("step {step}"));
            if step % 7 == 3 {
                item.fail("bad item");
            }
            open.push(item);
            if step % 3 == 0 {
                // Close an older one: children leave from the middle and get folded.
                open.remove(open.len() / 2);
            }
            op.inc(1);
            // Refreshed: the last snapshot was dropped. Built anew: `refreshed` is held.
            let refreshed = store.get(id).unwrap();
            let built = store.get(id).unwrap();
            assert!(!Arc::ptr_eq(&refreshed, &built));
            assert_eq!(*refreshed, *built, "step {step}");
            assert_eq!(refreshed.to_json(), built.to_json());
            if step % 10 == 0 {
                kept.push(((*refreshed).clone(), refreshed));
            }
        }
        assert!(
            store
                .get(id)
                .unwrap()
                .root
                .folded
                .iter()
                .map(|f| f.count)
                .sum::<u64>()
                > 5,
            "children were folded"
        );
        for (copy, snap) in &kept {
            assert_eq!(copy, &**snap, "a snapshot handed out changed afterwards");
        }
    });
}

#[test]
fn an_operation_lets_go_of_its_last_snapshot_when_nobody_looks() {
    let clock = ManualClock::new();
    with_layer(Builder::new().clock(clock.reader()), |store| {
        let op = info_span!("job", progress.level = "job");
        let id = op.operation_id().unwrap();
        let _g = op.enter();
        let _children: Vec<_> = (0..100)
            .map(|i| info_span!("c", progress.name = i))
            .collect();
        let snap = store.get(id).unwrap();
        assert_eq!(Arc::strong_count(&snap), 2, "kept for the next snapshot");
        for _ in 0..4 {
            store.tick_estimates();
        }
        assert_eq!(Arc::strong_count(&snap), 2, "still kept a few ticks on");
        for _ in 0..8 {
            store.tick_estimates();
        }
        assert_eq!(Arc::strong_count(&snap), 1, "let go of after idle ticks");
        drop(_g);
    });
}

#[test]
fn a_finished_operation_keeps_no_extra_snapshot() {
    let (store, id) = with_layer(Builder::new(), |store| {
        let op = info_span!("job", progress.level = "job");
        let id = op.operation_id().unwrap();
        op.in_scope(|| drop(store.get(id)));
        id
    });
    let done = store.get(id).unwrap();
    assert_eq!(
        Arc::strong_count(&done),
        2,
        "held by history and by this test only"
    );
}

/// A reader that holds one snapshot while it takes the next (a dashboard calling
/// `Store::active`, then `Store::get`) still gets snapshots refreshed in place: the
/// operation keeps its last two.
#[test]
fn a_reader_holding_one_snapshot_while_taking_the_next_gets_refreshed_ones() {
    with_layer(Builder::new().estimate_interval(None), |store| {
        let op = info_span!("job", progress.level = "job");
        let id = op.operation_id().unwrap();
        let _g = op.enter();
        let _children: Vec<_> = (0..100)
            .map(|i| info_span!("c", progress.name = i))
            .collect();
        let (a, b) = (store.get(id).unwrap(), store.get(id).unwrap());
        assert_eq!(Arc::strong_count(&a), 2, "the older one kept too");
        assert_eq!(Arc::strong_count(&b), 2);
        // Both stay allocated (kept), so a new snapshot cannot land at their addresses.
        let kept = [Arc::as_ptr(&a), Arc::as_ptr(&b)];
        drop((a, b));
        for round in 0..5 {
            let held = store.get(id).unwrap();
            op.inc(1);
            let next = store.get(id).unwrap();
            assert_eq!(next.root.current, held.root.current + 1);
            for s in [&held, &next] {
                assert!(
                    kept.contains(&Arc::as_ptr(s)),
                    "round {round}: a snapshot built anew instead of refreshed"
                );
            }
        }
    });
}
