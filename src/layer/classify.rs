//! Which spans are tracked, decided once per callsite.
//!
//! A span is tracked when its callsite declares a `progress.*` field or matches a
//! [`TrackRule`]. The reject path for untracked spans is a scan of the field names plus the
//! rules' string comparisons, with no lock and no allocation; the per-callsite [`SpanClass`]
//! (interned names for a tracked callsite) is built once and cached by metadata address.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tracing_core::Metadata;

use super::visitor::sanitize;
use crate::store::Callsite;

/// Prefix of the reserved field namespace.
pub(crate) const PREFIX: &str = "progress.";

/// A rule that tracks spans without editing them: match by span name and/or target.
///
/// With no `level`, the level type is the span name. With no `name_field`, a node's name is
/// `progress.name` if present, else the span name.
///
/// ```
/// use tracing_progress::TrackRule;
/// // every `process_song` span is a "song", named after its `title` argument
/// let rule = TrackRule::span("process_song").level("song").name_field("title");
/// // every span in a module, level type = span name
/// let all = TrackRule::target("my_app::pipeline");
/// ```
#[derive(Clone, Debug)]
pub struct TrackRule {
    span_name: Option<String>,
    target_prefix: Option<String>,
    level: Option<String>,
    operation: Option<String>,
    /// Plain span fields that play a progress role, e.g. `("n_files", Role::Total)`.
    fields: Vec<(String, Role)>,
}

/// What a plain (non-`progress.*`) field means for a node, from a [`TrackRule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Role {
    /// Metadata only.
    #[default]
    None,
    Name,
    Total,
    Current,
    Message,
    Unit,
}

impl TrackRule {
    /// Tracks spans with exactly this name (from `#[instrument]`, the function name).
    pub fn span(name: impl Into<String>) -> Self {
        TrackRule {
            span_name: Some(name.into()),
            target_prefix: None,
            level: None,
            operation: None,
            fields: Vec::new(),
        }
    }

    /// Tracks every span in this module or below it: the target is `prefix` or starts with
    /// `prefix::` (so `app::blocks` does not match `app::blocks_legacy`).
    pub fn target(prefix: impl Into<String>) -> Self {
        TrackRule {
            span_name: None,
            target_prefix: Some(prefix.into()),
            level: None,
            operation: None,
            fields: Vec::new(),
        }
    }

    /// Also requires the target to be in this module or below it (as [`target`](Self::target)).
    pub fn in_target(mut self, prefix: impl Into<String>) -> Self {
        self.target_prefix = Some(prefix.into());
        self
    }

    /// Level type for matching spans (default: the span name).
    pub fn level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }

    /// Takes the node's display name from this field (e.g. a function argument). Debug
    /// formatting is undone: a `PathBuf` or `String` argument shows as the text itself.
    pub fn name_field(self, field: impl Into<String>) -> Self {
        self.field_role(field, Role::Name)
    }

    /// Takes the node's total (units expected) from this field, e.g. `n_files`.
    ///
    /// ```
    /// use tracing_progress::TrackRule;
    /// // `#[instrument] fn import(dir: &Path, n_files: usize)`: a percentage with no edits
    /// let rule = TrackRule::span("import").total_field("n_files").name_field("dir");
    /// ```
    pub fn total_field(self, field: impl Into<String>) -> Self {
        self.field_role(field, Role::Total)
    }

    /// Takes the node's units done from this field (when recorded with `span.record`).
    pub fn current_field(self, field: impl Into<String>) -> Self {
        self.field_role(field, Role::Current)
    }

    /// Takes the node's message from this field.
    pub fn message_field(self, field: impl Into<String>) -> Self {
        self.field_role(field, Role::Message)
    }

    /// Takes the unit of the node's counts from this field.
    pub fn unit_field(self, field: impl Into<String>) -> Self {
        self.field_role(field, Role::Unit)
    }

    fn field_role(mut self, field: impl Into<String>, role: Role) -> Self {
        let field = field.into();
        self.fields.retain(|(f, r)| *f != field && *r != role);
        self.fields.push((field, role));
        self
    }

    /// Operation type when a matching span is the outermost tracked span.
    pub fn operation(mut self, operation_type: impl Into<String>) -> Self {
        self.operation = Some(operation_type.into());
        self
    }

    #[inline]
    fn matches(&self, meta: &Metadata<'_>) -> bool {
        self.span_name.as_deref().is_none_or(|n| n == meta.name())
            && self
                .target_prefix
                .as_deref()
                .is_none_or(|t| in_module(meta.target(), t))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.span_name.as_deref().is_some_and(str::is_empty) {
            return Err("TrackRule::span needs a non-empty span name".into());
        }
        if self.span_name.is_none() && self.target_prefix.as_deref().is_none_or(str::is_empty) {
            return Err("TrackRule::target needs a non-empty target prefix".into());
        }
        if self.level.as_deref().is_some_and(str::is_empty) {
            return Err("TrackRule::level needs a non-empty level type".into());
        }
        if let Some((f, _)) = self
            .fields
            .iter()
            .find(|(f, _)| f.is_empty() || f.starts_with(PREFIX))
        {
            return Err(format!(
                "TrackRule field names must be plain span fields, not {f:?} (progress.* fields work without a rule)"
            ));
        }
        Ok(())
    }
}

