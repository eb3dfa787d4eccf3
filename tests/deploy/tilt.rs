//! The Tiltfile, evaluated by a Starlark interpreter (starlark-pyo3) against recording
//! stand-ins for Tilt's functions (tests/python/tiltfile_check.py): every path it names
//! exists, its image is the one the manifests run, its resources group every object and
//! forward ports the containers expose.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{repo, stderr, stdout};

fn check(tiltfile: &std::path::Path) -> Output {
    Command::new("python3")
        .arg(repo().join("tests/python/tiltfile_check.py"))
        .arg(repo())
        .arg(tiltfile)
        .output()
        .expect("python3 runs")
}

#[test]
fn the_tiltfile_builds_the_image_the_manifests_run_and_names_only_what_exists() {
    let output = check(&repo().join("Tiltfile"));
    assert!(
        output.status.success(),
        "the Tiltfile check failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let summary: Value = serde_json::from_str(&stdout(&output)).expect("a JSON summary");
    assert_eq!(summary["images"], serde_json::json!(["devplane"]));
    let resources = &summary["resources"];
    for workload in [
        "devplane-controller",
        "devplane-frontdoor",
        "devplane-webhook",
    ] {
        assert_eq!(resources[workload]["workload"], workload, "{summary:#}");
    }
    // Device MQTT, device HTTP and applications' MQTT reach the developer's machine.
    let forwarded = resources["devplane-frontdoor"]["port_forwards"]
        .as_array()
        .expect("port forwards");
    for port in [1883, 8080, 1884] {
        assert!(forwarded.contains(&port.into()), "{port} in {forwarded:?}");
    }
    // The library and the examples are applied after the CRDs.
    for fleet in ["devplane-library", "examples"] {
        assert!(
            resources[fleet]["objects"].as_u64().unwrap_or_default() >= 10,
            "{summary:#}"
        );
    }
    let checks = summary["local_resources"]
        .as_array()
        .expect("local resources");
    assert!(checks.contains(&"cargo-clippy".into()), "{checks:?}");
}

#[test]
fn the_tiltfile_check_reports_a_missing_path_an_unknown_dependency_and_a_bad_port() {
    let original = std::fs::read_to_string(repo().join("Tiltfile")).expect("Tiltfile");
    let broken = original
        .replace(
            "kustomize('manifests/deploy')",
            "kustomize('manifests/deploy-typo')",
        )
        .replace(
            "'devplane-library', 'devplane-controller'",
            "'devplane-librar', 'devplane-controller'",
        );
    assert_ne!(broken, original, "the replacements apply");
    let scratch = tempfile::tempdir().expect("temp dir");
    let tiltfile = scratch.path().join("Tiltfile");
    std::fs::write(&tiltfile, broken).expect("write Tiltfile");
    let output = check(&tiltfile);
    let report = stdout(&output);
    assert!(!output.status.success(), "{report}");
    for expected in [
        "manifests/deploy-typo/kustomization.yaml does not exist",
        "depends on unknown resource 'devplane-librar'",
        "forwards to container port 1883",
    ] {
        assert!(report.contains(expected), "{expected} in:\n{report}");
    }
}
