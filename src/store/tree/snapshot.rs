//! Snapshots: the model tree built from the arena, read-only.
//!
//! One walk does both kinds of snapshot: [`Tree::snapshot`] builds a new [`ProgressState`],
//! [`Tree::refresh`] brings an earlier snapshot of the same tree (one nobody else holds any
//! more) up to date in place. A refresh reuses each level whose node is still there: its
//! children's buffer, its strings when they are still the node's (no reference count
//! touched), its numbers overwritten; levels of new nodes are built, levels of nodes gone
//! are dropped. Both give the same result (tested): [`Tree::fill_level`] sets every field of
//! a level from its node, whatever the level held before. A watcher that takes a snapshot,
//! reads it and drops it (the terminal view, the HTTP stream, a polling loop) then costs the
//! walk and little more: no allocation, no page faults, nothing dropped. The operation keeps
//! its last snapshot for that (see `OperationCell::snapshot`).
//!
//! **Writers are let in while a big tree is walked.** The walk reads the tree through a
//! [`TreeRead`]; the operation's lock guard lets waiting writers have the tree every
//! [`CHUNK`] nodes (`MutexGuard::bump`), so a writer creating or closing a span waits for at
//! most one chunk, not a whole 100k-node snapshot. The walk holds no reference into the
//! tree across a pause, only (slot, id) keys it looks up again. What a pause may change is
//! put right before the node is filled: a node whose subtree was walked across a pause
//! checks its children against its node as it is then, under one hold (dropping the ones
//! folded away, walking the ones added, walking again the ones whose status or counts
//! moved). So each level agrees with its own children (a parent's finished count with its
//! finished and folded children, as a single hold would show), every level is read after
//! the previous snapshot's, and counts never go backwards. What a snapshot across pauses does
//! not give is one instant for the whole tree: a level deep in a subtree walked before a
//! pause may be older than its ancestors by the pauses since (microseconds), and
//! `metrics.nodes_retained` (read last) may differ from the levels present by the nodes
//! created or folded meanwhile.
//!
//! The walk recurses: the tree is at most `max_depth` (1 to 64) levels deep, plus planned
//! children one below; grafted subtrees (a child process's report) are built by their graft.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLockReadGuard;

use super::{NIL, Node, NodeKey, Progress, ROOT_SLOT, Tree};
use crate::estimate::PriorDurations;
use crate::model::{
    Metadata, NodeId, OperationMetrics, ProgressLevel, ProgressState, SCHEMA_VERSION, Status,
    Timing,
};

/// How far ahead among the old children a refresh looks for a node's earlier level before it
/// looks it up by id (see [`OldLevels`]).
const LOOKAHEAD: usize = 8;

/// A node's levels from an earlier snapshot not matched yet, in the order of its children
/// then. Children keep their order (new ones are appended, gone ones leave from anywhere),
/// so a child's old level is usually among the next few; when it is not (hundreds folded
/// away from the front since the last look, say), an index by id built once finds it, and
/// the levels before it, of children gone, are dropped. Without the index, a parent whose
/// first 9 children went between two looks had every other child's level built anew.
struct OldLevels {
    rest: std::vec::IntoIter<ProgressLevel>,
    /// Levels taken or dropped so far.
    passed: usize,
    /// Position of each level by id (counted from the first), once the lookahead missed.
    index: Option<HashMap<NodeId, usize>>,
}

impl OldLevels {
    fn new(levels: Vec<ProgressLevel>) -> Self {
        OldLevels {
            rest: levels.into_iter(),
            passed: 0,
            index: None,
        }
    }

    /// The old level of node `id`, if it had one still ahead; the levels before it go.
    fn take(&mut self, id: NodeId) -> Option<ProgressLevel> {
        let ahead = self.rest.as_slice();
        let at = match ahead.iter().take(LOOKAHEAD).position(|o| o.id == id) {
            Some(at) => at,
            None if ahead.len() <= LOOKAHEAD => return None,
            None => {
                let passed = self.passed;
                let index = self.index.get_or_insert_with(|| {
                    ahead
                        .iter()
                        .enumerate()
                        .map(|(k, o)| (o.id, passed + k))
                        .collect()
                });
                // Behind: the order changed (a retried node took an earlier one's place).
                index.get(&id)?.checked_sub(passed)?
            }
        };
        self.passed += at + 1;
        self.rest.nth(at)
    }
}

