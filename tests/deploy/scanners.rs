//! Static scanners over what ships: checkov over the rendered install (base and production
//! overlay), hadolint over the Dockerfile.

use std::process::Command;

use serde_json::Value;

use super::{kustomize, tool};
use crate::support::{repo, stderr, stdout};

/// Failed checks (id, name, resource) and waivers without a reason, of checkov over one
/// rendered install.
fn checkov(dir: &str) -> (Vec<String>, Vec<String>, u64) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("rendered.yaml");
    std::fs::write(&file, kustomize(dir)).expect("write rendered manifests");
    // --skip-download: offline, nothing fetched from the vendor's platform (which is also where
    // severities would come from; without them, every failed check counts as high).
    let output = Command::new(tool("checkov"))
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "-f",
        ])
        .arg(&file)
        .current_dir(scratch.path())
        .output()
        .expect("checkov runs");
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| {
        panic!(
            "checkov's JSON ({e}):\n{}\n{}",
            stdout(&output),
            stderr(&output)
        )
    });
    let results = &report["results"];
    let failed = results["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} ({}; severity {})",
                c["check_id"].as_str().unwrap_or_default(),
                c["check_name"].as_str().unwrap_or_default(),
                c["resource"].as_str().unwrap_or_default(),
                c["severity"].as_str().unwrap_or("unknown"),
            )
        })
        .collect();
    let skipped = results["skipped_checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unexplained = skipped
        .iter()
        .filter(|c| {
            c["check_result"]["suppress_comment"]
                .as_str()
                .is_none_or(|reason| reason.trim().len() < 20)
        })
        .map(|c| format!("{} on {}", c["check_id"], c["resource"]))
        .collect();
    let passed = report["summary"]["passed"].as_u64().unwrap_or_default();
    (failed, unexplained, passed)
}

#[test]
fn checkov_finds_no_failed_check_in_the_install_and_every_waiver_has_a_reason() {
    for dir in [
        "manifests/deploy",
        "manifests/deploy/overlays/production-site",
    ] {
        let (failed, unexplained, passed) = checkov(dir);
        assert!(
            passed > 100,
            "{dir}: checkov ran its Kubernetes checks ({passed} passed)"
        );
        assert!(
            failed.is_empty(),
            "{dir}: checkov failed checks (fix them, or waive one with a \
             `checkov.io/skipN: ID=reason` annotation):\n{}",
            failed.join("\n")
        );
        assert!(
            unexplained.is_empty(),
            "{dir}: waivers without a written reason: {unexplained:?}"
        );
    }
}

#[test]
fn hadolint_finds_nothing_above_info_in_the_dockerfile() {
    let output = Command::new(tool("hadolint"))
        .args(["-f", "json", "Dockerfile"])
        .current_dir(repo())
        .output()
        .expect("hadolint runs");
    let findings: Value = serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("hadolint's JSON ({e}): {}", stderr(&output)));
    let serious: Vec<_> = findings
        .as_array()
        .expect("a list of findings")
        .iter()
        .filter(|f| !matches!(f["level"].as_str(), Some("info" | "style")))
        .collect();
    assert!(serious.is_empty(), "hadolint: {serious:#?}");
}

#[test]
fn the_image_builds_in_a_toolchain_stage_and_runs_as_non_root_on_distroless() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let from: Vec<_> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(from[0].contains("rust:") && from[0].contains(" AS build"));
    assert!(from[1].contains("gcr.io/distroless/cc-debian12:nonroot"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert_eq!(
        user.trim(),
        "65532:65532",
        "the user the manifests run as (runAsUser 65532)"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/devplane\"]"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/"));
}