/// Whether `target` is the module `module` or inside it.
fn in_module(target: &str, module: &str) -> bool {
    match target.strip_prefix(module) {
        Some(rest) => rest.is_empty() || rest.starts_with("::") || module.ends_with("::"),
        None => false,
    }
}

/// A span's `progress.level`, as its fields said it.
pub(crate) enum SpanLevel {
    /// The first level a span of its callsite said.
    First,
    /// Another one, interned.
    Other(Arc<str>),
}

/// What the layer knows about one tracked callsite.
pub(crate) struct SpanClass {
    /// Span name (the default display name of nodes), target and the level of a span that
    /// names none (the rule's, else the span name), shared by its nodes.
    pub(crate) callsite: Arc<Callsite>,
    pub(crate) operation_type: Option<Arc<str>>,
    /// Interned field names, by field index.
    pub(crate) field_names: Box<[Arc<str>]>,
    /// What each field means for the node (from the matching rule), by field index.
    pub(crate) roles: Box<[Role]>,
    /// Last `progress.level` value seen here, reused when the next span says the same.
    last_level: Mutex<Option<Arc<str>>>,
    /// The first `progress.level` value seen here (set once).
    first_level: OnceLock<Arc<str>>,
    /// `callsite` at `first_level`, once a span was created at it.
    first_callsite: OnceLock<Arc<Callsite>>,
    /// `callsite` at the last other level a span was created at.
    last_callsite: Mutex<Option<Arc<Callsite>>>,
    /// Set once a span of this callsite emitted a return event (`#[instrument(ret)]`): from
    /// then on a span closing without one was dropped before it returned.
    returns: AtomicBool,
}

impl SpanClass {
    /// A span of this callsite reported its return.
    pub(crate) fn saw_return(&self) {
        if !self.returns.load(Ordering::Relaxed) {
            self.returns.store(true, Ordering::Relaxed);
        }
    }

    /// Whether spans of this callsite report their returns.
    pub(crate) fn returns(&self) -> bool {
        self.returns.load(Ordering::Relaxed)
    }

    /// The role of a plain field, by index.
    #[inline]
    pub(crate) fn role(&self, index: usize) -> Role {
        self.roles.get(index).copied().unwrap_or_default()
    }