/// Drops from `children[from..]` the old levels of children no longer among the node's
/// children listed from slot `next` on, moving each level left at most once (`retain`):
/// children keep their order, so one pass over both finds them. A hint only: a level it
/// drops that is still wanted (the order changed) is built anew; one it keeps whose node
/// goes before the walk reaches it is dropped by the walk.
fn drop_gone(tree: &Tree, mut next: u32, children: &mut Vec<ProgressLevel>, from: usize) {
    let ahead = &children[from..];
    let mut keep = vec![false; ahead.len()];
    let mut at = 0;
    while next != NIL && at < ahead.len() {
        let Some(c) = tree.slot(next) else {
            break;
        };
        next = c.next;
        let rest = &ahead[at..];
        let found = rest
            .iter()
            .take(LOOKAHEAD)
            .position(|o| o.id == c.id)
            .or_else(|| {
                // Ids grow in the order children are added: a binary search, checked.
                let k = rest.partition_point(|o| o.id < c.id);
                rest.get(k).is_some_and(|o| o.id == c.id).then_some(k)
            });
        if let Some(k) = found {
            keep[at + k] = true;
            at += k + 1;
        }
    }
    let mut k = 0;
    children.retain(|_| {
        let kept = k < from || keep[k - from];
        k += 1;
        kept
    });
}

/// Nodes a snapshot fills before it lets waiting writers in (see [`TreeRead::pause`]): at
/// ~50 ns a node, a writer waits ~50 µs at most for a snapshot.
pub(crate) const CHUNK: u32 = 1_024;

/// How a snapshot reads its tree: through the operation's lock, which it gives up for a
/// moment every [`CHUNK`] nodes, or by plain reference (nothing else can change it).
pub(crate) trait TreeRead {
    /// The tree as it is now.
    fn tree(&self) -> &Tree;
    /// Lets waiting writers have the tree for a moment: `Some(now_us)` if one changed it (the
    /// snapshot then checks what it walked), `None` if nothing changed.
    fn pause(&mut self) -> Option<u64>;
    /// Nodes filled between two pauses.
    fn chunk(&self) -> u32 {
        CHUNK
    }
    /// The time now (µs since the Unix epoch), for the busy time of a span entered now: the
    /// walk's instant is older, and the span may have been entered since.
    fn now_us(&self) -> Option<u64> {
        None
    }
}

/// A tree read in one go: nothing changes it while it is walked.
impl TreeRead for &Tree {
    fn tree(&self) -> &Tree {
        self
    }

    fn pause(&mut self) -> Option<u64> {
        None
    }

    fn chunk(&self) -> u32 {
        u32::MAX
    }
}

/// One snapshot's walk over a tree (see the module docs).
struct Walk<'r, R: TreeRead> {
    read: &'r mut R,
    /// The priors, let go of while the walk pauses (a writer may be recording into them).
    durations: RwLockReadGuard<'r, PriorDurations>,
    now_us: u64,
    /// Updates of live nodes, added to the operation's count of folded ones.
    live_updates: u64,
    /// Nodes filled since the last pause.
    filled: u32,
    /// Pauses in which a writer changed the tree: a node walked across one checks its
    /// children again.
    changes: u64,
    /// Above 0 while a node checks its children: no pause until it is filled.
    pinned: u32,
}

impl<'r, R: TreeRead> Walk<'r, R> {
    fn tree(&self) -> &Tree {
        self.read.tree()
    }

    /// After a node's level was filled: lets writers in once a chunk is done.
    fn filled_one(&mut self) {
        self.filled += 1;
        if self.filled < self.read.chunk() || self.pinned > 0 {
            return;
        }
        self.filled = 0;
        let Walk {
            read, durations, ..
        } = self;
        if let Some(now) = RwLockReadGuard::unlocked(durations, || read.pause()) {
            self.changes += 1;
            self.now_us = self.now_us.max(now);
        }
    }

