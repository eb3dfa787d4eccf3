//! The GitOps example (examples/gitops) as its CI and an operator use it: `devplane validate`
//! over every rendered site, then against `devplane up` with real kubectl: server-side apply
//! with an applyset, pruning of what left the repository, no drift in `kubectl diff` while the
//! controllers write status, and a server-side dry run that changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Devplane, repo, stderr, stdout, wait_until};

/// A copy of examples/gitops to change and apply (the repository's own stays untouched).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            // std::fs::copy keeps the permission bits: the ci/ scripts stay executable.
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The fleet repository's CI scripts, run against one `devplane up`.
struct Fleet {
    repo: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Fleet {
    fn new(devplane: &Devplane) -> Fleet {
        let scratch = tempfile::tempdir().expect("temp dir");
        let repo_copy = scratch.path().join("fleet");
        copy_tree(&repo().join("examples/gitops"), &repo_copy);
        // kubectl's discovery cache lives under $HOME: one per test, for parallel runs.
        let home = scratch.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        Fleet {
            repo: repo_copy,
            kubeconfig: devplane.kubeconfig(),
            home,
            _scratch: scratch,
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.run_with(program, args, &[])
    }

    fn run_with(&self, program: &str, args: &[&str], env: &[(&str, PathBuf)]) -> Output {
        let program = if program.contains('/') {
            self.repo.join(program)
        } else {
            PathBuf::from(program)
        };
        Command::new(program)
            .args(args)
            .current_dir(&self.repo)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()
            .expect("runs")
    }

    fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?} failed:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// `ci/diff.sh SITE` must find nothing to change.
    fn assert_no_drift(&self, site: &str, when: &str) {
        let output = self.run("ci/diff.sh", &[site]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{when}: kubectl diff found drift in {site}:\n{}\n{}",
            stdout(&output),
            stderr(&output)
        );
        assert!(stdout(&output).trim().is_empty(), "{}", stdout(&output));
    }

    fn remove_document(&self, file: &str, name: &str) {
        let path = self.repo.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        let kept: Vec<&str> = text
            .split("\n---\n")
            .filter(|doc| !doc.contains(&format!("name: {name}\n")))
            .collect();
        assert!(
            kept.len() < text.split("\n---\n").count(),
            "{name} in {file}"
        );
        std::fs::write(&path, kept.join("\n---\n")).expect("write");
    }
}

/// Live objects of the fleet's kinds in a namespace, by `Kind/name`.
fn live(devplane: &Devplane, namespace: &str) -> BTreeMap<String, Value> {
    let list: Value = serde_json::from_str(&devplane.kubectl_ok(&[
        "get",
        "devicemodels,devices,gateways,onboardingbatches",
        "-n",
        namespace,
        "-o",
        "json",
    ]))
    .expect("a List");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                ),
                o.clone(),
            )
        })
        .collect()
}

/// What a repository controls of an object: spec, labels, annotations, and the generation
/// (which moves only when the spec does).
fn declared(object: &Value) -> Value {
    serde_json::json!({
        "spec": object["spec"],
        "labels": object["metadata"]["labels"],
        "annotations": object["metadata"]["annotations"],
        "generation": object["metadata"]["generation"],
    })
}