    pub(crate) fn field_name(&self, index: usize, fallback: &str) -> Arc<str> {
        self.field_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| Arc::from(fallback))
    }

    /// The callsite's first `progress.level`, if `value` is the same (no lock: most callsites
    /// always say the same level).
    #[inline]
    fn same_level(&self, value: &str) -> Option<&Arc<str>> {
        self.first_level.get().filter(|f| ***f == *value)
    }

    /// The shared names of a span of this callsite at `level` (its `progress.level`, if it
    /// has one): no lock and no allocation for a span at the class's level or its first one.
    pub(crate) fn callsite_at(&self, level: Option<SpanLevel>) -> Arc<Callsite> {
        let level = match level {
            None => return self.callsite.clone(),
            Some(SpanLevel::First) => return self.first_callsite().clone(),
            Some(SpanLevel::Other(level)) => level,
        };
        if *level == *self.callsite.level_type {
            return self.callsite.clone();
        }
        if self
            .first_level
            .get()
            .is_some_and(|f| Arc::ptr_eq(f, &level))
        {
            return self.first_callsite().clone();
        }
        let mut last = self.last_callsite.lock();
        match &*last {
            Some(c) if c.level_type == level => c.clone(),
            _ => {
                let c = Arc::new(self.callsite.at_level(level));
                *last = Some(c.clone());
                c
            }
        }
    }

    /// `callsite` at the first `progress.level` seen here (`callsite` itself when that is the
    /// class's level, as for `info_span!("block", progress.level = "block")`).
    fn first_callsite(&self) -> &Arc<Callsite> {
        self.first_callsite
            .get_or_init(|| match self.first_level.get() {
                Some(first) if **first != *self.callsite.level_type => {
                    Arc::new(self.callsite.at_level(first.clone()))
                }
                _ => self.callsite.clone(),
            })
    }

    /// How a span's `progress.level` `value` reads here: the callsite's first level (no
    /// string kept: most callsites always say the same), else the interned value.
    pub(crate) fn span_level(&self, value: &str) -> SpanLevel {
        if self.same_level(value).is_some() {
            SpanLevel::First
        } else {
            SpanLevel::Other(self.intern_level(&sanitize(value, 128)))
        }
    }

    /// Interns a (sanitized) `progress.level` value.
    pub(crate) fn intern_level(&self, value: &str) -> Arc<str> {
        if let Some(first) = self.same_level(value) {
            return first.clone();
        }
        let mut last = self.last_level.lock();
        if self.first_level.get().is_none() {
            let l: Arc<str> = Arc::from(value);
            let _ = self.first_level.set(l.clone());
            *last = Some(l.clone());
            return l;
        }
        match &*last {
            Some(l) if &**l == value => l.clone(),
            _ => {
                let l: Arc<str> = Arc::from(value);
                *last = Some(l.clone());
                l
            }
        }
    }
}

/// Hashes callsite addresses: they are already unique, so one multiply spreads them (SipHash
/// would cost more than the rest of the lookup).
#[derive(Default)]
pub(crate) struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

type ClassCache = HashMap<usize, Arc<SpanClass>, BuildHasherDefault<AddressHasher>>;

pub(crate) struct Classifier {
    /// Unique per classifier (never reused), the key of the per-thread cache.
    id: u64,
    rules: Vec<TrackRule>,
    cache: RwLock<ClassCache>,
    /// Some callsite's span reported its return (`SpanClass::returns` is worth a look).
    any_returns: AtomicBool,
}

/// Entries of the per-thread class cache (direct-mapped by callsite address).
const THREAD_CLASSES: usize = 16;

/// A class once looked up per thread and callsite: `(classifier id, callsite address, class)`.
type ThreadClass = Option<(u64, usize, Arc<SpanClass>)>;

thread_local! {
    /// The last classes this thread looked up, so a new span of a known callsite costs no
    /// shared lock (whose cache line every thread creating spans would otherwise share).
    /// Bounded: a few entries per thread, replaced on collision.
    static CLASSES: std::cell::RefCell<[ThreadClass; THREAD_CLASSES]> =
        const { std::cell::RefCell::new([const { None }; THREAD_CLASSES]) };
}

impl Classifier {
    pub(crate) fn new(rules: Vec<TrackRule>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Classifier {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            rules,
            cache: RwLock::new(ClassCache::default()),
            any_returns: AtomicBool::new(false),
        }
    }

    /// The class of a tracked callsite from the thread's cache, else the shared one.
    #[inline]
    fn cached(&self, key: usize) -> Option<Arc<SpanClass>> {
        let slot = (key >> 4) % THREAD_CLASSES;
        let hit = CLASSES
            .try_with(|c| {
                let c = c.try_borrow().ok()?;
                match &c[slot] {
                    Some((id, k, class)) if *id == self.id && *k == key => Some(class.clone()),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if hit.is_some() {
            return hit;
        }
        let class = self.cache.read().get(&key)?.clone();
        let _ = CLASSES.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c[slot] = Some((self.id, key, class.clone()));
            }
        });
        Some(class)
    }

