//! Unit tests of one operation's tree: folding, failures, estimates driven by hand with
//! explicit timestamps (estimate ticks and snapshots at chosen instants).

use std::sync::Arc;

use super::*;
use crate::estimate::Priors;
use crate::model::{EstimateBasis, ProgressState};

/// A normal close at `at_us` after `busy_ns` entered.
fn done(at_us: u64, busy_ns: u64) -> CloseInfo {
    CloseInfo {
        at_us,
        busy_ns,
        cancel_requested: false,
        never_entered: false,
        missing_return: false,
    }
}

fn node_at(level: &str, name: &str, at: u64) -> NewNode {
    NewNode {
        id: NodeId::next(),
        name: Some(Arc::from(name)),
        callsite: Arc::new(Callsite::new("test", "test", Arc::from(level))),
        created_us: at,
        flattened: false,
        key: None,
        keyed: false,
    }
}
fn new_node(name: &str) -> NewNode {
    node_at("block", name, 0)
}

fn limits(per_parent: usize, per_op: usize) -> Limits {
    Limits {
        max_finished_children: per_parent,
        max_finished_nodes: per_op,
        ..Limits::default()
    }
}

#[test]
fn folding_keeps_per_parent_bound_and_summary() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(3, 1_000));
    for i in 0..10u64 {
        let child = new_node("b");
        let key = tree.add_child(tree.root_key(root_id), child).unwrap();
        tree.start(key, 100 + i * 10);
        tree.close(key, done(105 + i * 10, 5_000), false);
    }
    let snap = tree.snapshot(root_id, false, 1_000);
    assert_eq!(snap.root.children.len(), 3);
    assert_eq!(
        snap.root.current, 10,
        "folded children still count as finished"
    );
    let folded = &snap.root.folded[0];
    assert_eq!(
        (folded.count, folded.completed, folded.min_us, folded.max_us),
        (7, 7, 5, 5)
    );
    assert_eq!(snap.metrics.nodes_folded, 7);
    assert_eq!(snap.metrics.nodes_retained, 4);
}

#[test]
fn failed_children_are_spared_while_others_can_go() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(2, 1_000));
    let bad = new_node("bad");
    let bad_id = bad.id;
    let bad_key = tree.add_child(tree.root_key(root_id), bad).unwrap();
    let err = ErrorInfo {
        message: Arc::from("boom"),
        origin: crate::model::ErrorOrigin::Event,
        node_id: bad_id,
        path: vec![],
        target: Arc::from("t"),
        location: None,
        fields: Metadata::default(),
        at_us: 1,
        propagated: false,
        recent_events: vec![],
    };
    tree.fail(bad_key, err);
    tree.close(bad_key, done(2, 0), false);
    for _ in 0..5 {
        let c = new_node("ok");
        let s = tree.add_child(tree.root_key(root_id), c).unwrap();
        tree.close(s, done(3, 0), false);
    }
    let snap = tree.snapshot(root_id, false, 10);
    assert!(snap.root.child("bad").is_some(), "failed child kept");
    assert_eq!(snap.root.children.len(), 2);
    assert_eq!(snap.root.failures_below.as_ref().unwrap().count, 1);
    assert_eq!(
        snap.root.failures_below.as_ref().unwrap().last.path.len(),
        2
    );
}

#[test]
fn operation_limit_folds_in_completion_order_and_queue_stays_bounded() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(usize::MAX, 5));
    for _ in 0..1_000 {
        let c = new_node("c");
        let s = tree.add_child(tree.root_key(root_id), c).unwrap();
        tree.close(s, done(1, 0), false);
    }
    assert!(tree.finished.len() <= 2 * 5 + 64);
    assert!(
        tree.nodes.len() <= 7,
        "slots are reused: {}",
        tree.nodes.len()
    );
    let snap = tree.snapshot(root_id, false, 10);
    assert_eq!(snap.root.children.len(), 5);
    assert_eq!(snap.root.current, 1_000);
}

const S: u64 = 1_000_000;

type Node = NodeKey;

/// One operation's tree, driven by hand with explicit timestamps.
struct Op {
    tree: Tree,
    root: Node,
}

impl Op {
    fn new(priors: &Arc<Priors>, limits: Limits, at: u64) -> Self {
        let root = node_at("op", "op", at);
        let id = root.id;
        let mut tree = Tree::new(root, Arc::from("op"), limits).with_priors(priors.clone());
        let root = tree.root_key(id);
        tree.start(root, at);
        Op { tree, root }
    }

