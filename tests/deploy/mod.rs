//! The in-cluster path: `manifests/deploy` rendered with `kubectl kustomize` and checked object
//! by object (typed, cross-referenced, least privilege, checkov), its roles enforced by
//! `devplane up` on the controller and the front door, the Dockerfile (hadolint), the Tiltfile
//! (evaluated against stand-ins for Tilt) and the GitOps example against `devplane up` with
//! real kubectl. The tools come from tests/run; the tests install nothing.

mod gitops;
mod identities;
mod manifests;
mod scanners;
mod tilt;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{repo, stderr, stdout};

/// `kubectl kustomize DIR` (relative to the repository), as one YAML stream.
pub fn kustomize(dir: &str) -> String {
    let output = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl kustomize {dir} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// The documents of a YAML stream as JSON values (empty documents dropped).
pub fn documents(text: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let value: Value = serde_yaml::from_str(&current).expect("YAML document parses");
            if !value.is_null() {
                documents.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
}

/// A tool the tests need, on PATH or where tests/run installs it.
pub fn tool(name: &str) -> PathBuf {
    let on_path = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from(name);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cache/devplane/tools/bin").join(name);
    assert!(
        installed.exists(),
        "{name} is not installed: tests/run installs it (on PATH or in {})",
        installed.display()
    );
    installed
}
