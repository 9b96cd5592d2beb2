//! Planned children: slots a node declares before the spans that fill them start.
//!
//! A plan ([`ProgressSpanExt::plan`](crate::ProgressSpanExt::plan) or the `progress.planned`
//! field) adds one pending node per entry at the end of the parent's children, so every view
//! shows them with their position from the start. They are real arena nodes (flag `planned`
//! in their `Cold`), so a slot keeps its place in the children list and its id:
//!
//! * **Claim.** A tracked child created under the parent takes the first waiting slot whose
//!   key equals the child's `progress.key`, else the first whose name equals the child's
//!   name. It gets the child's name, level type and callsite and keeps the slot's id and
//!   position. A child that matches no slot is added at the end as usual. Slots are indexed
//!   by key and by name (queues in plan order), so a claim costs the same in any order.
//! * **Total.** With no total of its own (`progress.total`, `set_total`), the parent's total
//!   is its children before the plan, plus the entries declared, plus children that matched
//!   no slot beyond the entries past the cap. A total the parent sets wins (it may count
//!   bytes, or items the children do not stand for).
//! * **End.** When the parent closes, waiting slots end `Cancelled` with
//!   [`CancelReason::Skipped`], or with the parent's reason when the parent was cancelled.
//!   They count in the parent's `skipped`, not as failures, then fold like any finished child.
//! * **Bounds.** At most `Limits::max_planned_children` slots per parent and
//!   `Limits::max_finished_nodes` waiting slots per operation; entries past either are
//!   counted (the parent's `planned_hidden`, the operation's `planned_dropped`, one input
//!   error per cut plan) and still count towards the total, but hold no memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{Cold, Tree};
use crate::model::{CancelReason, NodeId, Status};
use crate::store::node::{Callsite, NewNode, NodeKey};

/// Level type of slots whose plan gave none, until a child of the parent shows the real one.
const UNKNOWN_LEVEL: &str = "planned";

/// A plan as the layer hands it over (boxed inside a `NodeUpdate`).
#[derive(Debug, Default)]
pub(crate) struct PlanUpdate {
    /// `(key, name)` per entry, at most the cap (the layer stops copying there).
    pub(crate) entries: Vec<(Option<Arc<str>>, Arc<str>)>,
    /// Entries past what `entries` holds: counted only.
    pub(crate) more: u64,
    /// Level type of the planned children, if the plan names one.
    pub(crate) level: Option<Arc<str>>,
    /// When the plan was made (µs since the Unix epoch); 0: the parent's creation time.
    pub(crate) at_us: u64,
}

/// A waiting slot: its arena index and its node's id (an index alone could be a later
/// node's once the slot's node was claimed, finished and folded).
type SlotRef = (u32, NodeId);

/// A parent's plan: its waiting slots and the counts its total and views use.
#[derive(Default)]
pub(super) struct Plan {
    /// Slots in plan order, waiting or claimed since (claimed ones are skipped, and dropped
    /// when they are half of the list).
    slots: Vec<SlotRef>,
    /// Slots no span took yet.
    waiting: usize,
    /// Slots by plan key, then by name, each in plan order; entries of claimed slots are
    /// skipped when met.
    by_key: HashMap<Arc<str>, VecDeque<SlotRef>>,
    by_name: HashMap<Arc<str>, VecDeque<SlotRef>>,
    /// Entries declared, kept or not.
    declared: u64,
    /// Entries past a cap (never nodes).
    hidden: u64,
    /// Children the parent had when it first planned.
    before: u64,
    /// Children created after the plan that took no slot.
    unmatched: u64,
    /// Slots that ended without a span.
    skipped: u64,
    /// The planned children's level type, once known.
    level: Option<Arc<str>>,
}

/// What snapshots show of a node's planning, as a parent and as a slot.
#[derive(Default)]
pub(super) struct PlanView {
    pub(super) planned: bool,
    pub(super) key: Option<Arc<str>>,
    pub(super) skipped: u64,
    pub(super) hidden: u64,
}