    fn child(&mut self, parent: Node, level: &str, name: &str, at: u64) -> Node {
        let key = self
            .tree
            .add_child(parent, node_at(level, name, at))
            .unwrap();
        self.tree.start(key, at);
        key
    }

    fn counters(&mut self, n: Node, total: Option<u64>, current: Option<u64>) {
        self.tree.apply(
            n,
            NodeUpdate {
                total,
                current,
                ..NodeUpdate::default()
            },
        );
    }

    fn close(&mut self, n: Node, at: u64) -> bool {
        self.tree.close(n, done(at, 0), false).0
    }

    /// An estimate tick at `at`, then a snapshot.
    fn snap(&mut self, at: u64) -> ProgressState {
        self.tree.tick_estimates(at);
        self.tree.snapshot(self.root.id, false, at)
    }
}

/// Completed nodes of `level`/`name` lasting `secs`, recorded through a finished operation.
fn history(priors: &Arc<Priors>, level: &str, name: &str, secs: &[u64]) {
    let mut op = Op::new(priors, Limits::default(), 0);
    let root = op.root;
    for (i, d) in secs.iter().enumerate() {
        let start = i as u64 * 100 * S;
        let n = op.child(root, level, name, start);
        op.close(n, start + d * S);
    }
    assert!(op.close(root, 10_000 * S), "root closed");
}

#[test]
fn history_prior_before_the_first_unit_then_stall_past_p95() {
    let priors = Arc::new(Priors::default());
    history(&priors, "block", "encode", &[8, 9, 10, 11, 12]);
    let mut op = Op::new(&priors, Limits::default(), 20_000 * S);
    let root = op.root;
    let encode = op.child(root, "block", "encode", 20_000 * S);
    // A name never seen: the level type's durations.
    let decode = op.child(root, "block", "decode", 20_000 * S);
    // A level type never seen: nothing to say.
    let other = op.child(root, "song", "x", 20_000 * S);
    let snap = op.snap(20_003 * S);
    for id in [encode.id, decode.id] {
        let level = snap.find(id).unwrap();
        let e = level.estimate.as_ref().expect("history estimate");
        assert_eq!(e.basis, EstimateBasis::History);
        // Durations longer than the 3 s already run: 8..12 s, median 10 s: 7 s to go.
        assert_eq!(e.remaining_us, 7 * S, "{e:?}");
        assert!(e.low_us < e.remaining_us && e.remaining_us < e.high_us);
        assert!(!level.stalled);
    }
    let other = snap.find(other.id).unwrap();
    assert_eq!((other.estimate.as_ref(), other.stalled), (None, false));
    // Past every recorded duration: no estimate any more, and stalled (past the p95).
    let snap = op.snap(20_013 * S);
    let level = snap.find(encode.id).unwrap();
    assert_eq!(level.estimate, None);
    assert!(level.stalled);
    assert!(!snap.find(other.id).unwrap().stalled);
}

/// A node whose progress only counted up since its start has a rate from its second tick:
/// the start is its first observation (progress 0). One whose current was set (a resumed
/// job at 60 of 100) may not have begun at 0, so it waits for two rate samples of its own.
#[test]
fn a_rate_counts_from_the_start_unless_current_was_set() {
    let priors = Arc::new(Priors::default());
    let mut op = Op::new(&priors, Limits::default(), 0);
    let root = op.root;
    let counted = op.child(root, "job", "counted", 0);
    let resumed = op.child(root, "job", "resumed", 0);
    op.counters(counted, Some(100), None);
    op.counters(resumed, Some(100), Some(60));
    let inc = |op: &mut Op, n| {
        op.tree.apply(
            n,
            NodeUpdate {
                inc: 10,
                ..NodeUpdate::default()
            },
        );
    };
    inc(&mut op, counted);
    inc(&mut op, resumed);
    let snap = op.snap(S);
    assert_eq!(snap.find(counted.id).unwrap().estimate, None, "one sample");
    inc(&mut op, counted);
    inc(&mut op, resumed);
    let snap = op.snap(2 * S);
    let e = snap.find(counted.id).unwrap().estimate.clone();
    let e = e.expect("a rate from the start and one tick");
    assert_eq!(e.basis, EstimateBasis::Rate);
    // 10 units a second, 80 to go.
    assert!(e.remaining_us.abs_diff(8 * S) < S, "{e:?}");
    assert_eq!(snap.find(resumed.id).unwrap().estimate, None);
    inc(&mut op, resumed);
    let snap = op.snap(3 * S);
    let e = snap.find(resumed.id).unwrap().estimate.clone();
    assert_eq!(
        e.expect("two samples of its own").basis,
        EstimateBasis::Rate
    );
}

