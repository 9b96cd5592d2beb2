//! The verbose renderer: a snapshot as indented, labelled text.

use std::fmt::Write;

use super::fit::{KEEP_HEADER, KEEP_REST, fit, priority};
use super::lines::{
    at_path, collapsed_line, depth_hidden_line, failures_below_line, folded_line, is_counter, path,
    push_indent, root_progress, summary_status, with_peak,
};
use super::text::{
    bytes, children_out_of, clipped, count, counts, first_line, format_percent, index_of, one_line,
    position_in, progress, rate_per, status_text, title_words, units_of,
};
use crate::model::{
    ErrorInfo, ErrorOrigin, FieldValue, FoldedChildren, ProgressLevel, ProgressState, Status,
};
use crate::time::{DurationStyle, duration, format_duration, format_timestamp};

/// Longest recent-event line the view prints (bytes, before the note of the full length).
const EVENT_LINE_BYTES: usize = 300;

/// How much the [`Verbose`] renderer writes per level.
///
/// | detail | per level |
/// |---|---|
/// | [`Summary`](Detail::Summary) | one line: position, name, id, status, progress, ETA, error |
/// | [`Normal`](Detail::Normal) | a block: status, start/end times, duration, estimate, message, progress, errors |
/// | [`Verbose`](Detail::Verbose) | the `Normal` block plus metadata, metrics (CPU, memory, rates, counters), busy/idle time (when it waited), error fields, input errors |
///
/// All three start with the same header (operation, start time, status).
///
/// ```
/// use tracing_progress::view::Detail;
/// assert_eq!(Detail::default(), Detail::Verbose);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detail {
    /// The header, then one line per level.
    Summary,
    /// Status, timing and progress of each level; no metadata or metrics.
    Normal,
    /// Everything in the snapshot (the default).
    #[default]
    Verbose,
}

/// Renders a [`ProgressState`] snapshot as the verbose text view.
///
/// A small builder; the defaults are no depth limit and at most 20 children shown per parent.
///
/// * **Header**: `Setlist: "My Setlist" (ID: 42)`, `Started:` and
///   `Status: Running (3/10 songs completed, 30%)`.
/// * **Levels**, indented two spaces per depth: a title `Song 4/10: audio4.wav (ID: 17)` (the
///   position counts folded siblings first; "out of" is the parent's total when it counts
///   these children: no unit, children of one level type), then lines by [`Detail`].
/// * [`max_depth`](Verbose::max_depth) stops descending and says how many levels, of which
///   types, were hidden; [`max_children`](Verbose::max_children) shows the first and last few
///   children of a parent and collapses the middle into one line counted by status:
///   `… 9,990 more blocks: 9,947 completed, 33 failed, 10 running`.
/// * Children folded away by the store read one line each:
///   `… 3 songs folded: 3 completed; took 0:01:50 to 0:02:40, mean 0:02:10`.
///
/// Output is deterministic (UTC times, cut durations, see [`format_timestamp`],
/// [`format_duration`], [`format_percent`]; elapsed and remaining times of running levels are
/// clocks, `0:02:15`) and uses only ASCII plus `›` and `…`; names and messages from the program
/// are kept as they are, with control characters escaped.
///
/// [`format_timestamp`]: super::format_timestamp
/// [`format_duration`]: super::format_duration
/// [`format_percent`]: super::format_percent
///
/// ```
/// use tracing_progress::ProgressState;
/// use tracing_progress::view::{Detail, Verbose};
///
/// let state: ProgressState = serde_json::from_str(r#"{
///   "schema_version": 1, "id": 42, "operation_type": "setlist", "name": "My Setlist",
///   "status": "running", "cancel_requested": false, "started_at_us": 1705314600000000,
///   "snapshot_at_us": 1705314735000000,
///   "metrics": {"nodes_seen": 2, "nodes_retained": 2, "nodes_folded": 0, "nodes_failed": 0,
///               "updates": 3, "input_errors": 0},
///   "root": {"id": 42, "level_type": "setlist", "name": "My Setlist", "span_name": "run",
///     "target": "app", "status": "running", "current": 0, "total": 2, "percentage": 42.0,
///     "timing": {"created_at_us": 1705314600000000, "started_at_us": 1705314600000000,
///                "elapsed_us": 135000000, "busy_us": 135000000, "idle_us": 0},
///     "children": [{"id": 43, "level_type": "song", "name": "audio1.wav", "span_name": "song",
///       "target": "app", "status": "running", "current": 85, "total": 100, "percentage": 85.0,
///       "unit": "events",
///       "timing": {"created_at_us": 1705314600000000, "started_at_us": 1705314600000000,
///                  "elapsed_us": 135000000, "busy_us": 135000000, "idle_us": 0}}]}
/// }"#).unwrap();
///
/// let text = Verbose::new(Detail::Summary).render(&state);
/// assert_eq!(text, "\
/// Setlist: \"My Setlist\" (ID: 42)
/// Started: 2024-01-15 10:30:00
/// Status: Running (0/2 songs completed, 42%)
/// Elapsed: 0:02:15
///
/// Song 1/2: audio1.wav (ID: 43) - Running 85% (85/100 events)
/// ");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verbose {
    detail: Detail,
    max_depth: usize,
    max_children: usize,
    max_lines: usize,
}