impl Plan {
    /// The parent's total from its plan.
    fn total(&self) -> u64 {
        self.before
            .saturating_add(self.declared)
            .saturating_add(self.unmatched.saturating_sub(self.hidden))
    }
}

impl Cold {
    pub(super) fn plan_total(&self) -> Option<u64> {
        self.plan.as_deref().map(Plan::total)
    }

    /// Planned slots no span took yet (children that are no sign of work done).
    pub(super) fn waiting(&self) -> usize {
        self.plan.as_deref().map_or(0, |p| p.waiting)
    }

    pub(super) fn plan_view(&self) -> PlanView {
        let plan = self.plan.as_deref();
        PlanView {
            planned: self.planned,
            key: self.key.clone(),
            skipped: plan.map_or(0, |p| p.skipped),
            hidden: plan.map_or(0, |p| p.hidden.saturating_sub(p.unmatched)),
        }
    }
}

impl Tree {
    /// Adds the plan's entries as waiting slots under `parent`; `false` if it is gone or
    /// finished (the plan is dropped).
    pub(super) fn plan(&mut self, parent: NodeKey, update: PlanUpdate) -> bool {
        let per_parent = self.limits.max_planned_children;
        let per_operation = self.limits.max_finished_nodes;
        let room_op = per_operation.saturating_sub(self.planned_waiting);
        let Some(p) = self.node_mut(parent) else {
            return false;
        };
        if p.status.is_finished() {
            return false;
        }
        let target = p.callsite.target.clone();
        let at_us = if update.at_us == 0 {
            p.created_us
        } else {
            update.at_us
        };
        let children_now = p.children.len as u64;
        let cold = p.cold();
        let folded: u64 = cold.folded.iter().map(|f| f.count).sum();
        let plan = cold.plan.get_or_insert_with(|| {
            Box::new(Plan {
                before: children_now + folded,
                ..Plan::default()
            })
        });
        if update.level.is_some() {
            plan.level = update.level;
        }
        let level = plan.level.clone();
        let room = per_parent.saturating_sub(plan.waiting).min(room_op);
        let declared = update.entries.len() as u64 + update.more;
        let kept = update.entries.len().min(room);
        let cut = declared - kept as u64;
        plan.declared = plan.declared.saturating_add(declared);
        plan.hidden = plan.hidden.saturating_add(cut);
        // A plan that names no level takes the type of a child already there, if any.
        let level = level
            .or_else(|| {
                self.node(parent)
                    .and_then(|p| self.slot(p.children.first))
                    .map(|c| c.level_type().clone())
            })
            .unwrap_or_else(|| Arc::from(UNKNOWN_LEVEL));
        let callsite = Arc::new(Callsite {
            span_name: Arc::from(""),
            target,
            level_type: level,
        });
        let mut slots = Vec::with_capacity(kept);
        for (key, name) in update.entries.into_iter().take(kept) {
            let id = NodeId::next();
            let new = NewNode {
                id,
                name: Some(name.clone()),
                callsite: callsite.clone(),
                created_us: at_us,
                flattened: false,
                key: None,
                keyed: false,
            };
            let slot = self.insert(new, Some(parent.slot));
            // Not a span: counted in `nodes_seen` when one takes the slot.
            self.metrics.nodes_seen = self.metrics.nodes_seen.saturating_sub(1);
            if let Some(n) = self.slot_mut(slot) {
                let cold = n.cold();
                cold.planned = true;
                cold.key = key.clone();
            }
            self.link_child(parent.slot, slot);
            slots.push(((slot, id), key, name));
        }
        self.planned_waiting += slots.len();
        self.metrics.planned_dropped += cut;
        let Some(p) = self.node_mut(parent) else {
            return true;
        };
        let cold = p.cold();
        if let Some(plan) = cold.plan.as_deref_mut() {
            plan.waiting += slots.len();
            for (slot, key, name) in slots {
                plan.slots.push(slot);
                if let Some(key) = key {
                    plan.by_key.entry(key).or_default().push_back(slot);
                }
                plan.by_name.entry(name).or_default().push_back(slot);
            }
        }
        if cut > 0 {
            let msg = format!(
                "plan of {declared} children: {} kept as pending nodes, {cut} counted only \
                 (at most {per_parent} per parent, {per_operation} per operation)",
                kept
            );
            super::push_input_error(cold, Arc::from(msg));
            self.metrics.input_errors += 1;
        }
        true
    }

