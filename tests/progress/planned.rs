//! Planned children through the store API: pending slots with positions, claimed by name or
//! key, counted in the total, skipped (never failed) when the parent ends, bounded.

use tracing::info_span;
use tracing_progress::{Builder, CancelReason, ProgressLevel, ProgressSpanExt, Status};

use crate::support::{only_finished, with_layer};

fn rows(level: &ProgressLevel) -> Vec<String> {
    level
        .children
        .iter()
        .map(|c| {
            let mark = if c.planned { " planned" } else { "" };
            format!("{}:{}:{}{mark}", c.level_type, c.name, c.outcome())
        })
        .collect()
}

#[tracing::instrument(fields(progress.level = "song", progress.name = %name))]
fn song(name: &str) {}

#[test]
fn planned_children_are_pending_in_place_then_taken_by_the_real_spans() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let setlist = info_span!("setlist", progress.level = "setlist");
        let _g = setlist.enter();
        setlist.plan(Some("song"), ["a.wav", "b.wav", "c.wav"]);
        let op = || store.get(setlist.operation_id().unwrap()).unwrap();
        let before = op();
        assert_eq!(
            rows(&before.root),
            [
                "song:a.wav:pending planned",
                "song:b.wav:pending planned",
                "song:c.wav:pending planned"
            ]
        );
        assert_eq!((before.root.current, before.root.total), (0, Some(3)));
        assert_eq!(before.root.percentage, Some(0.0));
        // Started out of order: each span takes its own slot; ids and positions are kept.
        let ids: Vec<_> = before.root.children.iter().map(|c| c.id).collect();
        song("b.wav");
        let after = op();
        assert_eq!(after.root.children[1].id, ids[1]);
        assert_eq!(after.root.children[1].status, Status::Completed);
        assert!(!after.root.children[1].planned);
        assert_eq!(after.root.children[1].span_name.as_ref(), "song");
        assert_eq!((after.root.current, after.root.total), (1, Some(3)));
        let pct = after.root.percentage.unwrap();
        assert!((pct - 100.0 / 3.0).abs() < 0.01, "{pct}");
        // A child that matches no slot goes after them and adds to the total.
        song("encore.wav");
        song("a.wav");
        let after = op();
        assert_eq!(after.root.children[0].id, ids[0]);
        assert_eq!(
            rows(&after.root),
            [
                "song:a.wav:completed",
                "song:b.wav:completed",
                "song:c.wav:pending planned",
                "song:encore.wav:completed"
            ]
        );
        assert_eq!((after.root.current, after.root.total), (3, Some(4)));
        assert_eq!(after.metrics.nodes_seen, 4, "slots are not spans");
    });
    // c.wav never ran: skipped, and the setlist completed (not "with failures").
    let op = only_finished(&store);
    let c = &op.root.children[2];
    assert_eq!(c.status, Status::Cancelled);
    assert_eq!(c.cancel_reason, Some(CancelReason::Skipped));
    assert_eq!(c.outcome(), "skipped");
    assert_eq!(op.root.status, Status::Completed);
    assert!(!op.root.with_failures);
    assert_eq!(op.root.outcome(), "completed");
    assert_eq!(
        (op.root.current, op.root.total, op.root.skipped),
        (3, Some(4), 1)
    );
    assert_eq!(op.root.failed, 0);
}

#[test]
fn keys_match_before_names_and_the_first_child_names_the_level() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        job.plan_keyed(None, [("k1", "same"), ("k2", "same"), ("k3", "other")]);
        let op = store.get(job.operation_id().unwrap()).unwrap();
        assert_eq!(op.root.children[0].level_type.as_ref(), "planned");
        assert_eq!(op.root.children[1].key.as_deref(), Some("k2"));
        info_span!(
            "block",
            progress.level = "block",
            progress.key = "k2",
            progress.name = "same"
        )
        .in_scope(|| {
            let op = store.get(job.operation_id().unwrap()).unwrap();
            // The block took k2's slot, not the first "same"; the rest learned the type.
            assert_eq!(
                rows(&op.root),
                [
                    "block:same:pending planned",
                    "block:same:running",
                    "block:other:pending planned"
                ]
            );
        });
    });
    let op = only_finished(&store);
    assert_eq!(op.root.children[1].key.as_deref(), Some("k2"));
    assert_eq!(op.root.skipped, 2);
}

#[test]
fn an_explicit_total_wins_and_a_failed_child_still_fails_as_usual() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job", progress.total = 10);
        let _g = job.enter();
        job.plan(Some("step"), ["one", "two", "three"]);
        let step = info_span!("step", progress.level = "step", progress.name = "one");
        step.in_scope(|| step.fail("boom"));
    });
    let op = only_finished(&store);
    assert_eq!(op.root.total, Some(10));
    assert_eq!(op.root.failed, 1);
    assert_eq!(op.root.skipped, 2);
    assert!(
        op.root.with_failures,
        "the failed step, not the skipped ones"
    );
    assert_eq!(op.root.failures_below().unwrap().count, 1);
}