impl Default for Verbose {
    /// `Verbose::new(Detail::Verbose)`.
    fn default() -> Self {
        Verbose::new(Detail::Verbose)
    }
}

impl Verbose {
    /// A renderer at this detail, with no depth limit and at most 20 children per parent.
    ///
    /// ```
    /// use tracing_progress::view::{Detail, Verbose};
    /// let view = Verbose::new(Detail::Normal).max_depth(2).max_children(10);
    /// # let _ = view;
    /// ```
    pub fn new(detail: Detail) -> Self {
        Verbose {
            detail,
            max_depth: usize::MAX,
            max_children: 20,
            max_lines: usize::MAX,
        }
    }

    /// Shows levels down to this depth (the root's children are depth 1); the levels at the
    /// limit say how many descendants, of which types, were left out. `0` shows only the
    /// header.
    ///
    /// ```
    /// use tracing_progress::view::{Detail, Verbose};
    /// let songs_only = Verbose::new(Detail::Summary).max_depth(1);
    /// # let _ = songs_only;
    /// ```
    #[must_use]
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Shows at most this many children of each parent: the first half (rounded up) and the
    /// last half; the ones in between become one line counting them by status. `0` reduces
    /// every parent's children to that one line.
    ///
    /// ```
    /// use tracing_progress::view::{Detail, Verbose};
    /// // 3 first + 3 last children, then "… 9,994 more blocks: ..." in between.
    /// let view = Verbose::new(Detail::Normal).max_children(6);
    /// # let _ = view;
    /// ```
    #[must_use]
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = n;
        self
    }

    /// Fits the text into this many lines (a terminal's height): the header and the running
    /// levels are kept first, then failed ones, then finished ones in order; each run of lines
    /// left out becomes one `… N more lines` marker, so what is running is never off-screen
    /// without a trace.
    ///
    /// ```
    /// use tracing_progress::view::{Detail, Verbose};
    /// let view = Verbose::new(Detail::Summary).max_lines(15);
    /// # let _ = view;
    /// ```
    #[must_use]
    pub fn max_lines(mut self, n: usize) -> Self {
        self.max_lines = n;
        self
    }

    /// The text view of one snapshot, every line ending in `\n`.
    ///
    /// Reads only the snapshot; the tree is walked without recursion, so any depth is safe.
    /// See [`Verbose`] for an example.
    pub fn render(&self, state: &ProgressState) -> String {
        let mut r = Renderer {
            opts: self,
            lines: Vec::new(),
            prio: KEEP_HEADER,
        };
        r.render(state);
        fit(r.lines, self.max_lines)
    }
}

