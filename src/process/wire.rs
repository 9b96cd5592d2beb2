//! The line protocol between a child process and its parent (version 1, `docs/subprocess.md`):
//! the messages, and the conversions between a reported node and the model.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    CancelReason, ErrorInfo, ErrorOrigin, Estimate, EstimateBasis, FieldValue, Metadata, NodeId,
    ProgressLevel, Status, Timing,
};

/// Version of the line protocol.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side reads (bytes, newline excluded); longer ones are skipped whole and
/// counted as garbage.
pub const MAX_LINE_BYTES: usize = 512 * 1024;

/// Most nodes of one report; the parent drops the rest (depth first) and counts them.
pub const MAX_REPORT_NODES: usize = 1_000;

/// Deepest nesting of a report kept by the parent; deeper nodes are dropped. Less when the
/// spawning node is deep: the whole tree stays within 56 levels, which JSON readers (serde_json
/// among them) accept.
pub const MAX_REPORT_DEPTH: usize = 32;

/// One message, either direction. Unknown fields are ignored (later minor versions may add
/// some); an unknown `type` is ignored and counted.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) v: u32,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `hello`: the token from `TRACING_PROGRESS_GRAFT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) graft: Option<String>,
    /// `hello`: the child's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// `report`: the child's operations, replacing what the previous report said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nodes: Option<Vec<WireNode>>,
    /// `error` (parent to child): why the connection is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// One reported node. Only `name` is required.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WireNode {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) level: Option<String>,
    /// `pending`, `running` (the default), `completed`, `failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// The node's own failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Seconds left, and optional bounds and rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) eta_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) eta_low_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) eta_high_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) started_at_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) completed_at_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub(crate) metadata: Metadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<WireNode>,
}

fn secs_to_us(s: f64) -> Option<u64> {
    (s.is_finite() && s >= 0.0).then(|| (s * 1e6).min(u64::MAX as f64) as u64)
}

/// Child side: a node of the child's own store as it goes on the wire. `budget` is the number
/// of nodes still allowed in this report.
pub(crate) fn to_wire(level: &ProgressLevel, budget: &mut usize) -> WireNode {
    *budget = budget.saturating_sub(1);
    let mut children = Vec::new();
    for c in &level.children {
        if *budget == 0 {
            break;
        }
        children.push(to_wire(c, budget));
    }
    let est = level.estimate();
    WireNode {
        name: level.name.to_string(),
        level: Some(level.level_type.to_string()),
        status: Some(level.status.as_str().to_string()),
        current: Some(level.current),
        total: level.total,
        percentage: level.percentage,
        unit: level.unit.as_deref().map(str::to_string),
        message: level.message.as_deref().map(str::to_string),
        error: level.error().map(|e| e.message.to_string()),
        eta_s: est.map(|e| e.remaining_us as f64 / 1e6),
        eta_low_s: est.map(|e| e.low_us as f64 / 1e6),
        eta_high_s: est.map(|e| e.high_us as f64 / 1e6),
        rate_per_s: est.and_then(|e| e.rate_per_s),
        started_at_us: level.timing.started_at_us,
        completed_at_us: level.timing.completed_at_us,
        metadata: level.metadata.clone(),
        children,
    }
}

/// Parent side: what conversion needs and keeps between reports.
pub(crate) struct Converter<'a> {
    /// Ids by position (`0/2/1`), kept across reports so a node keeps its id.
    pub(crate) ids: &'a mut HashMap<String, NodeId>,
    pub(crate) seen: HashMap<String, NodeId>,
    pub(crate) max_text: usize,
    pub(crate) max_metadata: usize,
    /// Nodes still allowed in this report.
    pub(crate) budget: usize,
    /// Levels allowed below the subprocess node.
    pub(crate) max_depth: usize,
    /// Nodes dropped (budget, depth).
    pub(crate) dropped: u64,
    pub(crate) target: Arc<str>,
    pub(crate) span_name: Arc<str>,
    /// Failures found, in tree order.
    pub(crate) errors: Vec<ErrorInfo>,
}