    /// Gives `new` the waiting slot of `parent` it matches (by key, else by name), or hands
    /// it back. A child attached here past the depth limit takes no slot.
    pub(super) fn claim(&mut self, parent: u32, new: NewNode) -> Result<NodeKey, NewNode> {
        if new.flattened {
            return Err(new);
        }
        let Some(plan) = self.plan_of(parent) else {
            return Err(new);
        };
        let is_waiting = |s: &SlotRef| self.is_waiting(*s);
        // The first waiting slot with the child's key, else with its display name (its
        // recorded name, else its span's).
        let first = |queue: Option<&VecDeque<SlotRef>>| {
            queue.and_then(|q| q.iter().position(is_waiting).map(|at| (q[at], at)))
        };
        let name = new.name.as_ref().unwrap_or(&new.callsite.span_name).clone();
        let by_key = new.key.as_ref().and_then(|k| first(plan.by_key.get(k)));
        let found = match by_key {
            Some(hit) => Some((hit, true)),
            None => first(plan.by_name.get(&name)).map(|hit| (hit, false)),
        };
        let level = new.callsite.level_type.clone();
        let Some((((slot, _), skip), keyed)) = found else {
            self.unmatched_child(parent, level);
            return Err(new);
        };
        let Some(plan) = self.plan_mut(parent) else {
            return Err(new);
        };
        let learned = plan.level.is_none();
        plan.level.get_or_insert_with(|| level.clone());
        // Entries met before the hit were claimed slots: gone for good.
        let index = if keyed {
            new.key.as_ref().and_then(|k| plan.by_key.get_mut(k))
        } else {
            plan.by_name.get_mut(&name)
        };
        if let Some(q) = index {
            q.drain(..=skip);
        }
        plan.waiting = plan.waiting.saturating_sub(1);
        let compact = plan.slots.len() > 64 && plan.slots.len() > 2 * plan.waiting;
        self.planned_waiting = self.planned_waiting.saturating_sub(1);
        self.metrics.nodes_seen += 1;
        let Some(n) = self.slot_mut(slot) else {
            return Err(new);
        };
        n.set_name(new.name);
        n.callsite = new.callsite;
        n.created_us = new.created_us;
        let cold = n.cold();
        cold.planned = false;
        if new.key.is_some() {
            cold.key = new.key;
        }
        let key = NodeKey { slot, id: n.id };
        if learned {
            self.adopt_level(parent, level);
        }
        if compact {
            self.compact_plan(parent);
        }
        Ok(key)
    }

    /// The plan of the node at `parent`, if it made one.
    /// Whether `parent` declared children before they start.
    pub(super) fn has_plan(&self, parent: u32) -> bool {
        self.plan_of(parent).is_some()
    }

    fn plan_of(&self, parent: u32) -> Option<&Plan> {
        self.slot(parent)?.cold.as_deref()?.plan.as_deref()
    }

    /// [`Self::plan_of`], to change it.
    fn plan_mut(&mut self, parent: u32) -> Option<&mut Plan> {
        self.slot_mut(parent)?
            .cold
            .as_deref_mut()?
            .plan
            .as_deref_mut()
    }

    /// Whether `slot` still waits for a span.
    fn is_waiting(&self, (slot, id): SlotRef) -> bool {
        self.slot(slot)
            .is_some_and(|n| n.id == id && n.cold.as_deref().is_some_and(|c| c.planned))
    }

