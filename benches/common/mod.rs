//! The workload shared by the benches (`#[path]`-included: each bench is its own crate).

use tracing::info_span;
use tracing_progress::ProgressSpanExt;

/// A small operation: a setlist with 10 blocks of 10 `inc`s each (11 tracked spans).
pub fn small_operation() {
    let op = info_span!("setlist", progress.level = "setlist", progress.total = 10);
    op.in_scope(|| {
        for _ in 0..10 {
            let block = info_span!("block", progress.level = "block", progress.total = 10);
            block.in_scope(|| {
                for _ in 0..10 {
                    block.inc(1);
                }
            });
        }
    });
}
