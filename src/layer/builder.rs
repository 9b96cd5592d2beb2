//! Configuration: rules and bounds, then `build()` hands back the layer and the store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing_core::Subscriber;
use tracing_subscriber::registry::LookupSpan;

use super::classify::{Classifier, TrackRule};
use super::{FailOn, ProgressLayer};
use crate::export::{Exporter, Exporters};

/// Creates one exporter from the store it reports on (kept until `build`).
type ExporterFactory = Arc<dyn Fn(Store) -> Arc<dyn Exporter> + Send + Sync>;
use crate::store::{Limits, Store, StoreInner};

/// How often estimates observe progress by default.
const DEFAULT_ESTIMATE_INTERVAL: Duration = Duration::from_millis(250);

/// Builds a [`ProgressLayer`] and its [`Store`].
///
/// | setting | default | what it bounds |
/// |---|---|---|
/// | [`history_limit`](Builder::history_limit) | 1,000 | finished operations kept |
/// | [`history_max_age`](Builder::history_max_age) | 24 h | age of finished operations kept |
/// | [`history_max_bytes`](Builder::history_max_bytes) | 64 MiB | estimated heap of finished operations kept |
/// | [`max_finished_children`](Builder::max_finished_children) | 1,000 | finished children kept per parent before folding |
/// | [`max_finished_nodes`](Builder::max_finished_nodes) | 10,000 | finished nodes kept per operation before folding |
/// | [`max_depth`](Builder::max_depth) | 32 | nesting depth; deeper spans are attached at the limit |
/// | [`max_text_len`](Builder::max_text_len) | 64 KiB | length of a message or text field |
/// | [`max_metadata_entries`](Builder::max_metadata_entries) | 64 | metadata entries per node |
/// | [`recent_events`](Builder::recent_events) | 16 events, 8 KiB | events kept per tracked node |
/// | [`recent_events_level`](Builder::recent_events_level) | `INFO` | least severe level kept as a recent event |
/// | [`max_planned_children`](Builder::max_planned_children) | 1,000 | planned children kept as pending nodes per parent |
/// | [`capture_panics`](Builder::capture_panics) | on | chains a panic hook to keep panic messages |
/// | [`fail_on`](Builder::fail_on) | returned errors | which ERROR events fail a node |
/// | [`stall_factor`](Builder::stall_factor) | 5 | a node is `stalled` after this many usual update intervals without progress |
/// | [`estimate_interval`](Builder::estimate_interval) | 250 ms (off with a custom clock) | how often estimates observe progress |
/// | [`clock`](Builder::clock) | monotonic TSC | time source (inject one for deterministic tests) |
///
/// # What `build` does to the process
///
/// Besides returning the layer and store, [`build`](Builder::build) may:
///
/// * **chain a panic hook** (once per process, calling the hook that was there before) so
///   spans closed by unwinding keep the panic message: turn off with
///   [`capture_panics(false)`](Builder::capture_panics);
/// * **start one thread**, `tracing-progress-estimates`, that advances estimates every
///   [`estimate_interval`](Builder::estimate_interval) and ends when the store is dropped:
///   turn off with `estimate_interval(None)` (then call
///   [`Store::tick_estimates`](crate::Store::tick_estimates) yourself, or have no estimates);
/// * start a resource sampler thread, only with `sample_resources` (feature `resources`), and
///   an OpenTelemetry heartbeat thread with `otel`, at the first operation, unless
///   `OtelExport::without_heartbeat` (feature `otel`);
/// * open (or create) a SQLite file and start its writer thread, `tracing-progress-sqlite`, only
///   with [`history_file`](Builder::history_file) (feature `sqlite`).
///
/// Nothing else is global: two layers built here are independent, even in one subscriber.
///
/// ```
/// use std::time::Duration;
/// use tracing_progress::TrackRule;
/// use tracing_subscriber::prelude::*;
/// # fn docs() -> Result<(), tracing_progress::BuildError> {
/// let (layer, store) = tracing_progress::Builder::new()
///     .track(TrackRule::span("process_song").level("song").name_field("title"))
///     .history_limit(100)
///     .history_max_age(Duration::from_secs(3600))
///     .build()?;
/// let _subscriber = tracing_subscriber::registry().with(layer);
/// # Ok(()) }
/// # docs().unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct Builder {
    rules: Vec<TrackRule>,
    limits: Limits,
    capture_panics: bool,
    fail_on: FailOn,
    clock: Option<crate::store::TimeFn>,
    /// `None` inside: off; outer `None`: the default for the clock in use.
    estimate_interval: Option<Option<Duration>>,
    /// Exporters to create at `build`, each handed the store.
    exporters: Vec<ExporterFactory>,
    /// The first invalid setting given to a method that cannot return an error itself.
    invalid: Option<String>,
    #[cfg(feature = "resources")]
    resources: Option<Duration>,
    #[cfg(feature = "sqlite")]
    history_file: Option<crate::sqlite::FileConfig>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::MetricsExport>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("rules", &self.rules)
            .field("limits", &self.limits)
            .field("capture_panics", &self.capture_panics)
            .field("custom_clock", &self.clock.is_some())
            .field("exporters", &self.exporters.len())
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// A setting that cannot work; the message says which and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