// === impl Renderer ===

/// One thing to write below the header, in output order on a stack.
enum Item<'a> {
    Level {
        level: &'a ProgressLevel,
        depth: usize,
        index: u64,
        of: Option<u64>,
    },
    Folded {
        folded: &'a FoldedChildren,
        depth: usize,
    },
    Collapsed {
        hidden: &'a [ProgressLevel],
        depth: usize,
        after_shown: bool,
    },
    DepthHidden {
        level: &'a ProgressLevel,
        depth: usize,
    },
}

struct Renderer<'a> {
    opts: &'a Verbose,
    /// Lines written so far, each with how much it matters when the text must fit.
    lines: Vec<(u8, String)>,
    /// The priority of the lines being written now.
    prio: u8,
}

impl<'a> Renderer<'a> {
    fn summary(&self) -> bool {
        self.opts.detail == Detail::Summary
    }

    fn verbose(&self) -> bool {
        self.opts.detail == Detail::Verbose
    }

    /// Writes `indent` spaces, `text` and a newline.
    fn line(&mut self, indent: usize, text: &str) {
        let mut line = String::with_capacity(indent + text.len());
        push_indent(&mut line, indent);
        line.push_str(text);
        self.lines.push((self.prio, line));
    }

    /// An empty line.
    fn blank(&mut self) {
        self.lines.push((self.prio, String::new()));
    }

    /// `Label: text`, with further lines of a multi-line text indented under it.
    fn labelled(&mut self, indent: usize, label: &str, text: &str) {
        let mut lines = text.split('\n');
        let first = lines.next().unwrap_or_default();
        self.line(indent, &format!("{label}: {}", one_line(first)));
        for more in lines {
            self.line(indent + 2, &one_line(more));
        }
    }

    fn render(&mut self, state: &'a ProgressState) {
        self.header(state);
        if !self.summary() {
            self.body(&state.root, 0, true);
        }
        let mut stack = Vec::new();
        self.push_children(&mut stack, &state.root, 1);
        if self.summary() && !stack.is_empty() {
            self.blank();
        }
        while let Some(item) = stack.pop() {
            self.prio = match &item {
                Item::Level { level, .. } => priority(level),
                _ => KEEP_REST,
            };
            if !self.summary() {
                self.blank();
            }
            match item {
                Item::Level {
                    level,
                    depth,
                    index,
                    of,
                } => {
                    let title = format!(
                        "{} {}: {} (ID: {})",
                        title_words(&level.level_type),
                        index_of(index, of),
                        one_line(&level.name),
                        level.id
                    );
                    if self.summary() {
                        let line = format!("{title} - {}", summary_status(level));
                        self.line(2 * (depth - 1), &line);
                    } else {
                        self.line(2 * (depth - 1), &title);
                        self.body(level, 2 * depth, false);
                    }
                    self.push_children(&mut stack, level, depth + 1);
                }
                Item::Folded { folded, depth } => {
                    self.line(2 * (depth - 1), &folded_line(folded));
                }
                Item::Collapsed {
                    hidden,
                    depth,
                    after_shown,
                } => {
                    self.line(2 * (depth - 1), &collapsed_line(hidden, after_shown));
                }
                Item::DepthHidden { level, depth } => {
                    let line = depth_hidden_line(level, self.opts.max_depth);
                    self.line(2 * (depth - 1), &line);
                }
            }
        }
    }

