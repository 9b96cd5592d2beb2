//! Code run under our layer, and compact descriptions of the trees it made.

use std::sync::Arc;

use tracing_progress::{Builder, ProgressLevel, ProgressState, Store};
use tracing_subscriber::Registry;
use tracing_subscriber::prelude::*;

/// Runs `f` with registry + our layer (built from `builder`) as the default subscriber.
pub fn with_layer<R>(builder: Builder, f: impl FnOnce(&Store) -> R) -> (Store, R) {
    let (layer, store) = builder.build::<Registry>().expect("valid builder");
    let subscriber = tracing_subscriber::registry().with(layer);
    let out = tracing::subscriber::with_default(subscriber, || f(&store));
    (store, out)
}

/// Compact shape: `name[status](child,child)`; folded children as `+N type`.
pub fn shape(level: &ProgressLevel) -> String {
    let mut out = format!("{}[{}]", level.name, level.status);
    let mut parts: Vec<String> = level.children.iter().map(shape).collect();
    parts.extend(
        level
            .folded
            .iter()
            .map(|f| format!("+{} {}", f.count, f.level_type)),
    );
    if !parts.is_empty() {
        out.push('(');
        out.push_str(&parts.join(","));
        out.push(')');
    }
    out
}

/// The single finished operation in history.
#[track_caller]
pub fn only_finished(store: &Store) -> Arc<ProgressState> {
    let h = store.history(&Default::default());
    assert_eq!(
        h.len(),
        1,
        "expected one finished operation, got {}",
        h.len()
    );
    assert!(store.active().is_empty(), "nothing should still be active");
    h[0].clone()
}

/// Finds a node by name anywhere in the tree.
#[track_caller]
pub fn node<'a>(state: &'a ProgressState, name: &str) -> &'a ProgressLevel {
    state
        .root
        .walk()
        .find(|l| &*l.name == name)
        .unwrap_or_else(|| panic!("no node named {name:?} in\n{state}"))
}