    /// Makes `level` (a blank one, or the node's level in an earlier snapshot) the level of
    /// the node at `key`, subtree included. False if the node is gone (folded while the walk
    /// paused): the caller drops the level.
    fn level(&mut self, key: NodeKey, level: &mut ProgressLevel) -> bool {
        let changes = self.changes;
        let Some(n) = self.read.tree().node(key) else {
            return false;
        };
        self.live_updates += n.live.updates();
        let mut next = n.children.first;
        let expected = n.children.len as usize;
        let children = &mut level.children;
        // Running children's fractions, rolled up into this node's percentage.
        let mut partial = 0.0;
        // In place while the old children line up with the node's; from the first that does
        // not, the rest of the old ones are matched by id and moved (or dropped).
        let mut i = 0;
        let mut rest: Option<OldLevels> = None;
        let mut compacted = false;
        // Children walked already, once the walk lost its place (see below).
        let mut walked: Option<HashSet<NodeId>> = None;
        while next != NIL {
            let Some(c) = self.tree().slot(next) else {
                break;
            };
            let ckey = NodeKey {
                slot: next,
                id: c.id,
            };
            if walked.as_ref().is_some_and(|w| w.contains(&c.id)) {
                next = c.next;
                continue;
            }
            let mut in_place = rest.is_none() && children.get(i).is_some_and(|o| o.id == c.id);
            if !in_place && !compacted && rest.is_none() && children.len() > i {
                // The first child out of line: drop the old levels of children gone, once,
                // so the rest line up again without each being moved one by one.
                compacted = true;
                drop_gone(self.read.tree(), next, children, i);
                in_place = children.get(i).is_some_and(|o| o.id == c.id);
            }
            if !in_place {
                let r = rest.get_or_insert_with(|| {
                    let r = OldLevels::new(children.split_off(i));
                    children.reserve(expected.saturating_sub(i));
                    r
                });
                let found = r.take(c.id);
                // Filled where it lies: a level is 424 bytes, moving it costs.
                children.push(found.unwrap_or_else(|| blank_of(c)));
            }
            if self.level(ckey, &mut children[i]) {
                let child = &children[i];
                if !child.status.is_finished() {
                    partial += child.percentage.map_or(0.0, |p| p / 100.0);
                }
                i += 1;
            } else {
                if rest.is_none() {
                    rest = Some(OldLevels::new(children.split_off(i + 1)));
                }
                children.truncate(i);
            }
            match self.tree().node(ckey) {
                Some(c) => next = c.next,
                None => {
                    // Folded while the walk paused: its `next` is gone. On from the first
                    // child, past the ones walked (rare; the check below puts them in order).
                    let Some(n) = self.read.tree().node(key) else {
                        return false;
                    };
                    walked = Some(children[..i].iter().map(|l| l.id).collect());
                    next = n.children.first;
                }
            }
        }
        drop(rest);
        // Old levels past the node's children: gone, or last snapshot's grafts.
        children.truncate(i);
        if self.changes != changes && !self.recheck(key, children, &mut partial) {
            return false;
        }
        let tree = self.read.tree();
        let Some(n) = tree.node(key) else {
            return false;
        };
        let grafts = n.cold.as_deref().map_or(&[][..], |c| &c.grafts[..]);
        children.extend(grafts.iter().map(|g| g.level(self.now_us)));
        let now_us = self.now_us;
        let busy_now = || self.read.now_us().unwrap_or(now_us).max(now_us);
        tree.fill_level(n, level, partial, now_us, busy_now);
        tree.shown_estimate(n, level, self.now_us, &self.durations);
        self.filled_one();
        true
    }

    /// Puts `children` (levels walked across a pause) right against the node at `key` as it
    /// is now, in one hold: levels of children folded away are dropped, added children are
    /// walked, and children whose status or counts moved are walked again. Sets `partial`
    /// from the result. False if the node itself is gone.
    fn recheck(
        &mut self,
        key: NodeKey,
        children: &mut Vec<ProgressLevel>,
        partial: &mut f64,
    ) -> bool {
        let Some(n) = self.read.tree().node(key) else {
            return false;
        };
        self.pinned += 1;
        let first = n.children.first;
        drop_gone(self.read.tree(), first, children, 0);
        let mut next = first;
        // In place while the levels line up (after `drop_gone`, nearly always); from the
        // first that does not, the rest are matched by id.
        let mut i = 0;
        let mut rest: Option<OldLevels> = None;
        *partial = 0.0;
        while next != NIL {
            let tree = self.read.tree();
            let Some(c) = tree.slot(next) else {
                break;
            };
            let ckey = NodeKey {
                slot: next,
                id: c.id,
            };
            next = c.next;
            if rest.is_none() && children.get(i).is_none_or(|o| o.id != c.id) {
                rest = Some(OldLevels::new(children.split_off(i)));
            }
            let had_one = match rest.as_mut() {
                None => true,
                Some(r) => {
                    let found = r.take(c.id);
                    let had_one = found.is_some();
                    children.push(found.unwrap_or_else(|| blank_of(c)));
                    had_one
                }
            };
            let child = &mut children[i];
            if !had_one {
                self.level(ckey, child);
            } else if !tree.shows(c, child) {
                // Its updates were counted when it was first walked.
                let counted = self.live_updates;
                self.level(ckey, child);
                self.live_updates = counted;
            }
            let child = &children[i];
            if !child.status.is_finished() {
                *partial += child.percentage.map_or(0.0, |p| p / 100.0);
            }
            i += 1;
        }
        children.truncate(i);
        self.pinned -= 1;
        true
    }
}

