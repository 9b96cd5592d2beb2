//! What the test binaries share. Each file under `tests/` is its own crate and takes this in
//! with `mod support;` (`#[path = "../support/mod.rs"]` from `tests/progress/`).
//!
//! * [`browser`]: Chromium and the node driver scripts, for the page and Jaeger UI tests.
//! * [`clock`]: a clock moved by hand, for [`Builder::clock`](tracing_progress::Builder::clock).
//! * [`cpu`]: this thread's CPU time, for comparisons on a loaded machine.
//! * [`examples`]: the example binaries `cargo test` builds.
//! * [`ops`]: a store fed by a real layer, operations run to their end or held open.
//! * [`otlp_sink`]: an OTLP/HTTP endpoint that accepts and counts metric pushes.
//! * [`trees`]: code run under our layer, and compact descriptions of the trees it made.

// Every test binary uses only some of these helpers: the others would be dead code and unused
// re-exports there.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod clock;
pub mod cpu;
pub mod examples;
pub mod ops;
pub mod otlp_sink;
pub mod trees;

use std::time::{Duration, Instant};

pub use clock::ManualClock;
pub use examples::example_binary;
pub use ops::{Held, Traced};
pub use trees::{node, only_finished, shape, with_layer};

/// How long anything a test waits for may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `cond` until it holds; fails the test after [`TIMEOUT`].
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