impl Builder {
    /// Defaults as in the table above; no rules (only spans with `progress.*` fields are tracked).
    pub fn new() -> Self {
        Builder {
            rules: Vec::new(),
            limits: Limits::default(),
            capture_panics: true,
            fail_on: FailOn::default(),
            clock: None,
            estimate_interval: None,
            exporters: Vec::new(),
            invalid: None,
            #[cfg(feature = "resources")]
            resources: None,
            #[cfg(feature = "sqlite")]
            history_file: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Progress as OpenTelemetry metrics pushed over OTLP and in Prometheus text format on the
    /// HTTP server's `/metrics`, with bounded cardinality; see [`metrics`](crate::metrics).
    /// Keep a clone of `export` to [`shutdown`](crate::metrics::MetricsExport::shutdown) the
    /// push before the program exits.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(mut self, export: crate::metrics::MetricsExport) -> Self {
        match export.validate() {
            Ok(()) => self.metrics = Some(export),
            Err(e) => self.invalid = self.invalid.or(Some(e)),
        }
        self
    }

    /// Keeps finished operations in a SQLite file as well, so history survives restarts and
    /// several processes share it (see [`sqlite`](crate::sqlite)). The file is created if
    /// missing (its directory must exist), opened in WAL mode with `synchronous=NORMAL`, and
    /// written by a background thread, `tracing-progress-sqlite`; the host never waits on it.
    /// [`Store::history`](crate::Store::history) then also answers from the file.
    ///
    /// [`build`](Builder::build) fails with a clear message when the directory is missing, the
    /// file is not a SQLite database (or one of something else), or it was written by a newer
    /// version of this crate.
    ///
    /// ```
    /// # fn docs() -> Result<(), tracing_progress::BuildError> {
    /// let dir = std::env::temp_dir();
    /// let (layer, store) = tracing_progress::Builder::new()
    ///     .history_file(dir.join("doc-history.db"))
    ///     .build::<tracing_subscriber::Registry>()?;
    /// # Ok(()) }
    /// # docs().unwrap();
    /// ```
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        let mut config = self.history_file.take().unwrap_or_default();
        config.path = path.into();
        self.history_file = Some(config);
        self
    }