    /// Whether a callsite declares any `progress.*` field.
    #[inline]
    pub(crate) fn declares_progress(meta: &Metadata<'_>) -> bool {
        meta.fields().iter().any(|f| f.name().starts_with(PREFIX))
    }

    /// Whether spans of a callsite are tracked (no lock, no allocation).
    #[inline]
    pub(crate) fn tracks(&self, meta: &'static Metadata<'static>) -> bool {
        Self::declares_progress(meta) || self.rules.iter().any(|r| r.matches(meta))
    }

    /// `f` of a callsite's class, built on first use. The class is borrowed from the thread's
    /// cache when it is there: a span that keeps no class of its own (`Tracked` keeps its
    /// callsite) touches no reference count. `f` may run the user's `Debug` code, which may
    /// create spans: the cache is only borrowed shared meanwhile, and a nested lookup that
    /// cannot fill its slot reads the shared cache instead.
    #[inline]
    pub(crate) fn with_class<R>(
        &self,
        meta: &'static Metadata<'static>,
        mut f: impl FnMut(&SpanClass) -> R,
    ) -> R {
        let key = meta as *const Metadata<'static> as usize;
        let slot = (key >> 4) % THREAD_CLASSES;
        let hit = CLASSES
            .try_with(|c| {
                let c = c.try_borrow().ok()?;
                match &c[slot] {
                    Some((id, k, class)) if *id == self.id && *k == key => Some(f(class)),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        match hit {
            Some(r) => r,
            None => f(&self.class_of(meta)),
        }
    }

    /// A span of this callsite reported its return: from now on its spans that close without
    /// one were dropped (and closing spans look for return events at all).
    pub(crate) fn saw_return(&self, meta: &'static Metadata<'static>) {
        self.with_class(meta, SpanClass::saw_return);
        if !self.any_returns.load(Ordering::Relaxed) {
            self.any_returns.store(true, Ordering::Relaxed);
        }
    }

    /// Whether spans of a callsite report their returns (one load while no callsite of this
    /// classifier has reported one).
    #[inline]
    pub(crate) fn returns(&self, meta: &'static Metadata<'static>) -> bool {
        self.any_returns.load(Ordering::Relaxed) && self.with_class(meta, |c| c.returns())
    }

    /// The class of a callsite, built on first use: a tracked span's, or an event's (events
    /// are never tracked themselves, but their field names are interned the same way).
    pub(crate) fn class_of(&self, meta: &'static Metadata<'static>) -> Arc<SpanClass> {
        let key = meta as *const Metadata<'static> as usize;
        if let Some(class) = self.cached(key) {
            return class;
        }
        let class = Arc::new(self.build(meta));
        self.cache.write().entry(key).or_insert(class.clone());
        class
    }

    fn build(&self, meta: &'static Metadata<'static>) -> SpanClass {
        let rule = self.rules.iter().find(|r| r.matches(meta));
        let level = rule
            .and_then(|r| r.level.as_deref())
            .map(Arc::from)
            .unwrap_or_else(|| Arc::from(meta.name()));
        SpanClass {
            callsite: Arc::new(Callsite::new(meta.name(), meta.target(), level)),
            operation_type: rule.and_then(|r| r.operation.as_deref()).map(Arc::from),
            field_names: meta.fields().iter().map(|f| Arc::from(f.name())).collect(),
            roles: meta
                .fields()
                .iter()
                .map(|f| {
                    rule.and_then(|r| r.fields.iter().find(|(name, _)| name == f.name()))
                        .map_or(Role::None, |(_, role)| *role)
                })
                .collect(),
            last_level: Mutex::new(None),
            first_level: OnceLock::new(),
            first_callsite: OnceLock::new(),
            last_callsite: Mutex::new(None),
            returns: AtomicBool::new(false),
        }
    }
}
