//! Golden test: `crds/` holds exactly what `all_crds()` generates, and every CRD is a valid
//! structural `apiextensions.k8s.io/v1` CRD. `manifests/deploy/crds/` holds the same files plus
//! the kustomization that lists them: kustomize refuses files outside a kustomization's root
//! (symlinks included), and a kustomization.yaml inside `crds/` would break
//! `kubectl apply -f crds/`, so the install base gets its own generated copy.
//! `BLESS=1 cargo test -p devplane-api` rewrites both directories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use devplane_api::{all_crds, crd_file_name};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn repo_dir(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Every CRD file by name, as `all_crds()` renders it.
fn generated_crds() -> BTreeMap<String, String> {
    all_crds()
        .iter()
        .map(|crd| {
            let rendered = devplane_api::crds::render_yaml(crd).expect("render CRD");
            (crd_file_name(crd), rendered)
        })
        .collect()
}

/// Compare `dir` with `expected` (file name → content): the names of files that differ, are
/// missing or are extra. With `bless`, rewrite the directory instead.
fn compare_dir(dir: &Path, expected: &BTreeMap<String, String>, bless: bool) -> Vec<String> {
    let mut stale = Vec::new();
    if bless {
        std::fs::create_dir_all(dir).expect("create the directory");
    }
    for (name, content) in expected {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, content).expect("write file");
        } else if std::fs::read_to_string(&path).unwrap_or_default() != *content {
            stale.push(format!("{}", path.display()));
        }
    }
    let present: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in present {
        if !expected.contains_key(&name) {
            if bless {
                std::fs::remove_file(dir.join(&name)).expect("remove stale file");
            } else {
                stale.push(format!("{name} in {} (not generated)", dir.display()));
            }
        }
    }
    stale
}

#[test]
fn crds_directory_equals_the_generated_crds() {
    let bless = std::env::var_os("BLESS").is_some();
    let stale = compare_dir(&repo_dir("crds"), &generated_crds(), bless);
    assert!(
        stale.is_empty(),
        "crds/ is out of date with the types: {stale:?}; run `BLESS=1 cargo test -p devplane-api --test crds` and commit the result"
    );
}

#[test]
fn the_install_base_carries_the_same_crds_and_a_kustomization_listing_them() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut expected = generated_crds();
    let mut kustomization = String::from(
        "# Generated with the CRD files beside it from the Rust types (the golden test in\n\
         # controller/api/tests/crds.rs; `BLESS=1` rewrites them): the same files as crds/.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for name in expected.keys() {
        kustomization.push_str(&format!("  - {name}\n"));
    }
    expected.insert("kustomization.yaml".to_string(), kustomization);
    let stale = compare_dir(&repo_dir("manifests/deploy/crds"), &expected, bless);
    assert!(
        stale.is_empty(),
        "manifests/deploy/crds/ is out of date with the types: {stale:?}; run `BLESS=1 cargo test -p devplane-api --test crds` and commit the result"
    );
}

/// Parses the rendered YAML (which the golden test keeps equal to the files) back into
/// k8s-openapi's typed CRD.
#[test]
fn every_crd_deserializes_into_a_custom_resource_definition() {
    for crd in all_crds() {
        let text = devplane_api::crds::render_yaml(&crd).expect("render CRD");
        let parsed: CustomResourceDefinition =
            serde_yaml::from_str(&text).expect("CRD file parses");
        assert_eq!(parsed.spec.group, "iot.devplane.io");
        assert_eq!(parsed.spec.versions.len(), 1);
        let version = &parsed.spec.versions[0];
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has a status subresource",
            parsed.spec.names.kind
        );
        assert_eq!(
            parsed.spec.names.categories.as_deref(),
            Some(&["devplane".to_string()][..])
        );
        assert_eq!(
            parsed.spec.names.short_names.as_ref().map(Vec::len),
            Some(1)
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| !c.is_empty())
        );
    }
}

/// Walk a schema node; report nodes that neither have a type nor preserve unknown fields, and
/// the forbidden constructs of structural schemas.
fn structural_problems(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema node is not an object"));
        return;
    };
    let has_type = obj
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !has_type && !preserves && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref",
        "definitions",
        "$schema",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
    ] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_problems(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(child) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_problems(child, &format!("{path}[*]"), problems);
    }
    if let Some(items) = obj.get("items") {
        structural_problems(items, &format!("{path}[]"), problems);
    }
    if obj.get("type").and_then(Value::as_str) == Some("array") && !obj.contains_key("items") {
        problems.push(format!("{path}: array without items"));
    }
}

#[test]
fn every_schema_node_is_structural() {
    for crd in all_crds() {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("CRD has a schema");
        let value = serde_json::to_value(schema).expect("schema serializes");
        let mut problems = Vec::new();
        structural_problems(&value, &crd.spec.names.kind, &mut problems);
        assert!(
            problems.is_empty(),
            "{} is not structural: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn structural_check_catches_an_untyped_node() {
    let bad = serde_json::json!({"type": "object", "properties": {"x": {"description": "no type"}, "y": {"anyOf": [{"type": "string"}]}}});
    let mut problems = Vec::new();
    structural_problems(&bad, "Bad", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
}