impl Tree {
    /// Builds the model tree at `now_us`. Read-only: estimates are the last tick's, counted
    /// down to `now_us`.
    #[cfg(test)]
    pub(crate) fn snapshot(
        &self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        Tree::snapshot_from(&mut &*self, id, cancel_requested, now_us)
    }

    /// [`snapshot`](Self::snapshot) through `read`, which may let writers in on the way.
    pub(crate) fn snapshot_from(
        read: &mut impl TreeRead,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        let tree = read.tree();
        let root = match tree.slot(ROOT_SLOT) {
            Some(n) => blank_of(n),
            None => tree.placeholder_root(id, now_us),
        };
        let mut state = ProgressState {
            schema_version: SCHEMA_VERSION,
            id,
            run: None,
            operation_type: tree.operation_type.clone(),
            name: root.name.clone(),
            status: root.status,
            with_failures: false,
            cancel_requested,
            started_at_us: None,
            completed_at_us: None,
            error: None,
            metrics: OperationMetrics::default(),
            snapshot_at_us: now_us,
            root,
        };
        Tree::refresh_from(read, &mut state, id, cancel_requested, now_us);
        state
    }

    /// Brings `state`, an earlier snapshot of this tree, to what [`snapshot`](Self::snapshot)
    /// would return at `now_us`, reusing what it can (see the module docs).
    #[cfg(test)]
    pub(crate) fn refresh(
        &self,
        state: &mut ProgressState,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) {
        Tree::refresh_from(&mut &*self, state, id, cancel_requested, now_us)
    }

    /// [`refresh`](Self::refresh) through `read`, which may let writers in on the way.
    pub(crate) fn refresh_from(
        read: &mut impl TreeRead,
        state: &mut ProgressState,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) {
        // Its own handle on the priors: the walk lets go of them (and of the tree) in pauses.
        let priors = read.tree().priors.clone();
        let mut walk = Walk {
            durations: priors.read(),
            read,
            now_us,
            live_updates: 0,
            filled: 0,
            changes: 0,
            pinned: 0,
        };
        let root = walk.tree().slot(ROOT_SLOT).map(|n| NodeKey {
            slot: ROOT_SLOT,
            id: n.id,
        });
        match root {
            Some(key) => {
                if state.root.id != key.id
                    && let Some(n) = walk.tree().slot(ROOT_SLOT)
                {
                    state.root = blank_of(n);
                }
                if !walk.level(key, &mut state.root) {
                    state.root = walk.tree().placeholder_root(id, walk.now_us);
                }
            }
            None => state.root = walk.tree().placeholder_root(id, now_us),
        }
        let (now_us, live_updates) = (walk.now_us, walk.live_updates);
        walk.tree()
            .fill_state(state, id, cancel_requested, now_us, live_updates);
    }

    /// Whether `level`, walked earlier, still shows `n`'s status and the counts its children
    /// make up (so it agrees with `n`'s parent and with its own children).
    fn shows(&self, n: &Node, level: &ProgressLevel) -> bool {
        let grafts = n.cold.as_deref().map_or(0, |c| c.grafts.len());
        level.status == n.status()
            && level.children.len() == n.children.len as usize + grafts
            && level.failed == n.failed_children()
            && (n.live.current().is_some() || level.current == n.finished_children)
            && level.folded.iter().map(|f| f.count).sum::<u64>()
                == n.cold
                    .as_deref()
                    .map_or(0, |c| c.folded.iter().map(|f| f.count).sum())
    }