    /// Pushes what goes below `parent` (whose children are at `depth`), last item first.
    fn push_children(&self, stack: &mut Vec<Item<'a>>, parent: &'a ProgressLevel, depth: usize) {
        if parent.children.is_empty() && parent.folded.is_empty() {
            return;
        }
        if depth > self.opts.max_depth {
            stack.push(Item::DepthHidden {
                level: parent,
                depth,
            });
            return;
        }
        let children = &parent.children;
        let n = children.len();
        let (head, tail) = if n > self.opts.max_children {
            let m = self.opts.max_children;
            (m - m / 2, m / 2)
        } else {
            (n, 0)
        };
        let out_of = children_out_of(parent);
        let level_item = |i: usize| {
            let (index, of) = position_in(parent, i, out_of);
            Item::Level {
                level: &children[i],
                depth,
                index,
                of,
            }
        };
        for i in (n - tail..n).rev() {
            stack.push(level_item(i));
        }
        if head + tail < n {
            stack.push(Item::Collapsed {
                hidden: &children[head..n - tail],
                depth,
                after_shown: head > 0,
            });
        }
        for i in (0..head).rev() {
            stack.push(level_item(i));
        }
        for folded in parent.folded.iter().rev() {
            stack.push(Item::Folded { folded, depth });
        }
    }

    fn header(&mut self, state: &ProgressState) {
        let root = &state.root;
        let title = format!(
            "{}: \"{}\" (ID: {})",
            title_words(&root.level_type),
            one_line(&state.name),
            state.id
        );
        self.line(0, &title);
        match state.started_at_us.or(root.timing.started_at_us) {
            Some(at) => self.line(0, &format!("Started: {}", format_timestamp(at))),
            None => self.line(
                0,
                &format!("Created: {}", format_timestamp(root.timing.created_at_us)),
            ),
        }
        let mut status = status_text(root);
        if let Some(p) = root_progress(root, state.status) {
            // "Cancelled (interrupted), 37/60 files, 62%": no second pair of parentheses.
            if status.ends_with(')') {
                let _ = write!(status, ", {p}");
            } else {
                let _ = write!(status, " ({p})");
            }
        }
        if state.cancel_requested && !state.status.is_finished() {
            status.push_str(", cancel requested");
        }
        if root.stalled {
            status.push_str(", STALLED");
        }
        self.line(0, &format!("Status: {status}"));
        if self.summary() {
            // The body (with these lines) is not shown in a summary: time and ETA go here.
            if state.status == Status::Running {
                let mut line = format!(
                    "Elapsed: {}",
                    duration(root.timing.elapsed_us, DurationStyle::Clock)
                );
                if let Some(e) = root.estimate() {
                    let _ = write!(
                        line,
                        ", ETA {}",
                        duration(e.remaining_us, DurationStyle::Clock)
                    );
                }
                self.line(0, &line);
            }
            if let Some(error) = root.error() {
                let line = format!("Error: {}{}", first_line(&error.message), at_path(error));
                self.line(0, &line);
            }
            if let Some(below) = root.failures_below() {
                self.line(0, &failures_below_line(below));
            }
        }
    }

