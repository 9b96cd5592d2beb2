//! A panic hook the program sets *after* building the layer replaces ours (std cannot chain from
//! the outside). The first panic then says so instead of silently losing its message, our hook
//! is chained again in front of the program's, and later panics keep message and location
//! while the program's hook still runs. Its own binary: the hook is process-wide.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_progress::{Builder, Status};

use support::with_layer;

/// Runs one operation whose child panics (caught below the root); returns the child's error
/// message and location.
fn panicking_child(store_builder: Builder, message: &'static str) -> (String, Option<String>) {
    let (store, ()) = with_layer(store_builder, |_| {
        let root = info_span!("job", progress.level = "job");
        let _g = root.enter();
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let child = info_span!("step", progress.level = "step");
            let _g = child.enter();
            panic!("{message}");
        }));
    });
    let finished = store.history(&Default::default());
    let child = &finished[0].root.children[0];
    assert_eq!(child.status, Status::Failed);
    let error = child.error().expect("the child failed");
    (
        error.message.to_string(),
        error.location.as_deref().map(str::to_owned),
    )
}

#[test]
fn a_hook_set_after_the_layer_is_detected_and_chained_again() {
    // Build a layer first: it installs its hook.
    let _ = Builder::new().build::<tracing_subscriber::Registry>();
    let program_hook_runs = Arc::new(AtomicUsize::new(0));
    let runs = program_hook_runs.clone();
    std::panic::set_hook(Box::new(move |_| {
        runs.fetch_add(1, Ordering::SeqCst);
    }));

    let (message, location) = panicking_child(Builder::new(), "first");
    assert!(
        message.contains("not captured") && message.contains("replaced"),
        "{message}"
    );
    assert_eq!(location, None);
    assert_eq!(program_hook_runs.load(Ordering::SeqCst), 1);

    // The hook is chained again by a helper thread; later panics are captured.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (message, location) = panicking_child(Builder::new(), "second");
        if message == "second" {
            let location = location.expect("a location");
            assert!(location.starts_with("tests/panic_hook.rs:"), "{location}");
            break;
        }
        assert!(Instant::now() < deadline, "the hook was not chained again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        program_hook_runs.load(Ordering::SeqCst) >= 2,
        "the program's hook still runs after ours"
    );
}