#[test]
fn parent_combines_running_children_and_unit_time() {
    let priors = Arc::new(Priors::default());
    history(&priors, "action", "a", &[10, 10, 10]);
    let mut op = Op::new(&priors, Limits::default(), 0);
    let root = op.root;
    let song = op.child(root, "song", "s1", 0);
    op.counters(song, Some(4), None);
    let a1 = op.child(song, "action", "a", 0);
    op.close(a1, 10 * S);
    let a2 = op.child(song, "action", "a", 10 * S);
    let snap = op.snap(14 * S);
    let child = snap.find(a2.id).unwrap().estimate.clone().unwrap();
    assert_eq!(
        (child.basis, child.remaining_us),
        (EstimateBasis::History, 6 * S)
    );
    // One done in 10 s (the unit), one running with 6 s to go, two not started:
    // 6 + 2 × 10 = 26 s for one worker.
    let e = snap.find(song.id).unwrap().estimate.clone().unwrap();
    assert_eq!(e.basis, EstimateBasis::Children, "{e:?}");
    assert!(e.remaining_us.abs_diff(26 * S) < 1_000, "{e:?}");
    assert!(
        e.low_us < e.remaining_us && e.remaining_us < e.high_us,
        "{e:?}"
    );
    // Two running at once (2 s and 6 s to go) and one not started: 18 s of work for two
    // workers, 9 s, longer than the longest running child.
    let a3 = op.child(song, "action", "a", 14 * S);
    let snap = op.snap(18 * S);
    let e = snap.find(song.id).unwrap().estimate.clone().unwrap();
    assert_eq!(e.basis, EstimateBasis::Children, "{e:?}");
    assert!(e.remaining_us.abs_diff(9 * S) < 1_000, "{e:?}");
    // Children finishing give the parent a rate of its own, which then takes over.
    op.close(a2, 20 * S);
    let a4 = op.child(song, "action", "a", 20 * S);
    op.snap(21 * S);
    op.close(a3, 24 * S);
    let snap = op.snap(25 * S);
    let e = snap.find(song.id).unwrap().estimate.clone().unwrap();
    assert_eq!(e.basis, EstimateBasis::Rate, "{e:?}");
    // State lives while nodes run: root, song and a4 hold it; closing drops it.
    assert_eq!(op.tree.estimator_state().0, 3);
    op.close(a4, 30 * S);
    op.close(song, 31 * S);
    op.snap(32 * S);
    assert_eq!(op.tree.estimator_state().0, 1, "only the root still runs");
    op.close(root, 33 * S);
    assert_eq!(op.tree.estimator_state(), (0, 0));
}

#[test]
fn priors_are_fed_by_closes_and_folds_and_stay_bounded() {
    let priors = Arc::new(Priors::default());
    let limits = Limits {
        max_finished_children: 10,
        max_finished_nodes: 100,
        ..Limits::default()
    };
    let mut op = Op::new(&priors, limits, 0);
    let root = op.root;
    for i in 0..10_000u64 {
        let n = op.child(root, "block", &format!("b{i}"), i * S);
        op.close(n, i * S + 1 + i % 7);
        assert!(
            op.tree.estimator_state().1 <= 256,
            "the close path buffers, bounded"
        );
    }
    assert!(
        priors.read().for_type("block").is_none(),
        "closes never lock the priors"
    );
    // The next tick adds them: the last 64 per kind, folded nodes included.
    let snap = op.snap(20_000 * S);
    assert_eq!(snap.metrics.nodes_folded, 9_990);
    assert_eq!(op.tree.estimator_state().1, 0);
    let p = priors.read();
    let durations = p.for_type("block").unwrap();
    assert_eq!(durations.len(), 64, "the last 64 per kind");
    assert!(durations.iter().all(|d| (1..=7).contains(d)));
}