    /// The lines under a level's title (`Normal` and `Verbose`). The root's status, start and
    /// progress are in the header already.
    fn body(&mut self, l: &ProgressLevel, indent: usize, is_root: bool) {
        let t = &l.timing;
        if !is_root {
            let mut status = status_text(l);
            if l.stalled {
                status.push_str(", STALLED");
            }
            self.line(indent, &format!("Status: {status}"));
            match t.started_at_us {
                Some(at) => self.line(indent, &format!("Started: {}", format_timestamp(at))),
                // A planned child: when its parent declared it.
                None if l.planned || skipped(l) => self.line(
                    indent,
                    &format!("Planned: {}", format_timestamp(t.created_at_us)),
                ),
                None => self.line(
                    indent,
                    &format!("Created: {}", format_timestamp(t.created_at_us)),
                ),
            }
        }
        if let Some(at) = t.completed_at_us {
            let label = match l.status {
                Status::Completed => "Completed",
                _ => "Ended",
            };
            self.line(indent, &format!("{label}: {}", format_timestamp(at)));
        }
        match l.status {
            Status::Pending => {}
            // Never ran: no duration to speak of.
            _ if skipped(l) => {}
            Status::Running => {
                self.line(
                    indent,
                    &format!("Elapsed: {}", duration(t.elapsed_us, DurationStyle::Clock)),
                );
            }
            // Read back after its process ended: the time up to its last record, no end.
            _ if l.cancel_reason == Some(crate::CancelReason::Interrupted) => self.line(
                indent,
                &format!(
                    "Duration: at least {} (to its last record)",
                    format_duration(t.elapsed_us)
                ),
            ),
            _ => self.line(
                indent,
                &format!("Duration: {}", format_duration(t.elapsed_us)),
            ),
        }
        // Only worth a line when the level waited: otherwise busy is the whole duration.
        if self.verbose() && l.status != Status::Pending && !skipped(l) && t.idle_us > 0 {
            let mut line = format!(
                "Busy: {}, Idle: {}",
                format_duration(t.busy_us),
                format_duration(t.idle_us)
            );
            // Idle counts from creation, the duration from the start: a span queued long
            // before it ran reads "Duration: 52ms, Idle: 1.5s" without this.
            let waited = t
                .started_at_us
                .map_or(0, |s| s.saturating_sub(t.created_at_us));
            if waited >= 1_000 && waited <= t.idle_us {
                let _ = write!(line, " ({} before it started)", format_duration(waited));
            }
            self.line(indent, &line);
        }
        if let Some(e) = l.estimate() {
            let mut line = format!(
                "Estimated Remaining: {}",
                duration(e.remaining_us, DurationStyle::Clock)
            );
            if e.low_us != e.high_us {
                let _ = write!(
                    line,
                    " ({}-{})",
                    duration(e.low_us, DurationStyle::ShortClock),
                    duration(e.high_us, DurationStyle::ShortClock)
                );
            }
            self.line(indent, &line);
        }
        if let Some(m) = &l.message {
            self.labelled(indent, "Message", m);
        }
        if self.verbose() {
            for (name, value) in l.metadata.iter() {
                if !is_counter(name, value) {
                    self.labelled(indent, &title_words(name), &value.to_string());
                }
            }
        }
        // A completed level with nothing counted would only repeat "100%".
        let implied = l.status == Status::Completed && counts(l).is_none();
        if !is_root
            && !implied
            && let Some(p) = progress(l)
        {
            self.line(indent, &format!("Progress: {p}"));
        }
        if l.planned_hidden > 0 {
            let kind = super::text::child_type(l).map_or("children".to_owned(), |t| {
                super::text::plural(&one_line(t), l.planned_hidden)
            });
            let line = format!(
                "Planned: {} more {kind} not shown (past the plan cap)",
                count(l.planned_hidden)
            );
            self.line(indent, &line);
        }
        if self.verbose() {
            self.metrics(l, indent);
        }
        if let Some(e) = &l.error {
            self.error(e, indent);
        }
        if let Some(note) = super::attempts::attempt_note(l) {
            self.attempts(l, &note, indent);
        }
        if let Some(h) = l.handled_errors() {
            let line = format!(
                "Errors Handled: {}, last: {}{}",
                count(h.count),
                first_line(&h.last.message),
                at_path(&h.last)
            );
            self.line(indent, &line);
        }
        if let Some(below) = l.failures_below() {
            self.line(indent, &failures_below_line(below));
            if self.verbose() && below.count > 1 {
                let line = format!(
                    "Last Failure: {}{}",
                    first_line(&below.last.message),
                    at_path(&below.last)
                );
                self.line(indent, &line);
            }
        }
        if self.verbose() {
            if !l.input_errors.is_empty() {
                self.line(indent, "Input Errors:");
                for e in &l.input_errors {
                    self.line(indent + 2, &format!("- {}", one_line(e)));
                }
            }
            if l.flattened {
                self.line(
                    indent,
                    "Flattened: deeper levels were attached here (store depth limit)",
                );
            }
            if !l.recent_events.is_empty() {
                self.recent_events(l, indent);
            }
        }
    }