fn clip(s: &str, max: usize) -> Arc<str> {
    if s.len() <= max {
        return Arc::from(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&s[..end])
}

impl Converter<'_> {
    /// One reported node and its children, under `path` (names from the parent's root).
    pub(crate) fn level(
        &mut self,
        node: WireNode,
        pos: String,
        path: &mut Vec<Arc<str>>,
        depth: usize,
        now_us: u64,
    ) -> ProgressLevel {
        self.budget = self.budget.saturating_sub(1);
        let id = self.ids.get(&pos).copied().unwrap_or_else(NodeId::next);
        self.seen.insert(pos.clone(), id);
        let mut input_errors = Vec::new();
        let status = match node.status.as_deref() {
            None => Status::Running,
            Some(s) => s.parse().unwrap_or_else(|_| {
                input_errors.push(clip(&format!("unknown status {s:?}"), self.max_text));
                Status::Running
            }),
        };
        let name = clip(&node.name, self.max_text);
        path.push(name.clone());
        let started = node.started_at_us;
        let completed = node.completed_at_us.filter(|_| status.is_finished());
        let start = started.unwrap_or(now_us);
        let end = completed.unwrap_or(now_us).max(start);
        let error = node.error.as_deref().map(|m| ErrorInfo {
            message: clip(m, self.max_text),
            origin: ErrorOrigin::Explicit,
            node_id: id,
            path: path.clone(),
            target: self.target.clone(),
            location: None,
            fields: Metadata::default(),
            at_us: completed.unwrap_or(now_us),
            propagated: false,
            recent_events: Vec::new(),
        });
        if let Some(e) = &error {
            self.errors.push(e.clone());
        }
        let estimate = node.eta_s.and_then(secs_to_us).map(|remaining_us| {
            Box::new(Estimate {
                remaining_us,
                low_us: node.eta_low_s.and_then(secs_to_us).unwrap_or(remaining_us),
                high_us: node.eta_high_s.and_then(secs_to_us).unwrap_or(remaining_us),
                rate_per_s: node.rate_per_s.filter(|r| r.is_finite()),
                basis: EstimateBasis::Rate,
            })
        });
        let mut metadata = Metadata::default();
        for (k, v) in node.metadata.iter().take(self.max_metadata) {
            let v = match v {
                FieldValue::Str(s) => FieldValue::Str(clip(s, self.max_text)),
                other => other.clone(),
            };
            metadata.insert(clip(k, 256), v);
        }
        let total = node.total;
        let percentage = node
            .percentage
            .filter(|p| p.is_finite())
            .map(|p| p.clamp(0.0, 100.0))
            .or_else(|| match (status, total) {
                (Status::Completed, _) => Some(100.0),
                (_, Some(t)) if t > 0 => {
                    Some((node.current.unwrap_or(0) as f64 / t as f64).min(1.0) * 100.0)
                }
                _ => None,
            });
        let mut children = Vec::new();
        for (i, c) in node.children.into_iter().enumerate() {
            if self.budget == 0 || depth + 1 >= self.max_depth {
                self.dropped += 1;
                continue;
            }
            children.push(self.level(c, format!("{pos}/{i}"), path, depth + 1, now_us));
        }
        path.pop();
        let elapsed = end - start;
        let level_type = node
            .level
            .as_deref()
            .map_or_else(|| name.clone(), |l| clip(l, 256));
        ProgressLevel {
            current: node.current.unwrap_or(0),
            total,
            percentage,
            unit: node.unit.as_deref().map(|u| clip(u, 256)),
            message: node.message.as_deref().map(|m| clip(m, self.max_text)),
            timing: Timing {
                created_at_us: start,
                started_at_us: started,
                completed_at_us: completed,
                elapsed_us: elapsed,
                busy_us: elapsed,
                idle_us: 0,
            },
            error: error.map(Box::new),
            cancel_reason: (status == Status::Cancelled).then_some(CancelReason::Requested),
            metadata,
            input_errors,
            children,
            estimate: estimate.filter(|_| status == Status::Running),
            ..ProgressLevel::blank(
                id,
                level_type,
                name,
                self.span_name.clone(),
                self.target.clone(),
                status,
            )
        }
    }
}