    /// The operation's own fields, from its root level.
    fn fill_state(
        &self,
        s: &mut ProgressState,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
        live_updates: u64,
    ) {
        let root = &s.root;
        s.schema_version = SCHEMA_VERSION;
        s.id = id;
        s.run = None;
        set_arc(&mut s.operation_type, &self.operation_type);
        set_arc(&mut s.name, &root.name);
        s.status = root.status;
        s.with_failures = root.with_failures;
        s.cancel_requested = cancel_requested;
        s.started_at_us = root.timing.started_at_us;
        s.completed_at_us = root.timing.completed_at_us;
        s.error = root
            .error
            .as_deref()
            .cloned()
            .or_else(|| root.failures_below.as_ref().map(|f| f.first.clone()));
        s.metrics = OperationMetrics {
            updates: self.metrics.updates + live_updates,
            ..self.metrics.clone()
        };
        s.snapshot_at_us = now_us;
    }

    /// `n`'s own level at `now_us`, without children or estimate (a node as it closes).
    pub(super) fn lone_level(&self, n: &Node, now_us: u64) -> ProgressLevel {
        let mut level = blank_of(n);
        self.fill_level(n, &mut level, 0.0, now_us, || now_us);
        level
    }

    /// Sets every field of `level` but its children from `n` at `now_us` (`partial`: the
    /// running children's fractions). Whatever `level` held before, the result is the same;
    /// strings and lists already equal to the node's are left alone, so refreshing an
    /// unchanged level allocates nothing and touches no reference count.
    pub(super) fn fill_level(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        partial: f64,
        now_us: u64,
        busy_now_us: impl FnOnce() -> u64,
    ) {
        let Progress {
            current: units,
            total: expected,
            percentage: percent,
        } = n.progress(partial);
        let start = n.started().unwrap_or(n.created_us);
        let end = n.completed().unwrap_or(now_us).max(start);
        let alive = end.saturating_sub(n.created_us);
        let busy = if n.completed_us != 0 {
            n.live.busy_ns() / 1_000
        } else {
            // Still open: what it has been entered so far, plus the current stretch (to a
            // time read after the counter: the span may have been entered since `now_us`).
            n.live.busy_us_with(busy_now_us)
        };
        let cold = n.cold.as_deref();
        let plan = cold.map(|c| c.plan_view()).unwrap_or_default();
        // Every field by name (no `..`): a field added to the model must be filled here.
        let ProgressLevel {
            id,
            level_type,
            name,
            span_name,
            target,
            status,
            current,
            failed,
            total,
            percentage,
            unit,
            message,
            timing,
            error,
            failures_below,
            with_failures,
            cancel_reason,
            handled_errors,
            metadata,
            input_errors,
            recent_events,
            flattened,
            children: _,
            folded,
            estimate,
            stalled,
            resources,
            planned,
            key,
            skipped,
            planned_hidden,
            attempts,
        } = level;
        *id = n.id;
        set_arc(level_type, n.level_type());
        set_arc(name, n.name());
        set_arc(span_name, &n.callsite.span_name);
        set_arc(target, &n.callsite.target);
        *status = n.status();
        *current = units;
        *failed = cold.map_or(0, |c| c.failed_children);
        *total = expected;
        *percentage = percent;
        set_opt_arc(unit, cold.and_then(|c| c.unit.as_ref()));
        set_opt_arc(message, n.message());
        *timing = Timing {
            created_at_us: n.created_us,
            started_at_us: n.started(),
            completed_at_us: n.completed(),
            elapsed_us: end - start,
            busy_us: busy,
            idle_us: alive.saturating_sub(busy),
        };
        *with_failures =
            n.status == Status::Completed && cold.is_some_and(|c| c.failures_below.is_some());
        *flattened = cold.is_some_and(|c| c.flattened);
        match n.metadata.as_deref() {
            Some(m) => set_eq(metadata, m),
            None if metadata.is_empty() => {}
            None => *metadata = Metadata::default(),
        }
        // A node that is not running shows neither (`shown_estimate` sets them for the others).
        if *status != Status::Running {
            clear(estimate);
            *stalled = false;
        }
        *planned = plan.planned;
        *key = plan.key;
        *skipped = plan.skipped;
        *planned_hidden = plan.hidden;
        let Some(c) = cold else {
            // Most nodes: nothing rare to copy, and a reused level has nothing to clear.
            clear(error);
            clear(failures_below);
            *cancel_reason = None;
            clear(handled_errors);
            clear_vec(input_errors);
            clear_vec(recent_events);
            clear_vec(folded);
            clear(resources);
            clear(attempts);
            return;
        };
        // Compared first: a failed node's error, say, is not copied again every snapshot.
        set_boxed(error, c.error.as_ref());
        set_boxed(failures_below, c.failures_below.as_ref());
        *cancel_reason = c.cancel_reason;
        set_boxed(handled_errors, c.handled.as_ref());
        set_eq(input_errors, &c.input_errors);
        c.recent.refresh_into(recent_events);
        set_eq(folded, &c.folded);
        set_boxed(resources, c.resources.as_ref().map(|r| r.usage()).as_ref());
        set_eq(attempts, &c.attempts);
    }

