//! Helpers shared by the integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the devplane binary built for this test run.
pub fn devplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devplane"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("devplane runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
