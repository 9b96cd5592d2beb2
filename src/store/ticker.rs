//! The store's background tick: advances estimates and stall detection of running nodes.
//!
//! One thread per store (named `tracing-progress-estimates`), started by
//! [`Builder::build`](crate::Builder::build) unless
//! [`Builder::estimate_interval`](crate::Builder::estimate_interval) is `None`. It holds only a
//! weak reference, so it ends within one interval of the last handle to the store going away,
//! and it runs with no `tracing` subscriber so nothing it does can feed back into the layer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::StoreInner;

/// Starts the tick thread; without a thread (spawn failed) estimates stay empty and
/// everything else keeps working.
pub(crate) fn spawn_ticker(store: &Arc<StoreInner>, interval: Duration) {
    let weak: Weak<StoreInner> = Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-estimates".into())
        .spawn(move || {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            loop {
                std::thread::sleep(interval);
                let Some(store) = weak.upgrade() else { return };
                store.tick_estimates();
            }
        });
    drop(spawned);
}
