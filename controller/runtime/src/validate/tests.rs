use std::path::PathBuf;

use super::*;
use devplane_core::naming::NameError;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn findings(report: &Report) -> Vec<String> {
    report.findings.iter().map(ToString::to_string).collect()
}

/// Validate one YAML text written to a temporary file named `name`.
fn validate_text(name: &str, yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    let report = validate_paths(&[path], false, true).expect("validates");
    findings(&report)
        .into_iter()
        .map(|f| f.replace(&dir.path().display().to_string(), "<dir>"))
        .collect()
}

#[test]
fn the_examples_and_the_library_validate_without_problems() {
    let paths = [repo().join("manifests/library"), repo().join("examples")];
    let report = validate_paths(&paths, false, false).expect("validates");
    assert_eq!(findings(&report), Vec::<String>::new());
    assert!(report.files >= 20, "{} files", report.files);
    assert!(report.objects >= 30, "{} objects", report.objects);
    // Namespaces are the only objects devplane does not check itself.
    assert!(
        report.unchecked.iter().all(|u| u.contains("Namespace")),
        "{:?}",
        report.unchecked
    );
}

#[test]
fn the_examples_validate_against_the_built_in_library() {
    let report = validate_paths(&[repo().join("examples")], false, true).expect("validates");
    assert_eq!(findings(&report), Vec::<String>::new());
}

#[test]
fn schema_errors_name_file_object_and_field() {
    let found = validate_text(
        "bad.yaml",
        r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: m, namespace: n}
spec:
  version: 1.0.0
  measurePoints:
    - identifier: level
      dataType: {type: integer}
      colour: blue
---
apiVersion: iot.devplane.io/v1alpha1
kind: Device
metadata: {name: d, namespace: n}
spec: {modelRef: {name: m}, lifecycle: Retired}
---
apiVersion: iot.devplane.io/v1beta1
kind: Device
metadata: {name: Bad_Name}
---
apiVersion: iot.devplane.io/v1alpha1
kind: Widget
metadata: {name: w}
---
kind: Device
"#,
    );
    assert_eq!(
        found,
        [
            "<dir>/bad.yaml#1: DeviceModel n/m: spec.measurePoints[0].colour: unknown field (not in the schema)",
            "<dir>/bad.yaml#1: DeviceModel n/m: spec.measurePoints[0].dataType.type: Unsupported value: \"integer\": supported values: \
             \"bool\", \"int\", \"float\", \"double\", \"string\", \"enum\", \"timestamp\", \"struct\", \"array\"",
            "<dir>/bad.yaml#2: Device n/d: spec.lifecycle: Unsupported value: \"Retired\": supported values: \"Planned\", \
             \"Servicing\", \"Maintenance\", \"Decommissioned\"",
            &*format!(
                "<dir>/bad.yaml#3: Device Bad_Name: metadata.name: Invalid value: \"Bad_Name\": {}",
                NameError::NotDns1123Subdomain
            ),
            "<dir>/bad.yaml#3: Device Bad_Name: apiVersion: iot.devplane.io/v1beta1 is not served; devplane serves iot.devplane.io/v1alpha1",
            "<dir>/bad.yaml#4: Widget w: kind: Widget is not a kind of iot.devplane.io/v1alpha1 (kinds: Application, Device, DeviceCommand, \
             DeviceModel, Gateway, OnboardingBatch, ProvisioningPolicy)",
            "<dir>/bad.yaml#5: Device (unnamed): apiVersion: Required value",
        ]
    );
}

#[test]
fn names_namespaces_labels_and_annotations_follow_the_api_servers_rules() {
    let found = validate_text(
        "names.yaml",
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: a..b, namespace: a.b}
---
apiVersion: v1
kind: Namespace
metadata: {name: a.b}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
  labels: {a.-b/key: v, key: -v, site: ""}
  annotations: {a/b/c: x, Example.com/Note: any text}
---
apiVersion: v1
kind: ConfigMap
metadata: {generateName: cm-}
---
apiVersion: v1
kind: ConfigMap
metadata: {}
"#,
    );
    let invalid = |source: &str, object: &str, field: &str, value: &str, problem: NameError| {
        format!(
            "<dir>/names.yaml#{source}: ConfigMap {object}: {field}: Invalid value: {value:?}: {problem}"
        )
    };
    assert_eq!(
        found,
        [
            invalid("1", "a.b/a..b", "metadata.name", "a..b", NameError::NotDns1123Subdomain),
            invalid("1", "a.b/a..b", "metadata.namespace", "a.b", NameError::NotDns1123Label),
            invalid("2", "a.b", "metadata.name", "a.b", NameError::NotDns1123Label)
                .replace("ConfigMap", "Namespace"),
            invalid("3", "cm", "metadata.labels", "a.-b/key", NameError::PrefixNotDns1123Subdomain),
            invalid("3", "cm", "metadata.labels", "-v", NameError::NotLabelValue),
            invalid("3", "cm", "metadata.annotations", "a/b/c", NameError::NotQualifiedName),
            "<dir>/names.yaml#5: ConfigMap (unnamed): metadata.name: Required value: name or generateName is required".into(),
        ]
    );
}

#[test]
fn broken_yaml_is_reported_with_its_location() {
    let found = validate_text("broken.yaml", "apiVersion: v1\nkind: [unclosed\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("<dir>/broken.yaml#1: (unparsed): not valid YAML:"),
        "{found:?}"
    );
    assert!(found[0].contains("line"), "{found:?}");
}

#[test]
fn lists_are_flattened_and_cel_rules_apply() {
    let found = validate_text(
        "list.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device", "metadata": {"name": "d", "namespace": "n"},
             "spec": {"modelRef": {"name": "temperature", "namespace": "devplane-library"},
                      "connection": {"direct": {}, "gatewayRef": {"name": "g"}}}}
        ]}"#,
    );
    assert_eq!(
        found,
        [
            "<dir>/list.json#1.items[0]: Device n/d: spec.connection: Invalid value: connection takes either direct or gatewayRef, not both"
        ]
    );
}

#[test]
fn an_empty_directory_or_missing_path_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        validate_paths(&[dir.path().to_path_buf()], false, true),
        Err(ValidateError::Empty(_))
    ));
    assert!(matches!(
        validate_paths(&[dir.path().join("nope.yaml")], false, true),
        Err(ValidateError::Read { .. })
    ));
}