/// The layer starts a node through its counters alone (no lock): the tree shows it running
/// with that start, and busy time set at close through the counters is the closed node's.
#[test]
fn a_node_started_through_its_counters_runs() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(10, 1_000));
    let key = tree
        .add_child(tree.root_key(root_id), new_node("b"))
        .unwrap();
    let live = tree.live(key).unwrap();
    let child = |tree: &Tree| tree.snapshot(root_id, false, 500).root.children[0].clone();
    assert_eq!(child(&tree).status, Status::Pending);
    assert!(live.start(200));
    assert!(!live.start(300), "the first start is kept");
    let running = child(&tree);
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.timing.started_at_us, Some(200));
    assert_eq!(running.timing.elapsed_us, 300);
    tree.close(key, done(400, 150_000), false);
    let closed = child(&tree);
    assert_eq!(closed.status, Status::Completed);
    assert_eq!(
        (closed.timing.elapsed_us, closed.timing.busy_us),
        (200, 150)
    );
    // A node never started and closed: still completed, timed from its creation.
    let key = tree
        .add_child(tree.root_key(root_id), new_node("c"))
        .unwrap();
    tree.close(key, done(450, 0), false);
    let never = tree.snapshot(root_id, false, 500).root.children[1].clone();
    assert_eq!(never.timing.started_at_us, None);
}

/// A snapshot refreshed in place step after step equals one built anew at every step, while
/// children come, change, fail, close and fold (from the middle of their parents' lists).
#[test]
fn refreshed_snapshot_equals_a_new_one() {
    let root = new_node("root");
    let root_id = root.id;
    // Two recent events per node: full rings change contents at the same length.
    let limits = Limits {
        recent_events: 2,
        ..limits(3, 40)
    };
    let mut tree = Tree::new(root, Arc::from("op"), limits);
    let mut kept = tree.snapshot(root_id, false, 0);
    let mut live = vec![tree.root_key(root_id)];
    // Deterministic: the same mix of changes on every run.
    let mut rng = crate::estimate::tests::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = move |n: usize| rng.below(n);
    let mut compared = 0;
    for step in 1..3_000u64 {
        let now = step * 10;
        let at = next(live.len());
        let key = live[at];
        match next(11) {
            0..=3 if live.len() < 200 => {
                let level = ["block", "item", "part"][next(3)];
                if let Some(k) = tree.add_child(key, node_at(level, &format!("n{step}"), now)) {
                    if next(2) == 0 {
                        tree.start(k, now);
                    }
                    live.push(k);
                }
            }
            4 => {
                let update = NodeUpdate {
                    inc: next(5) as u64,
                    total: (next(3) == 0).then_some(10),
                    message: (next(2) == 0).then(|| Arc::from(format!("m{}", next(3)))),
                    name: (next(8) == 0).then(|| Arc::from(format!("renamed{step}"))),
                    unit: (next(8) == 0).then(|| Arc::from("rows")),
                    metadata: if next(3) == 0 {
                        vec![(
                            Arc::from("k"),
                            crate::model::FieldValue::from(next(4) as u64),
                        )]
                    } else {
                        Vec::new()
                    },
                    ..NodeUpdate::default()
                };
                tree.apply(key, update);
            }
            5 if at > 0 => {
                let err = ErrorInfo {
                    message: Arc::from("boom"),
                    origin: crate::model::ErrorOrigin::Event,
                    node_id: key.id,
                    path: vec![],
                    target: Arc::from("t"),
                    location: None,
                    fields: Metadata::default(),
                    at_us: now,
                    propagated: false,
                    recent_events: vec![],
                };
                tree.fail(key, err);
            }
            9 => {
                let event = crate::model::RecentEvent {
                    at_us: now,
                    level: crate::model::EventLevel::Info,
                    target: Arc::from("t"),
                    message: Some(Arc::from(format!("line {step}"))),
                    fields: Metadata::default(),
                };
                tree.record_event(key, event);
            }
            6..=8 if at > 0 => {
                // Children close before their parents (a parent with live children stays).
                let parent_of = |k: NodeKey, tree: &Tree| tree.node(k).and_then(|n| n.parent);
                if !live.iter().any(|&c| parent_of(c, &tree) == Some(key.slot)) {
                    tree.close(key, done(now, (step % 7) * 1_000), false);
                    live.swap_remove(at);
                }
            }
            _ => {}
        }
        if step % 3 == 0 {
            tree.tick_estimates(now);
        }
        let fresh = tree.snapshot(root_id, false, now);
        tree.refresh(&mut kept, root_id, false, now);
        assert_eq!(kept, fresh, "step {step}");
        compared += fresh.root.walk().count();
    }
    assert!(
        tree.metrics.nodes_folded > 100,
        "children folded on the way"
    );
    assert!(compared > 100_000, "compared {compared} levels");
}