    /// `Attempt: 2 (after 1 failed)` and a line per earlier attempt; in `Verbose`, each
    /// failed attempt's recent events under it.
    fn attempts(&mut self, l: &ProgressLevel, note: &str, indent: usize) {
        let Some(a) = l.attempts() else { return };
        let note = note.strip_prefix("attempt ").unwrap_or(note);
        self.line(indent, &format!("Attempt: {note}"));
        if a.earlier.is_empty() {
            return;
        }
        self.line(indent, "Earlier Attempts:");
        if a.omitted > 0 {
            let line = format!(
                "- … {} older attempts not kept",
                count(u64::from(a.omitted))
            );
            self.line(indent + 2, &line);
        }
        for e in &a.earlier {
            self.line(
                indent + 2,
                &format!("- {}", super::attempts::earlier_line(e)),
            );
            if let Some(err) = e.error.as_deref().filter(|_| self.verbose()) {
                self.event_lines(&err.recent_events, e.started_at_us, indent + 4);
            }
        }
    }

    /// The node's last events, timed from the node's start (or creation).
    fn recent_events(&mut self, l: &ProgressLevel, indent: usize) {
        let from = l.timing.started_at_us.unwrap_or(l.timing.created_at_us);
        self.line(indent, "Recent Events:");
        self.event_lines(&l.recent_events, from, indent + 2);
    }

    /// Events timed from `from`, one line each, long ones clipped.
    fn event_lines(&mut self, events: &[crate::model::RecentEvent], from: u64, indent: usize) {
        for e in events {
            let offset = e.at_us.saturating_sub(from) as f64 / 1e6;
            self.line(
                indent,
                // A line, not a dump: the JSON and the page have every byte.
                &format!(
                    "+{offset:.3}s {}",
                    clipped(&one_line(&e.to_string()), EVENT_LINE_BYTES)
                ),
            );
        }
    }

    fn metrics(&mut self, l: &ProgressLevel, indent: usize) {
        let mut items = Vec::new();
        if let Some(r) = l.resources().filter(|r| r.samples > 0) {
            let (mean, peak) = (
                format_percent(r.cpu_percent_mean),
                format_percent(r.cpu_percent_peak),
            );
            items.push(with_peak("CPU", mean, peak));
            items.push(with_peak(
                "Memory",
                bytes(r.rss_bytes_mean),
                bytes(r.rss_bytes_peak),
            ));
        }
        if let Some(per_s) = l.estimate().and_then(|e| e.rate_per_s) {
            items.push(format!(
                "Rate: {}",
                rate_per(per_s, units_of(l, 2).as_deref())
            ));
        }
        for (name, value) in l.metadata.iter() {
            if let (true, FieldValue::U64(n)) = (is_counter(name, value), value) {
                let mut item = format!("{}: {}", title_words(name), count(*n));
                if l.timing.elapsed_us > 0 {
                    let per_s = *n as f64 / (l.timing.elapsed_us as f64 / 1e6);
                    let _ = write!(item, " ({})", rate_per(per_s, None));
                }
                items.push(item);
            }
        }
        if !items.is_empty() {
            self.line(indent, "Metrics:");
            for item in items {
                self.line(indent + 2, &format!("- {item}"));
            }
        }
    }

    fn error(&mut self, e: &ErrorInfo, indent: usize) {
        let label = if self.verbose() && e.origin == ErrorOrigin::Panic {
            "Error (panic)"
        } else {
            "Error"
        };
        self.labelled(indent, label, &e.message);
        if !e.path.is_empty() {
            self.line(indent, &format!("At: {}", path(e)));
        }
        if let Some(location) = &e.location {
            self.line(indent, &format!("Location: {}", one_line(location)));
        }
        if self.verbose() && !e.fields.is_empty() {
            self.line(indent, "Error Fields:");
            for (name, value) in e.fields.iter() {
                let line = format!("- {}: {}", title_words(name), one_line(&value.to_string()));
                self.line(indent + 2, &line);
            }
        }
    }
}

/// A planned child that never ran (its parent ended first).
fn skipped(l: &ProgressLevel) -> bool {
    l.cancel_reason == Some(crate::CancelReason::Skipped)
}
