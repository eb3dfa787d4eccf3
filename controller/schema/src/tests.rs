use devplane_api::all_crds;
use devplane_api::v1alpha1::Device;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn crd_schema(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .and_then(|s| s.open_api_v3_schema)
        .expect("schema");
    serde_json::to_value(schema).expect("serializes")
}

fn device_schema() -> CompiledSchema {
    CompiledSchema::new(&crd_schema(Device::crd())).expect("Device schema compiles")
}

fn device(spec: Value) -> Value {
    json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device", "metadata": {"name": "d", "namespace": "n"}, "spec": spec})
}

fn messages(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn every_devplane_crd_schema_compiles() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        CompiledSchema::new(&crd_schema(crd)).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
    }
}

#[test]
fn non_structural_schemas_are_refused_with_paths() {
    let bad = json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "x"},
            "ref": {"type": "string", "$ref": "#/x"},
            "both": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
            "list": {"type": "array"},
            "re": {"type": "string", "pattern": "("},
            "keyed": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"},
        }
    });
    let errors = Schema::parse(&bad).expect_err("not structural");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "openAPIV3Schema.properties[both].additionalProperties",
            "openAPIV3Schema.properties[keyed].x-kubernetes-list-map-keys",
            "openAPIV3Schema.properties[list].items",
            "openAPIV3Schema.properties[re].pattern",
            "openAPIV3Schema.properties[ref].$ref",
            "openAPIV3Schema.properties[untyped].type",
        ]
    );
    assert!(
        Schema::parse(&json!({"type": "string"})).is_err(),
        "the root must be an object"
    );
}

#[test]
fn a_wrong_type_is_reported_like_the_api_server_does() {
    let schema = device_schema();
    let errors = schema.validate(&device(json!({"modelRef": {"name": 5}})));
    assert_eq!(
        messages(&errors),
        [
            "spec.modelRef.name: Invalid value: 5: spec.modelRef.name in body must be of type string: \"integer\""
        ]
    );
    assert_eq!(errors[0].kind.reason(), "FieldValueInvalid");
}

#[test]
fn required_enum_length_and_set_rules_are_enforced() {
    let schema = device_schema();
    let errors = schema.validate(&device(json!({
        "lifecycle": "Retired",
        "connection": {"direct": {"protocols": ["mqtt", "mqtt", "ftp"]}},
        "modelRef": {"name": ""},
    })));
    assert_eq!(
        messages(&errors),
        [
            "spec.connection.direct.protocols[2]: Unsupported value: \"ftp\": supported values: \"mqtt\", \"http\", \"coap\"",
            "spec.connection.direct.protocols[1]: Duplicate value: \"mqtt\"",
            "spec.lifecycle: Unsupported value: \"Retired\": supported values: \"Planned\", \"Servicing\", \"Maintenance\", \"Decommissioned\"",
            "spec.modelRef.name: Invalid value: \"\": spec.modelRef.name in body should be at least 1 chars long",
        ]
    );
    let errors = schema.validate(&device(json!({})));
    assert_eq!(messages(&errors), ["spec.modelRef: Required value"]);
    let errors = schema.validate(&json!({"apiVersion": "iot.devplane.io/v1alpha1", "kind": "Device", "metadata": {"name": "x"}}));
    assert_eq!(messages(&errors), ["spec: Required value"]);
}

#[test]
fn patterns_bounds_items_and_formats_are_enforced() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {
            "version": {"type": "string", "pattern": "^[0-9]+$"},
            "count": {"type": "integer", "minimum": 1, "maximum": 3, "format": "int32"},
            "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
            "when": {"type": "string", "format": "date-time"},
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}}}},
            "port": {"x-kubernetes-int-or-string": true},
        }
    }))
    .expect("compiles");
    let errors = schema.validate(&json!({
        "version": "v1", "count": 7, "ratio": 0, "tags": ["a", "b", "long"], "when": "noon",
        "conditions": [{"type": "Ready"}, {"type": "Ready"}], "port": true,
    }));
    assert_eq!(
        messages(&errors),
        [
            "conditions[1]: Duplicate value: \"Ready\"",
            "count: Invalid value: 7: count in body should be less than or equal to 3",
            "port: Invalid value: true: port in body must be of type integer or string: \"boolean\"",
            "ratio: Invalid value: 0: ratio in body should be greater than 0",
            "tags: Too many: 3: must have at most 2 items",
            "tags[2]: Too long: may not be more than 3 bytes",
            "version: Invalid value: \"v1\": version in body should match '^[0-9]+$'",
            "when: Invalid value: \"noon\": when in body must be of type date-time: \"noon\"",
        ]
    );
    assert!(
        schema
            .validate(&json!({"when": "2026-11-25T10:00:00Z", "port": "http", "count": 2}))
            .is_empty()
    );
}