#[test]
fn a_cancelled_parent_cancels_its_planned_children() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        job.plan(Some("step"), ["one", "two"]);
        store.cancel(job.operation_id().unwrap()).unwrap();
        assert!(job.is_cancelled());
    });
    let op = only_finished(&store);
    assert_eq!(op.root.status, Status::Cancelled);
    for c in &op.root.children {
        assert_eq!(
            (c.status, c.cancel_reason),
            (Status::Cancelled, Some(CancelReason::Requested))
        );
        assert_eq!(c.outcome(), "cancelled");
    }
}

#[tracing::instrument(fields(progress.level = "setlist", progress.planned = ?songs, progress.planned_level = "song"))]
fn setlist(songs: &[&str]) {
    for s in songs.iter().take(1) {
        song(s);
    }
}

#[tracing::instrument(fields(progress.level = "batch", progress.planned = "x, y"))]
fn batch() {}

#[test]
fn the_progress_planned_field_works_from_instrument() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        setlist(&["a \"live\".wav", "b.wav"]);
    });
    let op = only_finished(&store);
    assert_eq!(
        rows(&op.root),
        ["song:a \"live\".wav:completed", "song:b.wav:skipped"]
    );
    assert_eq!(op.root.total, Some(2));
    let (store, ()) = with_layer(Builder::new(), |_| batch());
    let op = only_finished(&store);
    assert_eq!(rows(&op.root), ["planned:x:skipped", "planned:y:skipped"]);
}

#[test]
fn a_plan_of_a_million_names_is_capped_and_counted() {
    let (store, ()) = with_layer(Builder::new().max_planned_children(100), |store| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        job.plan(Some("item"), (0..1_000_000).map(|i| format!("item-{i}")));
        let op = store.get(job.operation_id().unwrap()).unwrap();
        assert_eq!(op.root.children.len(), 100);
        assert_eq!(op.root.total, Some(1_000_000));
        assert_eq!(op.root.planned_hidden, 999_900);
        assert_eq!(op.metrics.planned_dropped, 999_900);
        assert!(
            op.root.input_errors[0].contains("999900 counted only"),
            "{:?}",
            op.root.input_errors
        );
        // Children past the kept slots are taken as the hidden entries: no growth of the total.
        for i in 0..150 {
            info_span!(
                "item",
                progress.level = "item",
                progress.name = format!("item-{i}").as_str()
            )
            .in_scope(|| {});
        }
        let op = store.get(job.operation_id().unwrap()).unwrap();
        assert_eq!((op.root.current, op.root.total), (150, Some(1_000_000)));
        assert_eq!(op.root.planned_hidden, 999_850);
    });
    let op = only_finished(&store);
    assert_eq!(op.root.skipped, 0);
}

#[test]
fn skipped_slots_fold_like_finished_children_and_the_operation_cap_holds() {
    let builder = Builder::new()
        .max_finished_children(5)
        .max_finished_nodes(12);
    let (store, ()) = with_layer(builder, |store| {
        let tour = info_span!("tour", progress.level = "tour");
        let _g = tour.enter();
        let a = info_span!("setlist", progress.level = "setlist", progress.name = "a");
        let b = info_span!("setlist", progress.level = "setlist", progress.name = "b");
        a.plan(Some("song"), (0..8).map(|i| format!("a{i}")));
        // Only 12 waiting slots per operation: b keeps 4 of its 8.
        b.plan(Some("song"), (0..8).map(|i| format!("b{i}")));
        let op = store.get(tour.operation_id().unwrap()).unwrap();
        let (pa, pb) = (&op.root.children[0], &op.root.children[1]);
        assert_eq!((pa.children.len(), pb.children.len()), (8, 4));
        assert_eq!((pb.total, pb.planned_hidden), (Some(8), 4));
        assert_eq!(op.metrics.planned_dropped, 4);
        assert!(
            pb.input_errors[0].contains("4 kept as pending nodes"),
            "{:?}",
            pb.input_errors
        );
        // Entered once: a span never entered with nothing but a plan reads dropped.
        a.in_scope(|| {});
        b.in_scope(|| {});
        drop(a);
        drop(b);
    });
    let op = only_finished(&store);
    let a = &op.root.children[0];
    assert_eq!(a.skipped, 8);
    // Past 5 finished children per parent the oldest skipped ones fold, counted as cancelled.
    assert_eq!(a.children.len(), 5);
    assert_eq!((a.folded[0].count, a.folded[0].cancelled), (3, 3));
    assert_eq!(a.outcome(), "completed");
    assert!(op.metrics.nodes_retained <= 12 + 3, "{:?}", op.metrics);
}

#[test]
fn a_planned_field_cut_at_the_text_limit_keeps_whole_names_and_says_so() {
    let long: Vec<String> = (0..100).map(|i| format!("track-{i:03}.flac")).collect();
    let (store, ()) = with_layer(Builder::new().max_text_len(100), |_| {
        info_span!("album", progress.level = "album", progress.planned = ?long).in_scope(|| {});
    });
    let op = only_finished(&store);
    let kept = op.root.children.len();
    assert!(kept > 3 && kept < 10, "{kept}");
    assert!(
        op.root
            .children
            .iter()
            .all(|c| c.name.starts_with("track-") && c.name.ends_with(".flac"))
    );
    assert!(
        op.root.input_errors[0].contains("cut at the text length limit"),
        "{:?}",
        op.root.input_errors
    );
}