    /// Only reachable if the root slot were lost; keeps snapshots total instead of panicking.
    fn placeholder_root(&self, id: NodeId, now_us: u64) -> ProgressLevel {
        let empty: Arc<str> = Arc::from("");
        ProgressLevel {
            timing: Timing {
                created_at_us: now_us,
                ..Timing::default()
            },
            ..ProgressLevel::blank(
                id,
                self.operation_type.clone(),
                empty.clone(),
                empty.clone(),
                empty,
                Status::Completed,
            )
        }
    }

    /// The estimate and stall flag of a running node as of `now_us`, from the state the last
    /// tick left (see `tree::estimates`); other nodes were cleared by `fill_level`.
    fn shown_estimate(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        now_us: u64,
        priors: &PriorDurations,
    ) {
        if level.status != Status::Running {
            return;
        }
        let Some(state) = n.est.as_deref() else {
            clear(&mut level.estimate);
            level.stalled = false;
            return;
        };
        let history = priors.lookup(n.level_type(), n.name());
        // Compared first: an estimate unchanged since the last tick is not boxed again.
        set_boxed(&mut level.estimate, state.shown_at(now_us).as_ref());
        // Updates since the last tick are progress the tick has not seen yet: not stalled.
        let events = n.live.updates() + n.finished_children;
        level.stalled = !state.updated_since_tick(events)
            && state.stalled(
                now_us,
                self.limits.stall_factor,
                history,
                level.timing.elapsed_us,
            );
    }
}

/// A level holding `n`'s strings, so filling it touches no reference count again.
fn blank_of(n: &Node) -> ProgressLevel {
    ProgressLevel::blank(
        n.id,
        n.level_type().clone(),
        n.name().clone(),
        n.callsite.span_name.clone(),
        n.callsite.target.clone(),
        n.status(),
    )
}

/// A boxed copy of `src` in `dst`: nothing done when equal already, and an existing box is
/// written over (no allocation either way).
#[inline]
fn set_boxed<T: Clone + PartialEq>(dst: &mut Option<Box<T>>, src: Option<&T>) {
    match (dst.as_deref_mut(), src) {
        (Some(d), Some(s)) => {
            if d != s {
                d.clone_from(s);
            }
        }
        (None, None) => {}
        _ => *dst = src.cloned().map(Box::new),
    }
}

/// `*dst = src.clone()`, unless it already is `src` (no reference count touched).
#[inline]
fn set_arc(dst: &mut Arc<str>, src: &Arc<str>) {
    if !Arc::ptr_eq(dst, src) {
        *dst = src.clone();
    }
}

#[inline]
fn set_opt_arc(dst: &mut Option<Arc<str>>, src: Option<&Arc<str>>) {
    match (dst.as_ref(), src) {
        (Some(d), Some(s)) if Arc::ptr_eq(d, s) => {}
        (None, None) => {}
        _ => *dst = src.cloned(),
    }
}

/// `*dst = src.clone()`, unless equal already (comparing costs less than allocating).
#[inline]
fn set_eq<T: Clone + PartialEq>(dst: &mut T, src: &T) {
    if dst != src {
        dst.clone_from(src);
    }
}

#[inline]
fn clear<T>(dst: &mut Option<T>) {
    if dst.is_some() {
        *dst = None;
    }
}

#[inline]
fn clear_vec<T>(dst: &mut Vec<T>) {
    if !dst.is_empty() {
        *dst = Vec::new();
    }
}
