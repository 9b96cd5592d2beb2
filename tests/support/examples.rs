//! The example binaries `cargo test` builds next to the tests.

use std::path::PathBuf;

/// The target directory (honours `CARGO_TARGET_DIR`): `target/<profile>/deps/<test>` → `target`.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target dir above target/<profile>")
        .to_path_buf()
}

/// `target/<profile>`, from the running test binary's path.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("profile dir above target/<profile>/deps")
        .to_path_buf()
}

/// The example binary `name` (`target/<profile>/examples/<name>`); fails the test with what
/// to run when it was not built.
#[track_caller]
pub fn example_binary(name: &str) -> PathBuf {
    let path = profile_dir()
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
