//! Helpers shared by the test binaries that run the examples (`#[path]`-included, since each
//! file under tests/ is its own crate).

use std::path::PathBuf;

/// The example binary that `cargo test` builds next to the tests
/// (target/<profile>/deps/<test> → target/<profile>/examples/<name>).
#[track_caller]
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --all-features` (which builds the examples) or \
         `cargo build --all-features --example {name}`",
        path.display()
    );
    path
}
