//! The Python `kubernetes` client (installed from PyPI by tests/run) against `devplane up`:
//! list, create, patch and watch custom resources, and a watch from a compacted
//! resourceVersion that must end in a 410 ERROR event.

use std::process::Command;

use crate::support::{Devplane, SMART_HOME, repo, stderr, stdout};

#[test]
fn the_python_kubernetes_client_lists_creates_patches_and_watches() {
    let devplane = Devplane::start(&["--history-revisions", "20"]);
    devplane.apply_examples(SMART_HOME);
    let output = Command::new("python3")
        .arg(repo().join("tests/python/client_check.py"))
        .arg(devplane.kubeconfig())
        .output()
        .expect("python3 runs");
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "python client check failed:\n{out}\n{}",
        stderr(&output)
    );
    for step in ["listed", "created", "patched", "watched", "expired"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("ok {step}"))),
            "step {step}:\n{out}"
        );
    }
}