#[test]
fn a_value_that_is_not_base64_is_refused_without_being_repeated() {
    let schema = CompiledSchema::new(&json!({
        "type": "object",
        "properties": {"data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}},
    }))
    .expect("compiles");
    let errors = schema.validate(&json!({"data": {"password": "hunter2!"}}));
    assert_eq!(
        messages(&errors),
        ["data[password]: Invalid value: data[password] in body must be of type byte"]
    );
    assert!(errors.iter().all(|e| e.value.is_none()));
}

#[test]
fn unknown_fields_are_pruned_and_reported_with_their_paths() {
    let schema = device_schema();
    let mut object = device(
        json!({"modelRef": {"name": "m", "colour": "red"}, "extra": 1, "attributes": {"anything": {"goes": true}}}),
    );
    object["metadata"]["bogus"] = json!(1);
    object["status"] = json!({"phase": "Planned", "mood": "happy"});
    let unknown = schema.prune(&mut object);
    assert_eq!(
        unknown,
        [
            "metadata.bogus",
            "spec.extra",
            "spec.modelRef.colour",
            "status.mood"
        ]
    );
    assert_eq!(object["spec"]["modelRef"], json!({"name": "m"}));
    assert_eq!(
        object["spec"]["attributes"],
        json!({"anything": {"goes": true}}),
        "preserve-unknown-fields keeps values"
    );
    assert_eq!(object["apiVersion"], "iot.devplane.io/v1alpha1");
    assert!(object["metadata"].get("bogus").is_none());
}

#[test]
fn defaults_fill_absent_fields_and_replace_nulls() {
    let schema = device_schema();
    let mut object = device(json!({"modelRef": {"name": "m"}, "lifecycle": null}));
    let admission = schema.admit(&mut object, None);
    assert_eq!(admission, Admission::default());
    assert_eq!(object["spec"]["lifecycle"], "Servicing");
    assert_eq!(object["spec"]["connection"], json!({}));
}

#[test]
fn cel_transition_rules_run_on_update_only() {
    let schema = device_schema();
    let old = device(json!({"modelRef": {"name": "m"}, "lifecycle": "Decommissioned"}));
    let mut new = device(json!({"modelRef": {"name": "m"}, "lifecycle": "Servicing"}));
    let admission = schema.admit(&mut new.clone(), None);
    assert!(admission.errors.is_empty(), "a create has no old object");
    let admission = schema.admit(&mut new, Some(&old));
    assert_eq!(
        messages(&admission.errors),
        [
            "spec.lifecycle: Invalid value: \"Servicing\": lifecycle Decommissioned is terminal: delete and re-create the object to use it again"
        ]
    );
}

#[test]
fn cel_rules_do_not_run_when_the_schema_already_failed() {
    let schema = device_schema();
    let mut object = device(
        json!({"modelRef": {"name": "m"}, "connection": {"direct": {}, "gatewayRef": {"name": 1}}}),
    );
    let admission = schema.admit(&mut object, None);
    assert_eq!(admission.errors.len(), 1, "{:?}", admission.errors);
    let mut object = device(
        json!({"modelRef": {"name": "m"}, "connection": {"direct": {}, "gatewayRef": {"name": "g"}}}),
    );
    let admission = schema.admit(&mut object, None);
    assert_eq!(
        messages(&admission.errors),
        ["spec.connection: Invalid value: connection takes either direct or gatewayRef, not both"]
    );
}