    /// Drops the claimed slots from `parent`'s plan order and indexes, so they hold no memory
    /// past twice the waiting ones.
    fn compact_plan(&mut self, parent: u32) {
        let Some(mut plan) = self
            .slot_mut(parent)
            .and_then(|p| p.cold.as_deref_mut())
            .and_then(|c| c.plan.take())
        else {
            return;
        };
        plan.slots.retain(|&s| self.is_waiting(s));
        for index in [&mut plan.by_key, &mut plan.by_name] {
            index.retain(|_, q| {
                q.retain(|&s| self.is_waiting(s));
                !q.is_empty()
            });
        }
        if let Some(cold) = self.slot_mut(parent).and_then(|p| p.cold.as_deref_mut()) {
            cold.plan = Some(plan);
        }
    }

    /// A child of a planning parent that took no slot: counted for the total.
    fn unmatched_child(&mut self, parent: u32, level: Arc<str>) {
        let mut learned = false;
        if let Some(plan) = self.plan_mut(parent) {
            plan.unmatched += 1;
            learned = plan.level.is_none();
            plan.level.get_or_insert(level.clone());
        }
        if learned {
            self.adopt_level(parent, level);
        }
    }

    /// A child of `parent` became a later attempt of a sibling (see `attempts`): a retry that
    /// took no slot is no extra child for the plan's total.
    pub(super) fn plan_child_retried(&mut self, parent: u32) {
        if let Some(plan) = self.plan_mut(parent) {
            plan.unmatched = plan.unmatched.saturating_sub(1);
        }
    }

    /// Waiting slots whose plan named no level take the first child's type (once per plan:
    /// it walks every waiting slot).
    fn adopt_level(&mut self, parent: u32, level: Arc<str>) {
        let slots: Vec<SlotRef> = match self.plan_of(parent) {
            Some(plan) => plan.slots.clone(),
            None => return,
        };
        // The plan's slots share one callsite; they share the adopted one too.
        let mut adopted: Option<Arc<Callsite>> = None;
        for slot in slots {
            if !self.is_waiting(slot) {
                continue;
            }
            if let Some(n) = self.slot_mut(slot.0)
                && &**n.level_type() == UNKNOWN_LEVEL
            {
                let at_level = adopted
                    .get_or_insert_with(|| Arc::new(n.callsite.at_level(level.clone())))
                    .clone();
                n.callsite = at_level;
            }
        }
    }

    /// The parent at `parent` ends: its waiting slots end skipped (cancelled with the
    /// parent's reason when `status` is cancelled) and are queued for folding.
    pub(super) fn end_plan(
        &mut self,
        parent: u32,
        status: Status,
        reason: Option<CancelReason>,
        at_us: u64,
    ) {
        let Some(slots) = self.plan_mut(parent).map(|plan| {
            plan.waiting = 0;
            plan.by_key = HashMap::new();
            plan.by_name = HashMap::new();
            std::mem::take(&mut plan.slots)
        }) else {
            return;
        };
        let waiting: Vec<u32> = slots
            .into_iter()
            .filter(|&s| self.is_waiting(s))
            .map(|(s, _)| s)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let reason = match (status, reason) {
            (Status::Cancelled, Some(r)) => r,
            (Status::Cancelled, None) => CancelReason::Requested,
            _ => CancelReason::Skipped,
        };
        self.planned_waiting = self.planned_waiting.saturating_sub(waiting.len());
        for slot in waiting {
            let Some(n) = self.slot_mut(slot) else {
                continue;
            };
            n.status = Status::Cancelled;
            n.completed_us = at_us.max(n.created_us).max(1);
            n.live.close();
            let key = NodeKey { slot, id: n.id };
            let cold = n.cold();
            cold.planned = false;
            cold.cancel_reason = Some(reason);
            self.retain_finished(parent, key, false, |p| {
                if let Some(plan) = p.cold().plan.as_deref_mut() {
                    plan.skipped += 1;
                }
            });
        }
        self.enforce_operation_limit();
    }
}