/// Many children folded from the front between two looks: the refresh still finds the
/// levels of the children left (by id once the lookahead misses) instead of building them
/// anew. A reused level keeps its children's buffer.
#[test]
fn a_refresh_after_many_front_children_folded_reuses_the_rest() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(3, 1_000));
    let root_key = tree.root_key(root_id);
    let mut kids = Vec::new();
    for i in 0..50u64 {
        let child = tree
            .add_child(root_key, node_at("song", &format!("s{i}"), i))
            .unwrap();
        tree.start(child, i);
        let grandchild = tree.add_child(child, node_at("block", "b", i)).unwrap();
        tree.start(grandchild, i);
        kids.push((child, grandchild));
    }
    let mut kept = tree.snapshot(root_id, false, 100);
    let buffers: Vec<_> = kept
        .root
        .children
        .iter()
        .map(|c| c.children.as_ptr())
        .collect();
    for &(child, grandchild) in &kids[..20] {
        tree.close(grandchild, done(200, 1_000), false);
        tree.close(child, done(200, 1_000), false);
    }
    tree.refresh(&mut kept, root_id, false, 300);
    assert_eq!(kept, tree.snapshot(root_id, false, 300));
    assert_eq!(kept.root.children.len(), 33, "3 finished kept, 30 live");
    let reused = kept.root.children[3..]
        .iter()
        .zip(&buffers[20..])
        .filter(|(level, before)| level.children.as_ptr() == **before)
        .count();
    assert_eq!(reused, 30, "every live child's level reused");
}

/// A snapshot's reader that lets `meddle` change the tree at every pause, as writers let in
/// by a chunked snapshot would (see `snapshot::TreeRead`).
struct Meddling<'t, F> {
    tree: &'t mut Tree,
    chunk: u32,
    now: u64,
    meddle: F,
}

impl<F: FnMut(&mut Tree, u64) -> bool> snapshot::TreeRead for Meddling<'_, F> {
    fn tree(&self) -> &Tree {
        self.tree
    }

    fn pause(&mut self) -> Option<u64> {
        self.now += 1;
        (self.meddle)(self.tree, self.now).then_some(self.now)
    }

    fn chunk(&self) -> u32 {
        self.chunk
    }
}

/// One random change of `tree`, the kind writers make: a child added (and maybe started), a
/// message or total set, a node failed, or a node closed once its children are. No units
/// are counted, so every node's `current` is its completed children, folded ones included.
fn random_change(
    tree: &mut Tree,
    live: &mut Vec<NodeKey>,
    next: &mut impl FnMut(usize) -> usize,
    now: u64,
) {
    let at = next(live.len());
    let key = live[at];
    match next(8) {
        0..=2 if live.len() < 300 => {
            let level = ["block", "item"][next(2)];
            if let Some(k) = tree.add_child(key, node_at(level, &format!("n{now}"), now)) {
                if next(2) == 0 {
                    tree.start(k, now);
                }
                live.push(k);
            }
        }
        3 => {
            let update = NodeUpdate {
                total: (next(3) == 0).then_some(10),
                message: Some(Arc::from(format!("m{}", next(3)))),
                ..NodeUpdate::default()
            };
            tree.apply(key, update);
        }
        4 if at > 0 => {
            let err = ErrorInfo {
                message: Arc::from("boom"),
                origin: crate::model::ErrorOrigin::Event,
                node_id: key.id,
                path: vec![],
                target: Arc::from("t"),
                location: None,
                fields: Metadata::default(),
                at_us: now,
                propagated: false,
                recent_events: vec![],
            };
            tree.fail(key, err);
        }
        5..=7 if at > 0 => {
            let parent_of = |k: NodeKey, tree: &Tree| tree.node(k).and_then(|n| n.parent);
            if !live.iter().any(|&c| parent_of(c, tree) == Some(key.slot)) {
                tree.close(key, done(now, 1_000), false);
                live.swap_remove(at);
            }
        }
        _ => {}
    }
}

/// What a snapshot walked across pauses must still be: every node once, and every level's
/// finished count equal to its completed children, retained and folded (as one hold shows).
fn assert_consistent(root: &ProgressLevel, context: &str) {
    let mut ids = std::collections::HashSet::new();
    for l in root.walk() {
        assert!(ids.insert(l.id), "{context}: node {} twice", l.id);
        let completed = l
            .children
            .iter()
            .filter(|c| c.status == Status::Completed)
            .count() as u64;
        let folded: u64 = l.folded.iter().map(|f| f.completed).sum();
        assert_eq!(
            l.current,
            completed + folded,
            "{context}: {} counts {} completed, its children show {completed} + {folded} folded",
            l.name,
            l.current
        );
    }
}