    /// With [`history_file`](Builder::history_file): the most bytes the file may grow to
    /// (rounded down to whole database pages; SQLite's `max_page_count`). Past it, writes
    /// fail as on a full disk: counted in
    /// [`StoreStats::history_file_errors`](crate::StoreStats::history_file_errors), reported
    /// once, the in-memory history unaffected; [retention](Builder::history_file_retention)
    /// frees room again. No bound by default. Call after `history_file`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_max_bytes(mut self, bytes: u64) -> Self {
        match &mut self.history_file {
            Some(c) => c.max_bytes = Some(bytes),
            None => {
                self.invalid = self.invalid.or(Some(
                    "history_file_max_bytes needs history_file first".to_string(),
                ));
            }
        }
        self
    }

    /// With [`history_file`](Builder::history_file): keep at most `max_operations` finished
    /// operations in the file, none older than `max_age` (`None`: no such bound; both `None`
    /// by default, so the file keeps everything). The writer thread deletes the oldest first,
    /// when it opens the file and then at most every 10 s or 1,000 writes; rows of operations
    /// still running are kept. Call after `history_file`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_retention(
        mut self,
        max_operations: Option<u64>,
        max_age: Option<Duration>,
    ) -> Self {
        match &mut self.history_file {
            Some(c) => {
                c.retention.max_rows = max_operations;
                c.retention.max_age = max_age;
            }
            None => {
                self.invalid = self.invalid.or(Some(
                    "history_file_retention needs history_file first".to_string(),
                ));
            }
        }
        self
    }

    /// With [`history_file`](Builder::history_file): keep the finished operations in the file
    /// within about `bytes` (the database's pages in use; the WAL file beside it comes on top).
    /// After each batch it writes, the writer thread checks the size and, past `bytes`,
    /// deletes the oldest finished operations down to 90% of it; their pages are reused by
    /// the next writes, so the file stops growing at about `bytes` (it does not shrink).
    /// Rows of operations still running are kept. No bound by default. Unlike
    /// [`history_file_max_bytes`](Builder::history_file_max_bytes), a hard limit past which
    /// writes fail, this one never costs a new operation; both may be set (this one below).
    /// Call after `history_file`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_retain_bytes(mut self, bytes: u64) -> Self {
        match &mut self.history_file {
            Some(c) => c.retention.max_bytes = Some(bytes),
            None => {
                self.invalid = self.invalid.or(Some(
                    "history_file_retain_bytes needs history_file first".to_string(),
                ));
            }
        }
        self
    }

    /// With [`history_file`](Builder::history_file): how long dropping the layer, or a normal
    /// process exit, waits at most for the operations still queued to be written
    /// ([`sqlite::EXIT_FLUSH`](crate::sqlite::EXIT_FLUSH), 500 ms, by default). The wait ends
    /// as soon as the queue is written; what is left at the bound is lost, as without it.
    /// The writer thread runs at the lowest priority, so a program that exits with a long
    /// queue on a machine whose cores are all busy may want more. Call after `history_file`.
    ///
    /// ```
    /// # fn docs() -> Result<(), tracing_progress::BuildError> {
    /// let (layer, store) = tracing_progress::Builder::new()
    ///     .history_file(std::env::temp_dir().join("doc-exit-flush.db"))
    ///     .history_file_exit_flush(std::time::Duration::from_secs(3))
    ///     .build::<tracing_subscriber::Registry>()?;
    /// # Ok(()) }
    /// # docs().unwrap();
    /// ```
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_exit_flush(mut self, wait: Duration) -> Self {
        match &mut self.history_file {
            Some(c) => c.exit_flush = Some(wait),
            None => {
                self.invalid = self.invalid.or(Some(
                    "history_file_exit_flush needs history_file first".to_string(),
                ));
            }
        }
        self
    }

    /// With [`history_file`](Builder::history_file): how often the row of a running root is
    /// brought up to date ([`sqlite::CHECKPOINT`](crate::sqlite::CHECKPOINT), 10 s, by
    /// default; at least 10 ms). An operation whose process is killed reads interrupted with
    /// the state of its last checkpoint: its progress, elapsed time and failures then, not
    /// only those of its start. Each checkpoint is a snapshot and its JSON, written by the
    /// background writer; operations shorter than 50 ms get no running row at all. Call
    /// after `history_file`.
    ///
    /// ```
    /// # fn docs() -> Result<(), tracing_progress::BuildError> {
    /// let (layer, store) = tracing_progress::Builder::new()
    ///     .history_file(std::env::temp_dir().join("doc-checkpoint.db"))
    ///     .history_file_checkpoint(std::time::Duration::from_secs(2))
    ///     .build::<tracing_subscriber::Registry>()?;
    /// # Ok(()) }
    /// # docs().unwrap();
    /// ```
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_checkpoint(mut self, every: Duration) -> Self {
        match &mut self.history_file {
            Some(c) => c.checkpoint = Some(every.max(Duration::from_millis(10))),
            None => {
                self.invalid = self.invalid.or(Some(
                    "history_file_checkpoint needs history_file first".to_string(),
                ));
            }
        }
        self
    }

    /// With [`history_file`](Builder::history_file): `synchronous=FULL` instead of `NORMAL`,
    /// so a power loss cannot lose committed operations either (each transaction waits for the
    /// disk). Call after `history_file`.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn history_file_sync_full(mut self, on: bool) -> Self {
        if let Some(c) = &mut self.history_file {
            c.sync_full = on;
        } else if on {
            self.invalid = self.invalid.or(Some(
                "history_file_sync_full needs history_file first".to_string(),
            ));
        }
        self
    }

    /// Samples process CPU and memory every `interval` on a background thread and attributes
    /// each sample to the nodes running at that moment ([`ResourceUsage`](crate::ResourceUsage)
    /// on every level). At least 10 ms; off by default.
    #[cfg(feature = "resources")]
    #[cfg_attr(docsrs, doc(cfg(feature = "resources")))]
    pub fn sample_resources(mut self, interval: Duration) -> Self {
        self.resources = Some(interval);
        self
    }

    /// Writes progress onto the spans of a `tracing_opentelemetry` layer added *after* this
    /// one; see [`otel`](crate::otel).
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn otel(mut self, export: crate::otel::OtelExport) -> Self {
        match export.validate() {
            Ok(()) => self.exporters.push(Arc::new(move |store| {
                crate::otel::exporter(export.clone(), store)
            })),
            Err(e) => self.invalid = self.invalid.or(Some(e)),
        }
        self
    }

    /// Tracks spans that match `rule` even without `progress.*` fields. The first matching
    /// rule decides level type, name field and operation type.
    pub fn track(mut self, rule: TrackRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// How many finished operations history keeps (at least 1).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.limits.history_limit = n;
        self
    }

    /// Bound on the estimated heap bytes of the finished operations in history (default 64 MiB):
    /// each operation's size is estimated once when it finishes (every node, string and
    /// metadata entry, erring high) and the oldest are evicted while the sum is over the bound.
    /// The newest operation is kept even when it alone is bigger. With the defaults a store
    /// stays under ~100 MB of RSS whatever its operations look like;
    /// [`StoreStats::history_bytes`](crate::StoreStats::history_bytes) tells the current sum.
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.limits.history_max_bytes = bytes;
        self
    }

    /// How long finished operations stay in history.
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.limits.history_max_age = age;
        self
    }

    /// Finished children kept per parent; older ones are folded into per-parent summaries.
    pub fn max_finished_children(mut self, n: usize) -> Self {
        self.limits.max_finished_children = n;
        self
    }

    /// Finished nodes kept per operation; the earliest finished are folded first.
    pub fn max_finished_nodes(mut self, n: usize) -> Self {
        self.limits.max_finished_nodes = n;
        self
    }

    /// Deepest level kept (root = 0, 1 to 64). Tracked spans nested deeper are attached to the
    /// node at this depth's parent, marked `flattened`.
    pub fn max_depth(mut self, depth: u16) -> Self {
        self.limits.max_depth = depth;
        self
    }

    /// Longest message or text field in bytes (at least 16); longer text is truncated with a marker.
    pub fn max_text_len(mut self, bytes: usize) -> Self {
        self.limits.max_text_len = bytes;
        self
    }

    /// Most metadata entries per node; more are dropped and noted in `input_errors`.
    pub fn max_metadata_entries(mut self, n: usize) -> Self {
        self.limits.max_metadata_entries = n;
        self
    }

    /// Recent events kept per tracked node: the last `n` events logged inside it (in it or
    /// in untracked spans below it), together at most `max_bytes` (estimated heap; the oldest
    /// go first). `n = 0` turns them off. They show in the node's
    /// [`recent_events`](crate::ProgressLevel::recent_events), and a failure carries the
    /// node's events up to it ([`ErrorInfo::recent_events`](crate::ErrorInfo::recent_events)).
    /// `progress.*` events and `#[instrument(ret)]` returns are not kept; folded children
    /// keep none. An event's text (message and values together) is cut to a quarter of
    /// `max_bytes` (and each value to [`max_text_len`](Self::max_text_len)), so one event
    /// with a huge value cannot push out the lines before it.
    ///
    /// ```
    /// use tracing_progress::Builder;
    /// let builder = Builder::new().recent_events(32, 16 * 1024);
    /// ```
    pub fn recent_events(mut self, n: usize, max_bytes: usize) -> Self {
        self.limits.recent_events = n;
        self.limits.recent_event_bytes = max_bytes;
        self
    }

    /// Planned children kept as pending nodes per parent (default 1,000; see
    /// [`ProgressSpanExt::plan`](crate::ProgressSpanExt::plan)). Names past it, or past
    /// [`max_finished_nodes`](Self::max_finished_nodes) waiting slots in one operation, are
    /// counted in the parent's total and `planned_hidden` but hold no memory; the cut is
    /// noted in the parent's `input_errors` and the operation's `planned_dropped`.
    ///
    /// ```
    /// use tracing_progress::Builder;
    /// let builder = Builder::new().max_planned_children(100);
    /// ```
    pub fn max_planned_children(mut self, n: usize) -> Self {
        self.limits.max_planned_children = n;
        self
    }

    /// Least severe level kept as a recent event (default `INFO`: `DEBUG` and `TRACE` events
    /// are not kept).
    ///
    /// ```
    /// use tracing_progress::Builder;
    /// let builder = Builder::new().recent_events_level(tracing::Level::DEBUG);
    /// ```
    pub fn recent_events_level(mut self, level: tracing::Level) -> Self {
        self.limits.recent_event_level = level;
        self
    }

    /// Which ERROR-level signals fail a node (default [`FailOn::ReturnedErrors`]: the event
    /// `#[instrument(err)]` emits). Other ERROR events are kept as the node's
    /// [`handled_errors`](crate::ProgressLevel::handled_errors). Panics and
    /// [`fail`](crate::ProgressSpanExt::fail) always fail the node.
    ///
    /// ```
    /// use tracing_progress::{Builder, FailOn};
    /// // the behaviour before 0.2: any ERROR event fails the node it happens in
    /// let builder = Builder::new().fail_on(FailOn::ErrorEvents);
    /// ```
    pub fn fail_on(mut self, rule: FailOn) -> Self {
        self.fail_on = rule;
        self
    }

    /// Whether to chain a panic hook that keeps panic messages for spans closed by unwinding.
    /// Without it a panicking span still fails, with a generic message.
    pub fn capture_panics(mut self, on: bool) -> Self {
        self.capture_panics = on;
        self
    }

    /// Stall detection: a running node that reports progress is flagged
    /// [`stalled`](crate::ProgressLevel::stalled) when it has made no progress for `k` times its
    /// usual interval between updates (an average the store keeps per node). A node without
    /// progress of its own is flagged when it runs past the 95th percentile of the durations
    /// of completed nodes of its kind. `k` must be at least 1; default 5.
    pub fn stall_factor(mut self, k: f64) -> Self {
        self.limits.stall_factor = k;
        self
    }

    /// How often the store's background tick observes the progress of running nodes for
    /// estimates and stall detection (at least 10 ms). `None`: no tick thread; estimates only
    /// advance when [`Store::tick_estimates`](crate::Store::tick_estimates) is called.
    ///
    /// Default: 250 ms, or `None` with a [custom clock](Builder::clock) (tests decide when
    /// time is observed). Reading the store never advances estimates, so what a snapshot shows
    /// does not depend on how often something looks.
    pub fn estimate_interval(mut self, interval: Option<Duration>) -> Self {
        self.estimate_interval = Some(interval);
        self
    }

    /// Replaces the store's time source, for deterministic tests of timing, estimates and
    /// stall detection. `now` returns the time elapsed since an arbitrary fixed start and must
    /// never go backwards; wall-clock timestamps become the system time at `build` plus `now()`.
    /// Every timestamp the layer and the store take comes from it. Default: a monotonic clock
    /// (the TSC where it is invariant).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::Duration;
    /// # fn docs() -> Result<(), tracing_progress::BuildError> {
    /// let fake_ms = Arc::new(AtomicU64::new(0));
    /// let read = fake_ms.clone();
    /// let (layer, store) = tracing_progress::Builder::new()
    ///     .clock(move || Duration::from_millis(read.load(Ordering::SeqCst)))
    ///     .build::<tracing_subscriber::Registry>()?;
    /// let t0 = store.now_us();
    /// fake_ms.fetch_add(1_500, Ordering::SeqCst); // 1.5 s pass, instantly
    /// assert_eq!(store.now_us() - t0, 1_500_000);
    /// # Ok(()) }
    /// # docs().unwrap();
    /// ```
    pub fn clock(mut self, now: impl Fn() -> Duration + Send + Sync + 'static) -> Self {
        self.clock = Some(std::sync::Arc::new(now));
        self
    }

    /// Checks the settings and builds the layer and its store.
    pub fn build<S>(self) -> Result<(ProgressLayer<S>, Store), BuildError>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let l = &self.limits;
        let err = |m: &str| Err(BuildError(m.to_string()));
        if l.history_limit == 0 {
            return err("history_limit must be at least 1");
        }
        if l.max_finished_children == 0 || l.max_finished_nodes == 0 {
            return err("max_finished_children and max_finished_nodes must be at least 1");
        }
        if !(1..=64).contains(&l.max_depth) {
            return err("max_depth must be between 1 and 64 (JSON readers limit nesting)");
        }
        if l.max_text_len < 16 {
            return err("max_text_len must be at least 16 bytes");
        }
        if !(l.stall_factor >= 1.0 && l.stall_factor.is_finite()) {
            return err("stall_factor must be a finite number of at least 1");
        }
        for rule in &self.rules {
            rule.validate().map_err(BuildError)?;
        }
        let estimate_interval = match self.estimate_interval {
            Some(interval) => interval,
            None if self.clock.is_some() => None,
            None => Some(DEFAULT_ESTIMATE_INTERVAL),
        };
        if estimate_interval.is_some_and(|i| i < Duration::from_millis(10)) {
            return err("estimate_interval must be at least 10 ms");
        }
        if let Some(e) = self.invalid {
            return Err(BuildError(e));
        }
        #[cfg(feature = "resources")]
        if self
            .resources
            .is_some_and(|interval| interval < Duration::from_millis(10))
        {
            return err("sample_resources needs an interval of at least 10 ms");
        }
        let store = match self.clock {
            Some(now) => StoreInner::with_clock(self.limits, crate::store::Clock::from_fn(now)),
            None => StoreInner::new(self.limits),
        };
        let mut exporters = Exporters::default();
        for make in &self.exporters {
            exporters.push(make(Store::from_inner(store.clone())));
        }
        #[cfg(feature = "sqlite")]
        if let Some(config) = &self.history_file {
            let handle = Store::from_inner(store.clone());
            exporters.push(crate::sqlite::install(config, &handle).map_err(BuildError)?);
        }
        #[cfg(feature = "metrics")]
        if let Some(export) = &self.metrics {
            let handle = Store::from_inner(store.clone());
            exporters.push(crate::metrics::install(export, &handle).map_err(BuildError)?);
        }
        // A child process whose parent asked for its progress (see `crate::process`).
        #[cfg(all(feature = "process", unix))]
        if let Some(e) = crate::process::install_child(&Store::from_inner(store.clone())) {
            exporters.push(e);
        }
        let layer = ProgressLayer::new(
            store.clone(),
            Classifier::new(self.rules),
            self.capture_panics,
            self.fail_on,
            exporters,
        );
        if let Some(interval) = estimate_interval {
            crate::store::spawn_ticker(&store, interval);
        }
        #[cfg(feature = "resources")]
        if let Some(interval) = self.resources {
            crate::resources::spawn_sampler(std::sync::Arc::downgrade(&store), interval);
        }
        Ok((layer, Store::from_inner(store)))
    }
}

/// The layer and store with default settings (no rules: spans with `progress.*` fields).
///
/// ```
/// use tracing_subscriber::prelude::*;
/// let (layer, store) = tracing_progress::layer();
/// tracing_subscriber::registry().with(layer).with(tracing_subscriber::fmt::layer()).init();
/// ```
pub fn layer<S>() -> (ProgressLayer<S>, Store)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    match Builder::new().build() {
        Ok(pair) => pair,
        // The defaults are valid; this arm only exists so that no path can panic.
        Err(_) => {
            let store = StoreInner::new(Limits::default());
            (
                ProgressLayer::new(
                    store.clone(),
                    Classifier::new(Vec::new()),
                    true,
                    FailOn::default(),
                    Exporters::default(),
                ),
                Store::from_inner(store),
            )
        }
    }
}
