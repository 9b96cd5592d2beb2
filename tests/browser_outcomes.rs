//! The page tells a run that completed with failures from a clean one (issue 9, defect 7),
//! checked in Debian's Chromium: a store fed by the real layer holds both, a real server
//! serves the page, and tests/browser/outcomes.test.mjs looks at the history table and cards.
//! Skips without Chromium/node/playwright-core locally; on CI (`CI` set) it must run.

mod support;

use std::time::Duration;

use tracing::info_span;
use tracing_progress::http::Server;
use tracing_progress::{Builder, OperationId, ProgressSpanExt};

use support::Traced;
use support::browser::{chromium, required, run_driver};
use support::examples::target_dir;

/// A setlist of three songs; song `failing` (if any) logs an error and fails.
fn setlist(traced: &Traced, name: &str, failing: Option<u64>) -> OperationId {
    tracing::dispatcher::with_default(&traced.dispatch, || {
        let op = info_span!(
            "setlist",
            progress.level = "setlist",
            progress.operation = "setlist_processing",
            progress.name = name,
            progress.total = 3u64
        );
        let id = op.operation_id().expect("tracked");
        op.in_scope(|| {
            for n in 1..=3u64 {
                let song = info_span!("song", progress.level = "song", progress.name = n);
                song.in_scope(|| {
                    if failing == Some(n) {
                        tracing::error!(song = n, "decoder exploded");
                    }
                });
            }
        });
        id
    })
}

#[test]
fn completed_with_failures_is_visibly_different_on_the_page() {
    let Some(chromium) = required(chromium(), "the outcomes page test") else {
        return;
    };
    let traced = Traced::new(Builder::new());
    let clean = setlist(&traced, "clean run", None);
    let partial = setlist(&traced, "run with a failed song", Some(2));
    let state = traced.store.get(partial).expect("kept in history");
    assert!(state.with_failures, "the store's own view: {state}");

    let server = Server::builder(traced.store.clone())
        .bind(([127, 0, 0, 1], 0))
        .poll_interval(Duration::from_millis(50))
        .spawn()
        .expect("server starts");
    let url = format!("http://{}/", server.local_addr());
    let (status, report) = run_driver(
        &chromium,
        "outcomes.test.mjs",
        &[
            &url,
            &clean.to_string(),
            &partial.to_string(),
            &target_dir().join("browser"),
        ],
        Duration::from_secs(120),
    );
    println!("{report}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the page check failed ({status:?}):\n{report}"
    );
}
