//! The `devplane crds` and `devplane validate` commands, run as a user runs them.

use std::path::Path;

use crate::support::{devplane, repo, stdout};

#[test]
fn crds_prints_exactly_the_files_under_crds() {
    let output = devplane(&["crds"]);
    assert!(output.status.success());
    let files: Vec<String> = devplane_api::all_crds()
        .iter()
        .map(|crd| {
            std::fs::read_to_string(repo().join("crds").join(devplane_api::crd_file_name(crd)))
                .expect("crd file")
        })
        .collect();
    assert_eq!(stdout(&output), files.join("---\n"));
}

#[test]
fn validate_accepts_the_examples() {
    let output = devplane(&["validate", "-f", "examples/"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}{stderr}", stdout(&output));
    assert!(stderr.contains("checked: no problems"), "{stderr}");
}

/// Copy the example files into a temporary directory, change one file with `edit`, validate the
/// copy.
fn validate_edited_examples(file: &str, edit: impl Fn(String) -> String) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(repo().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        // The example files only; examples/gitops/ is a repository of its own.
        if path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let text = if name == file { edit(text) } else { text };
        std::fs::write(dir.path().join(&name), text).expect("write copy");
    }
    let output = devplane(&["validate", "-f", dir.path().to_str().expect("utf-8 path")]);
    let text = stdout(&output).replace(&format!("{}/", dir.path().display()), "");
    (output.status.code().expect("exit code"), text)
}

fn replace_once(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is in the example");
    text.replacen(from, to, 1)
}

#[test]
fn validate_refuses_a_wrong_data_type_naming_file_object_and_field() {
    let (code, out) = validate_edited_examples("smart-home.yaml", |t| {
        replace_once(t, "room: living room", "room: 42")
    });
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "smart-home.yaml#2: Device smart-home/living-room-climate: spec.attributes.room: attribute \"room\": expected string, found integer"
    );
    let (code, out) = validate_edited_examples("smart-home.yaml", |t| {
        replace_once(t, "type: int, unit: h", "type: integer, unit: h")
    });
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("smart-home.yaml#1: DeviceModel smart-home/thermo-hygrometer: spec.events[0].outputs[0].dataType.type: Unsupported value: \"integer\""),
        "{out}"
    );
}

#[test]
fn validate_refuses_an_unknown_model() {
    let (code, out) = validate_edited_examples("datalogger-gateway.yaml", |t| {
        replace_once(
            t,
            "  modelRef: {name: modbus-datalogger}",
            "  modelRef: {name: modbus-logger}",
        )
    });
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "datalogger-gateway.yaml#3: Gateway metering/substation-logger: spec.modelRef: model metering/modbus-logger is not defined in \
         these manifests or the standard library"
    );
}

#[test]
fn validate_refuses_an_extends_cycle() {
    let (code, out) = validate_edited_examples("datalogger-gateway.yaml", |t| {
        replace_once(
            t,
            "    - {name: energy, namespace: devplane-library}\n",
            "    - {name: energy, namespace: devplane-library}\n    - {name: energy-meter}\n",
        )
    });
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "datalogger-gateway.yaml#2: DeviceModel metering/energy-meter: spec.extends[2]: extends cycle: metering/energy-meter → metering/energy-meter"
    );
}

#[test]
fn validate_refuses_an_illegal_lifecycle_value() {
    let (code, out) = validate_edited_examples("smart-home.yaml", |t| {
        replace_once(
            t,
            "  serialNumber: TH-000417\n",
            "  serialNumber: TH-000417\n  lifecycle: Retired\n",
        )
    });
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "smart-home.yaml#2: Device smart-home/living-room-climate: spec.lifecycle: Unsupported value: \"Retired\": supported values: \
         \"Planned\", \"Servicing\", \"Maintenance\", \"Decommissioned\""
    );
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let output = devplane(&["validate", "-f", "does/not/exist.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read does/not/exist.yaml"));
    assert!(Path::new(&repo()).join("examples").is_dir());
}