/// Snapshots that let writers in every few nodes, while those writers add, fail, close and
/// fold nodes: each is consistent, counts never go back from one to the next, and a later
/// refresh in one hold equals a snapshot built anew (nothing left behind by the pauses).
#[test]
fn snapshots_letting_writers_in_stay_consistent() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(4, 60));
    let mut live = vec![tree.root_key(root_id)];
    let mut rng = crate::estimate::tests::Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move |n: usize| rng.below(n);
    let mut kept = tree.snapshot(root_id, false, 0);
    let mut seen: std::collections::HashMap<NodeId, u64> = Default::default();
    let (mut pauses, mut meddled) = (0u64, 0u64);
    for step in 1..2_000u64 {
        let mut now = step * 1_000;
        random_change(&mut tree, &mut live, &mut next, now);
        if step % 2 == 0 {
            continue;
        }
        let chunk = 1 + next(4) as u32;
        let changes_per_pause = next(3);
        let mut read = Meddling {
            tree: &mut tree,
            chunk,
            now,
            meddle: |t: &mut Tree, at: u64| {
                pauses += 1;
                for _ in 0..changes_per_pause {
                    random_change(t, &mut live, &mut next, at);
                }
                meddled += changes_per_pause as u64;
                changes_per_pause > 0
            },
        };
        if step % 3 == 0 {
            kept = Tree::snapshot_from(&mut read, root_id, false, now);
        } else {
            Tree::refresh_from(&mut read, &mut kept, root_id, false, now);
        }
        now = read.now;
        let context = format!("step {step}, chunk {chunk}");
        assert_consistent(&kept.root, &context);
        for l in kept.root.walk() {
            let last = seen.entry(l.id).or_insert(0);
            assert!(l.current >= *last, "{context}: {} went back", l.name);
            *last = l.current;
        }
        // The next refresh in one hold catches up exactly.
        tree.refresh(&mut kept, root_id, false, now);
        assert_eq!(kept, tree.snapshot(root_id, false, now), "{context}");
    }
    assert!(pauses > 1_000, "{pauses} pauses");
    assert!(meddled > 1_000, "{meddled} changes in pauses");
    assert!(
        tree.metrics.nodes_folded > 100,
        "children folded on the way"
    );
}

/// Pausing without changes gives what one hold gives, whatever the chunk.
#[test]
fn chunked_snapshots_of_an_unchanged_tree_equal_one_hold() {
    let root = new_node("root");
    let root_id = root.id;
    let mut tree = Tree::new(root, Arc::from("op"), limits(4, 60));
    let mut live = vec![tree.root_key(root_id)];
    let mut rng = crate::estimate::tests::Rng::new(7);
    let mut next = move |n: usize| rng.below(n);
    for step in 1..600u64 {
        random_change(&mut tree, &mut live, &mut next, step * 100);
    }
    let now = 100_000;
    let one_hold = tree.snapshot(root_id, false, now);
    assert!(one_hold.root.walk().count() > 50);
    for chunk in [1, 2, 7, 64] {
        // `true`: every pause reports a change (so every node checks its children again).
        for report in [false, true] {
            let mut read = Meddling {
                tree: &mut tree,
                chunk,
                now,
                meddle: |_: &mut Tree, _: u64| report,
            };
            let mut chunked = Tree::snapshot_from(&mut read, root_id, false, now);
            if report {
                // The clock moved on in the pauses; compare at the same instant.
                let end = read.now;
                tree.refresh(&mut chunked, root_id, false, end);
                assert_eq!(chunked, tree.snapshot(root_id, false, end), "chunk {chunk}");
            } else {
                assert_eq!(chunked, one_hold, "chunk {chunk}");
            }
        }
    }
}

#[test]
fn a_node_stays_within_its_layout_budget() {
    // Part of the RSS per live node (tests/memory.rs measures the whole): a field added to
    // `Node` should be a deliberate choice, boxed if most nodes do without it.
    assert!(
        std::mem::size_of::<Node>() <= 136,
        "Node is {} bytes",
        std::mem::size_of::<Node>()
    );
}