fn phases(devplane: &Devplane, namespace: &str) -> Vec<String> {
    devplane
        .kubectl_ok(&[
            "get",
            "devices",
            "-n",
            namespace,
            "-o",
            "jsonpath={.items[*].status.phase}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_fleet_repository_passes_its_ci_validation_and_a_broken_reference_fails_it() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let fleet = scratch.path().join("fleet");
    copy_tree(&repo().join("examples/gitops"), &fleet);
    let validate = |fleet: &Path| {
        Command::new(fleet.join("ci/validate.sh"))
            .env("DEVPLANE", env!("CARGO_BIN_EXE_devplane"))
            .output()
            .expect("ci/validate.sh runs")
    };
    let output = validate(&fleet);
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let report = stderr(&output);
    assert_eq!(
        report.matches("checked: no problems").count(),
        2,
        "{report}"
    );

    let devices = fleet.join("sites/south/devices.yaml");
    let text = std::fs::read_to_string(&devices).expect("read");
    std::fs::write(
        &devices,
        text.replace("{name: flow-meter}", "{name: flow-metre}"),
    )
    .expect("write");
    let output = validate(&fleet);
    assert!(
        !output.status.success(),
        "a broken model reference fails CI"
    );
    assert!(
        stdout(&output).contains("flow-metre"),
        "the finding names the reference:\n{}",
        stdout(&output)
    );
}

#[test]
fn applying_the_fleet_with_an_applyset_prunes_removed_devices_and_shows_no_drift() {
    let devplane = Devplane::start(&[]);
    let fleet = Fleet::new(&devplane);
    let north = "waterworks-north";
    for namespace in [north, "waterworks-south"] {
        devplane.kubectl_ok(&["create", "namespace", namespace]);
    }

    let applied = fleet.run_ok("ci/apply.sh", &["sites/north"]);
    assert!(
        applied.contains("device.iot.devplane.io/n2-outlet-flow serverside-applied"),
        "{applied}"
    );
    // The controllers are busy writing status, finalizers and batch devices right now.
    fleet.assert_no_drift("sites/north", "right after the apply");

    // Settled: 3 devices from Git and 4 from the batch, all provisioned.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let phases = phases(&devplane, north);
        if phases.len() == 7 && phases.iter().all(|p| p == "Provisioned") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every north device provisioned: {phases:?}\n{}",
            devplane.kubectl_ok(&[
                "get",
                "devices,devicemodels,gateways,onboardingbatches",
                "-n",
                north,
                "-o",
                "yaml"
            ])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet.assert_no_drift("sites/north", "once the controllers settled");

    // Plain `kubectl diff` differs only in the applyset label it does not know about (compared
    // without status, which controllers may write between kubectl's read and its dry run).
    let raw = fleet.run_with(
        "kubectl",
        &["diff", "--server-side", "-k", "sites/north"],
        &[("KUBECTL_EXTERNAL_DIFF", fleet.repo.join("ci/drift-diff.sh"))],
    );
    let text = stdout(&raw);
    let changed: Vec<&str> = text
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert!(
        changed
            .iter()
            .all(|l| l.contains("applyset.kubernetes.io/part-of")),
        "{text}\n{}",
        stderr(&raw)
    );

    // A server-side dry run of the same apply changes nothing anyone declared.
    let before = live(&devplane, north);
    let dry_run: Value = serde_json::from_str(&fleet.run_ok(
        "ci/apply.sh",
        &["sites/north", "--dry-run=server", "-o", "json"],
    ))
    .expect("the dry run's objects");
    let items = dry_run["items"].as_array().expect("a List");
    assert_eq!(
        items.len(),
        9,
        "3 models, 2 gateways, 3 devices and the batch from Git"
    );
    for item in items {
        let key = format!(
            "{}/{}",
            item["kind"].as_str().unwrap_or_default(),
            item["metadata"]["name"].as_str().unwrap_or_default()
        );
        let live = before.get(&key).unwrap_or_else(|| panic!("{key} is live"));
        assert_eq!(declared(item), declared(live), "{key} would change");
    }

    // A device removed from the repository is pruned; the batch's devices are not the
    // repository's and stay.
    fleet.remove_document("sites/north/devices.yaml", "n2-outlet-flow");
    let applied = fleet.run_ok("ci/apply.sh", &["sites/north"]);
    assert!(
        applied.contains("device.iot.devplane.io/n2-outlet-flow pruned"),
        "{applied}"
    );
    wait_until("the pruned device gone", Duration::from_secs(30), || {
        let output = devplane.kubectl(&["get", "device", "n2-outlet-flow", "-n", north]);
        !output.status.success() && stderr(&output).contains("NotFound")
    });
    let remaining = live(&devplane, north);
    for kept in [
        "Device/n1-outlet-flow",
        "Device/mains-01-pressure",
        "Device/mains-04-pressure",
        "Gateway/station-n2-rtu",
    ] {
        assert!(remaining.contains_key(kept), "{kept} kept");
    }
    fleet.assert_no_drift("sites/north", "after pruning");

    // The other site, with its model patch, applies cleanly beside it.
    fleet.run_ok("ci/apply.sh", &["sites/south"]);
    fleet.assert_no_drift("sites/south", "right after the apply");
    let models = live(&devplane, "waterworks-south");
    assert_eq!(
        models["DeviceModel/pump-station-rtu"]["spec"]["version"], "1.3.0",
        "the site's patch applies"
    );
}