#[test]
fn plans_on_closed_or_untracked_spans_do_nothing() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let id = job.operation_id();
        job.in_scope(|| {});
        drop(job);
        info_span!("plain").plan(None, ["x"]);
        assert!(id.is_some());
    });
    let op = only_finished(&store);
    assert!(op.root.children.is_empty());
    // Without the layer: a no-op.
    info_span!("job", progress.level = "job").plan(None, ["x"]);
}

#[test]
fn a_future_dropped_before_its_first_poll_is_dropped_with_its_plan() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        // Created with its plan, never entered: the span is dropped, like an unpolled future.
        drop(info_span!(
            "batch",
            progress.level = "batch",
            progress.planned = "x, y"
        ));
    });
    let op = only_finished(&store);
    assert_eq!(
        (op.root.status, op.root.cancel_reason),
        (Status::Cancelled, Some(CancelReason::Dropped))
    );
    for c in &op.root.children {
        assert_eq!(c.cancel_reason, Some(CancelReason::Dropped), "{c:?}");
    }
}

#[test]
fn a_retried_planned_child_stays_one_slot_of_the_total() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        job.plan(Some("song"), ["a.wav", "b.wav"]);
        for attempt in 1..=2 {
            let s = info_span!("song", progress.level = "song", progress.name = "a.wav");
            s.in_scope(|| {
                if attempt == 1 {
                    s.fail("decoder crashed");
                }
            });
        }
    });
    let op = only_finished(&store);
    let rows: Vec<String> = op
        .root
        .children
        .iter()
        .map(|c| format!("{}:{}", c.name, c.outcome()))
        .collect();
    assert_eq!(rows, ["a.wav:completed", "b.wav:skipped"]);
    assert_eq!(op.root.children[0].attempt(), 2);
    assert_eq!(
        (op.root.current, op.root.total, op.root.skipped),
        (1, Some(2), 1)
    );
    assert!(!op.root.with_failures);
}

/// Claims in any order, with duplicate names, keys and a second plan made after earlier
/// slots were claimed, finished and folded (so arena slots are reused), against a model: each
/// child takes the first waiting slot with its key, else with its name.
#[test]
fn claims_match_a_first_waiting_slot_model_in_any_order() {
    let builder = Builder::new().max_finished_children(8);
    let (store, left) = with_layer(builder, |store| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        // (key, name, node id) of every slot still waiting, in plan order.
        let mut model: Vec<(Option<String>, String, u64)> = Vec::new();
        let plan = |model: &mut Vec<_>, round: usize| {
            let entries: Vec<(String, String)> = (0..150)
                .map(|i| (format!("k{round}-{i}"), format!("n{}", i % 7)))
                .collect();
            let keyed = round % 2 == 1;
            if keyed {
                job.plan_keyed(Some("item"), entries.iter().map(|(k, n)| (k, n)));
            } else {
                job.plan(Some("item"), entries.iter().map(|(_, n)| n));
            }
            let op = store.get(job.operation_id().unwrap()).unwrap();
            let planned: Vec<_> = op.root.children.iter().filter(|c| c.planned).collect();
            let fresh = &planned[planned.len() - entries.len()..];
            for ((k, n), c) in entries.iter().zip(fresh) {
                assert_eq!(&*c.name, n);
                model.push((keyed.then(|| k.clone()), n.clone(), c.id.as_u64()));
            }
        };
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..4 {
            plan(&mut model, round);
            for _ in 0..120 {
                // A child names a waiting slot's key, or its name, or nothing planned.
                let pick = &model[next(model.len())];
                let (key, name) = match next(3) {
                    0 if pick.0.is_some() => (pick.0.clone(), "unrelated".to_owned()),
                    2 => (None, "stranger".to_owned()),
                    _ => (None, pick.1.clone()),
                };
                let want = key
                    .as_ref()
                    .and_then(|k| model.iter().position(|m| m.0.as_ref() == Some(k)))
                    .or_else(|| model.iter().position(|m| m.1 == name));
                let span = match &key {
                    Some(k) => {
                        info_span!("item", progress.level = "item", progress.key = %k, progress.name = %name)
                    }
                    None => info_span!("item", progress.level = "item", progress.name = %name),
                };
                let got = span.progress_id().unwrap().as_u64();
                match want {
                    Some(at) => assert_eq!(got, model.remove(at).2, "{key:?} {name}"),
                    None => assert!(model.iter().all(|m| m.2 != got)),
                }
                drop(span);
            }
        }
        let op = store.get(job.operation_id().unwrap()).unwrap();
        let waiting: Vec<u64> = op
            .root
            .children
            .iter()
            .filter(|c| c.planned)
            .map(|c| c.id.as_u64())
            .collect();
        assert_eq!(waiting, model.iter().map(|m| m.2).collect::<Vec<_>>());
        model.len()
    });
    let op = only_finished(&store);
    assert!(left > 0);
    assert_eq!(op.root.skipped as usize, left);
}
