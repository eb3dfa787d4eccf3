use devplane_schema::Schema;
use serde_json::{Value, json};

use super::*;

const V1: &str = "example.com/v1";
const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";
const T2: &str = "2025-01-01T00:02:00Z";

fn schema() -> Schema {
    Schema::parse(&json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "size": {"type": "integer"},
                "color": {"type": "string"},
                "ports": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {
                        "name": {"type": "string"},
                        "port": {"type": "integer"},
                        "protocol": {"type": "string"}
                    }}
                },
                "endpoints": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "properties": {
                        "port": {"type": "integer"},
                        "protocol": {"type": "string", "default": "TCP"}
                    }}
                },
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},
                "selector": {
                    "type": "object",
                    "x-kubernetes-map-type": "atomic",
                    "additionalProperties": {"type": "string"}
                },
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }},
            "status": {"type": "object", "properties": {
                "phase": {"type": "string"},
                "conditions": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": {"type": "object", "properties": {
                        "type": {"type": "string"},
                        "status": {"type": "string"}
                    }}
                }
            }}
        }
    }))
    .expect("test schema parses")
}

fn widget(spec: Value) -> Value {
    json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": spec
    })
}

fn apply_as(live: Option<&Value>, config: &Value, manager: &str, now: &str) -> Value {
    apply(live, config, manager, false, Some(&schema()), None, V1, now).expect("apply succeeds")
}

fn update_as(old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    let mut new = new.clone();
    update(old, &mut new, manager, Some(&schema()), None, V1, now);
    new
}

fn managed_fields(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn entry(object: &Value, manager: &str, operation: &str) -> Option<Value> {
    managed_fields(object)
        .into_iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owned(object: &Value, manager: &str, operation: &str) -> Vec<String> {
    entry(object, manager, operation)
        .map(|e| {
            FieldSet::from_fields_v1(&e["fieldsV1"])
                .expect("stored fieldsV1 decodes")
                .paths()
        })
        .unwrap_or_default()
}

fn managers(object: &Value) -> Vec<(String, String)> {
    managed_fields(object)
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or_default().to_string(),
                e["operation"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("serializes")
}

// ---- fieldsV1 and field sets ----

#[test]
fn fields_v1_round_trips_fields_keys_values_and_dot_markers() {
    let encoded = json!({
        "f:metadata": {
            "f:labels": {".": {}, "f:app": {}},
            "f:finalizers": {"v:\"example.com/fin\"": {}}
        },
        "f:spec": {
            "f:args": {},
            "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}}
        },
        "f:status": {"f:items": {"i:0": {}}}
    });
    let set = FieldSet::from_fields_v1(&encoded).expect("decodes");
    assert_eq!(set.to_fields_v1(), encoded);
    assert_eq!(
        set.paths(),
        vec![
            ".metadata.finalizers[=\"example.com/fin\"]",
            ".metadata.labels",
            ".metadata.labels.app",
            ".spec.args",
            ".spec.ports[name=\"http\"]",
            ".spec.ports[name=\"http\"].name",
            ".spec.ports[name=\"http\"].port",
            ".status.items[0]",
        ]
    );
}

#[test]
fn fields_v1_keys_are_re_encoded_canonically() {
    let set = FieldSet::from_fields_v1(
        &json!({"f:ports": {"k:{\"protocol\": \"TCP\", \"port\": 53}": {}}}),
    )
    .expect("decodes");
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:ports": {"k:{\"port\":53,\"protocol\":\"TCP\"}": {}}})
    );
    assert_eq!(set.paths(), vec![".ports[port=53,protocol=\"TCP\"]"]);
}

#[test]
fn fields_v1_rejects_malformed_input() {
    for bad in [
        json!([]),
        json!({"x:foo": {}}),
        json!({"nope": {}}),
        json!({"f:a": 1}),
        json!({"k:[1]": {}}),
        json!({"k:{not json}": {}}),
        json!({"i:x": {}}),
        json!({"f:a": {"v:{": {}}}),
    ] {
        assert!(
            FieldSet::from_fields_v1(&bad).is_err(),
            "{bad} should not decode"
        );
    }
    let err = FieldSet::from_fields_v1(&json!({"f:a": {"q:b": {}}})).expect_err("bad prefix");
    assert_eq!(err.path, "f:a/q:b");
}

#[test]
fn set_operations_work_path_by_path() {
    let a = FieldSet::from_fields_v1(&json!({"f:spec": {".": {}, "f:a": {}, "f:b": {}}}))
        .expect("decodes");
    let b = FieldSet::from_fields_v1(&json!({"f:spec": {"f:b": {}, "f:c": {}}})).expect("decodes");
    assert_eq!(
        a.union(&b).to_fields_v1(),
        json!({"f:spec": {".": {}, "f:a": {}, "f:b": {}, "f:c": {}}})
    );
    assert_eq!(
        a.difference(&b).to_fields_v1(),
        json!({"f:spec": {".": {}, "f:a": {}}})
    );
    assert_eq!(
        a.intersection(&b).to_fields_v1(),
        json!({"f:spec": {"f:b": {}}})
    );
    assert!(a.intersection(&FieldSet::new()).is_empty());
    assert!(a.difference(&a).is_empty());
    assert!(!a.is_empty());
    for (x, y) in [(&a, &b), (&b, &a), (&a, &a)] {
        let mut in_place = x.clone();
        in_place.subtract(y);
        assert_eq!(in_place, x.difference(y));
    }
}

#[test]
fn from_object_tracks_map_list_items_by_key_set_values_by_value_and_atomic_nodes_whole() {
    let object = widget(json!({
        "size": 3,
        "ports": [{"name": "http", "port": 80}],
        "tags": ["a", "b"],
        "args": ["--x", "--y"],
        "selector": {"app": "x"},
        "env": {"A": "1"}
    }));
    let set = FieldSet::from_object(&object, Some(&schema()));
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:spec": {
            "f:args": {},
            "f:env": {"f:A": {}},
            "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
            "f:selector": {},
            "f:size": {},
            "f:tags": {"v:\"a\"": {}, "v:\"b\"": {}}
        }})
    );
}

#[test]
fn from_object_fills_missing_key_fields_from_schema_defaults() {
    let object = widget(json!({"endpoints": [{"port": 53}]}));
    let set = FieldSet::from_object(&object, Some(&schema()));
    assert_eq!(
        set.paths(),
        vec![
            ".spec.endpoints[port=53,protocol=\"TCP\"]",
            ".spec.endpoints[port=53,protocol=\"TCP\"].port",
        ]
    );
}

#[test]
fn from_object_deduces_granular_maps_and_atomic_lists_without_schema_information() {
    let object = widget(json!({"extra": {"a": {"b": 1}, "list": [1, 2], "empty": {}}}));
    let set = FieldSet::from_object(&object, Some(&schema()));
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:spec": {"f:extra": {
            "f:a": {".": {}, "f:b": {}},
            "f:empty": {},
            "f:list": {}
        }}})
    );

    // No schema at all: top-level fields are struct fields, what is below deduced map entries.
    let set = FieldSet::from_object(
        &json!({"kind": "K", "data": {"a": "1"}, "spec": {"x": {"y": 1}, "l": [{"a": 1}]}}),
        None,
    );
    assert_eq!(
        set.to_fields_v1(),
        json!({"f:data": {"f:a": {}}, "f:spec": {"f:l": {}, "f:x": {".": {}, "f:y": {}}}})
    );
}

#[test]
fn from_object_uses_built_in_object_meta_and_skips_never_tracked_fields() {
    let object = json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {
            "name": "w",
            "namespace": "default",
            "uid": "1234",
            "resourceVersion": "7",
            "generation": 2,
            "creationTimestamp": T0,
            "selfLink": "/x",
            "managedFields": [{"manager": "m"}],
            "generateName": "w-",
            "labels": {"app": "x"},
            "annotations": {"a": "b"},
            "finalizers": ["example.com/fin"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u1", "controller": true}]
        }
    });
    // The schema's own `metadata: {type: object}` does not change how metadata is tracked.
    let expected = json!({"f:metadata": {
        "f:annotations": {"f:a": {}},
        "f:finalizers": {"v:\"example.com/fin\"": {}},
        "f:generateName": {},
        "f:labels": {"f:app": {}},
        "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {
            ".": {}, "f:apiVersion": {}, "f:controller": {}, "f:kind": {}, "f:name": {}, "f:uid": {}
        }}
    }});
    assert_eq!(
        FieldSet::from_object(&object, Some(&schema())).to_fields_v1(),
        expected
    );
    assert_eq!(
        FieldSet::from_object(&object, None).to_fields_v1(),
        expected
    );
}

#[test]
fn paths_name_map_list_items_by_key_and_set_items_by_value() {
    let object = json!({
        "metadata": {"finalizers": ["f"]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    assert_eq!(
        FieldSet::from_object(&object, Some(&schema())).paths(),
        vec![
            ".metadata.finalizers[=\"f\"]",
            ".status.conditions[type=\"Ready\"]",
            ".status.conditions[type=\"Ready\"].status",
            ".status.conditions[type=\"Ready\"].type",
        ]
    );
}

// ---- merge ----

#[test]
fn map_list_merge_keeps_live_order_merges_by_key_and_appends_new_items() {
    let live = widget(json!({"ports": [{"name": "b", "port": 1}, {"name": "a", "port": 2}]}));
    let config = widget(json!({"ports": [
        {"name": "c", "port": 3},
        {"name": "a", "protocol": "UDP"}
    ]}));
    let merged = merge(&live, &config, Some(&schema()));
    assert_eq!(
        merged["spec"]["ports"],
        json!([
            {"name": "b", "port": 1},
            {"name": "a", "port": 2, "protocol": "UDP"},
            {"name": "c", "port": 3}
        ])
    );
}

#[test]
fn set_merge_is_a_union_in_live_order() {
    let live = widget(json!({"tags": ["x", "y"]}));
    let config = widget(json!({"tags": ["z", "x"]}));
    let merged = merge(&live, &config, Some(&schema()));
    assert_eq!(merged["spec"]["tags"], json!(["x", "y", "z"]));
}

#[test]
fn atomic_lists_and_maps_are_replaced_and_granular_maps_merged() {
    let live = widget(json!({
        "args": ["a", "b"],
        "selector": {"a": "1", "b": "2"},
        "env": {"A": "1"},
        "size": 1
    }));
    let config = widget(json!({"args": ["c"], "selector": {"c": "3"}, "env": {"B": "2"}}));
    let merged = merge(&live, &config, Some(&schema()));
    assert_eq!(
        merged["spec"],
        json!({"args": ["c"], "selector": {"c": "3"}, "env": {"A": "1", "B": "2"}, "size": 1})
    );
}

#[test]
fn lists_without_schema_information_are_atomic_and_metadata_finalizers_a_set() {
    let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"l": [1, 2]}});
    let config = json!({"metadata": {"finalizers": ["b"]}, "spec": {"l": [3]}});
    let merged = merge(&live, &config, None);
    assert_eq!(
        merged,
        json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"l": [3]}})
    );
}

// ---- apply ----

#[test]
fn apply_create_records_one_apply_entry() {
    let result = apply_as(
        None,
        &widget(json!({"size": 3})),
        "kubectl",
        "2025-01-01T00:00:00.750Z",
    );
    assert_eq!(result["spec"], json!({"size": 3}));
    assert_eq!(
        result["metadata"]["managedFields"],
        json!([{
            "apiVersion": V1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:size": {}}},
            "manager": "kubectl",
            "operation": "Apply",
            "time": T0
        }])
    );
}

#[test]
fn reapplying_the_same_config_returns_a_byte_identical_object() {
    let config = json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "labels": {"app": "x"}, "finalizers": ["f"]},
        "spec": {
            "size": 3,
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53}],
            "tags": ["b", "a"],
            "args": ["--v"],
            "extra": {"k": {"deep": [1]}}
        }
    });
    let first = apply_as(None, &config, "kubectl", T0);
    let second = apply_as(Some(&first), &config, "kubectl", T1);
    assert_eq!(text(&first), text(&second));

    // With another manager around, and through force (what Flux does on every reconcile).
    let updated = {
        let mut new = second.clone();
        new["spec"]["color"] = json!("red");
        update_as(Some(&second), &new, "editor", T1)
    };
    let forced = |live: &Value, now: &str| {
        apply(
            Some(live),
            &config,
            "kubectl",
            true,
            Some(&schema()),
            None,
            V1,
            now,
        )
        .expect("apply succeeds")
    };
    let third = forced(&updated, T2);
    assert_eq!(text(&third), text(&updated));
    assert_eq!(text(&forced(&third, T2)), text(&third));
}

#[test]
fn a_field_dropped_from_config_is_removed_from_the_object() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let second = apply_as(Some(&first), &widget(json!({"size": 3})), "kubectl", T1);
    assert_eq!(second["spec"], json!({"size": 3}));
    assert_eq!(owned(&second, "kubectl", "Apply"), vec![".spec.size"]);
    // The set changed, so the time moves.
    assert_eq!(
        entry(&second, "kubectl", "Apply").expect("entry")["time"],
        T1
    );
}

#[test]
fn a_dropped_field_another_manager_also_owns_is_kept() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let shared = apply_as(Some(&first), &widget(json!({"color": "red"})), "other", T1);
    let second = apply_as(Some(&shared), &widget(json!({"size": 3})), "kubectl", T2);
    assert_eq!(second["spec"], json!({"size": 3, "color": "red"}));
    assert_eq!(owned(&second, "kubectl", "Apply"), vec![".spec.size"]);
    assert_eq!(owned(&second, "other", "Apply"), vec![".spec.color"]);
}

#[test]
fn a_dropped_field_an_update_manager_took_over_is_kept() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let mut edited = first.clone();
    edited["spec"]["color"] = json!("blue");
    let edited = update_as(Some(&first), &edited, "editor", T1);
    let second = apply_as(Some(&edited), &widget(json!({"size": 3})), "kubectl", T2);
    assert_eq!(second["spec"], json!({"size": 3, "color": "blue"}));
    assert_eq!(owned(&second, "editor", "Update"), vec![".spec.color"]);
}

#[test]
fn dropped_labels_map_items_and_set_values_are_removed_and_emptied_containers_go() {
    let config = json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"app": "x"}, "finalizers": ["a", "b"]},
        "spec": {"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}], "env": {"A": "1"}}
    });
    let first = apply_as(None, &config, "kubectl", T0);
    let smaller = json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {"name": "w", "finalizers": ["a"]},
        "spec": {"ports": [{"name": "a", "port": 1}]}
    });
    let second = apply_as(Some(&first), &smaller, "kubectl", T1);
    assert_eq!(second["metadata"].get("labels"), None);
    assert_eq!(second["metadata"]["finalizers"], json!(["a"]));
    assert_eq!(second["spec"], json!({"ports": [{"name": "a", "port": 1}]}));
    assert_eq!(
        text(&apply_as(Some(&second), &smaller, "kubectl", T2)),
        text(&second)
    );
}

#[test]
fn a_dropped_list_item_stays_while_another_manager_owns_part_of_it() {
    let first = apply_as(
        None,
        &widget(json!({"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]})),
        "kubectl",
        T0,
    );
    let mut edited = first.clone();
    edited["spec"]["ports"][1]["port"] = json!(3);
    let edited = update_as(Some(&first), &edited, "editor", T1);
    let second = apply_as(
        Some(&edited),
        &widget(json!({"ports": [{"name": "a", "port": 1}]})),
        "kubectl",
        T2,
    );
    assert_eq!(
        second["spec"]["ports"],
        json!([{"name": "a", "port": 1}, {"name": "b", "port": 3}])
    );
    assert_eq!(
        owned(&second, "kubectl", "Apply"),
        vec![
            ".spec.ports[name=\"a\"]",
            ".spec.ports[name=\"a\"].name",
            ".spec.ports[name=\"a\"].port",
        ]
    );
}

#[test]
fn two_managers_applying_the_same_value_share_ownership_without_conflict() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    let second = apply_as(Some(&first), &widget(json!({"size": 3})), "other", T1);
    assert_eq!(owned(&second, "kubectl", "Apply"), vec![".spec.size"]);
    assert_eq!(owned(&second, "other", "Apply"), vec![".spec.size"]);
    assert_eq!(
        entry(&second, "kubectl", "Apply").expect("entry")["time"],
        T0
    );
}

#[test]
fn equal_numbers_spelled_differently_co_own_without_conflict() {
    let ints = widget(json!({
        "size": -1_000_000_000,
        "endpoints": [{"port": 80, "protocol": "TCP"}],
        "extra": {"limits": [1.5, 2]}
    }));
    let first = apply_as(None, &ints, "devplane", T0);
    let floats = widget(
        serde_json::from_str(
            r#"{"size": -1e+09, "endpoints": [{"port": 80.0, "protocol": "TCP"}],
                "extra": {"limits": [1.5, 2.0]}}"#,
        )
        .expect("json"),
    );
    let second = apply_as(Some(&first), &floats, "kubectl", T1);
    assert_eq!(
        owned(&second, "kubectl", "Apply"),
        owned(&second, "devplane", "Apply")
    );
    let err = apply(
        Some(&second),
        &widget(json!({"size": -999_999_999})),
        "other",
        false,
        Some(&schema()),
        None,
        V1,
        T2,
    )
    .expect_err("a different value still conflicts");
    assert!(matches!(err, ApplyError::Conflicts(_)), "{err:?}");
}

#[test]
fn changing_a_field_another_apply_manager_owns_is_a_conflict() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    let err = apply(
        Some(&first),
        &widget(json!({"size": 4})),
        "other",
        false,
        Some(&schema()),
        None,
        V1,
        T1,
    )
    .expect_err("conflicts");
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "kubectl".into(),
            field: ".spec.size".into(),
            operation: "Apply".into(),
            api_version: None,
            subresource: None,
        }])
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.size"
    );
}

#[test]
fn changing_a_field_an_update_manager_owns_is_a_conflict_naming_its_api_version() {
    let created = update_as(
        None,
        &widget(json!({"size": 3})),
        "kubectl-client-side-apply",
        T0,
    );
    let err = apply(
        Some(&created),
        &widget(json!({"size": 4})),
        "kubectl",
        false,
        Some(&schema()),
        None,
        V1,
        T1,
    )
    .expect_err("conflicts");
    let ApplyError::Conflicts(conflicts) = &err else {
        panic!("expected conflicts, got {err:?}");
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        conflicts[0].cause_message(),
        "conflict with \"kubectl-client-side-apply\" using example.com/v1"
    );
    assert_eq!(conflicts[0].field, ".spec.size");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using example.com/v1: .spec.size"
    );
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let err = apply(
        Some(&first),
        &widget(json!({"size": 4, "color": "blue"})),
        "other",
        false,
        Some(&schema()),
        None,
        V1,
        T1,
    )
    .expect_err("conflicts");
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .spec.color\n- .spec.size"
    );
}

#[test]
fn force_takes_ownership_from_other_managers() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let forced = apply(
        Some(&first),
        &widget(json!({"size": 4})),
        "other",
        true,
        Some(&schema()),
        None,
        V1,
        T1,
    )
    .expect("force applies");
    assert_eq!(forced["spec"], json!({"size": 4, "color": "red"}));
    assert_eq!(owned(&forced, "kubectl", "Apply"), vec![".spec.color"]);
    assert_eq!(owned(&forced, "other", "Apply"), vec![".spec.size"]);
    // kubectl's time stays: losing a field to someone else does not touch it.
    assert_eq!(
        entry(&forced, "kubectl", "Apply").expect("entry")["time"],
        T0
    );
}

#[test]
fn apply_rejects_bodies_it_cannot_use() {
    let s = schema();
    let run = |live: Option<&Value>, config: Value| {
        apply(live, &config, "m", false, Some(&s), None, V1, T0)
    };
    let mut with_managed = widget(json!({}));
    with_managed["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        run(None, with_managed),
        Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into()
        ))
    );
    assert!(matches!(
        run(None, json!({"apiVersion": V1})),
        Err(ApplyError::Invalid(_))
    ));
    assert!(matches!(
        run(None, json!({"kind": "Widget"})),
        Err(ApplyError::Invalid(_))
    ));
    assert!(matches!(
        run(None, json!("text")),
        Err(ApplyError::Invalid(_))
    ));
    assert_eq!(
        run(None, widget(json!({"ports": [{"port": 1}]}))),
        Err(ApplyError::Invalid(
            ".spec.ports: element 0: associative list with keys has an element that omits key \
             field \"name\" (and doesn't have default value)"
                .into()
        ))
    );
    assert_eq!(
        run(None, widget(json!({"tags": ["a", "a"]}))),
        Err(ApplyError::Invalid(
            ".spec.tags: duplicate entries for key [=\"a\"]".into()
        ))
    );
    let live = apply_as(None, &widget(json!({"size": 1})), "m", T0);
    let mut renamed = widget(json!({"size": 1}));
    renamed["metadata"]["name"] = json!("other");
    assert!(matches!(
        run(Some(&live), renamed),
        Err(ApplyError::Invalid(_))
    ));
}

#[test]
fn status_subresource_apply_only_takes_status_from_the_body() {
    let live = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    let mut config = widget(json!({"size": 99}));
    config["status"] =
        json!({"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]});
    config["metadata"]["labels"] = json!({"ignored": "yes"});
    let run = |live: &Value, now: &str| {
        apply(
            Some(live),
            &config,
            "ctrl",
            false,
            Some(&schema()),
            Some("status"),
            V1,
            now,
        )
        .expect("status apply succeeds")
    };
    let result = run(&live, T1);
    assert_eq!(result["spec"], json!({"size": 3}));
    assert_eq!(result["status"]["phase"], "Ready");
    assert_eq!(result["metadata"].get("labels"), None);
    let status_entry = entry(&result, "ctrl", "Apply").expect("entry");
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {
            "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}},
            "f:phase": {}
        }})
    );
    assert_eq!(text(&run(&result, T2)), text(&result));

    // Another status manager changing the phase conflicts with "ctrl" through status.
    let mut other = widget(json!({}));
    other["status"] = json!({"phase": "Failed"});
    let err = apply(
        Some(&result),
        &other,
        "ctrl2",
        false,
        Some(&schema()),
        Some("status"),
        V1,
        T2,
    )
    .expect_err("conflicts");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\": .status.phase"
    );
}

#[test]
fn applying_to_an_untracked_object_gives_its_fields_to_before_first_apply() {
    let live = json!({
        "apiVersion": V1,
        "kind": "Widget",
        "metadata": {"name": "w", "uid": "u", "labels": {"app": "x"}},
        "spec": {"size": 3},
        "status": {"phase": "Ready"}
    });
    let result = apply_as(Some(&live), &widget(json!({"color": "red"})), "kubectl", T1);
    assert_eq!(
        managers(&result),
        vec![
            ("kubectl".to_string(), "Apply".to_string()),
            ("before-first-apply".to_string(), "Update".to_string())
        ]
    );
    assert_eq!(
        entry(&result, "before-first-apply", "Update").expect("entry")["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {".": {}, "f:size": {}}
        })
    );
    let err = apply(
        Some(&result),
        &widget(json!({"color": "red", "size": 4})),
        "kubectl",
        false,
        Some(&schema()),
        None,
        V1,
        T2,
    )
    .expect_err("conflicts");
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using example.com/v1: .spec.size"
    );
}

#[test]
fn entries_are_ordered_apply_first_then_by_time() {
    let a = apply_as(None, &widget(json!({"size": 1})), "zeta", T0);
    let mut b = a.clone();
    b["spec"]["color"] = json!("red");
    let b = update_as(Some(&a), &b, "late", T2);
    let mut c = b.clone();
    c["spec"]["args"] = json!(["x"]);
    let c = update_as(Some(&b), &c, "early", T1);
    let d = apply_as(Some(&c), &widget(json!({"tags": ["t"]})), "alpha", T2);
    assert_eq!(
        managers(&d),
        vec![
            ("zeta".to_string(), "Apply".to_string()),
            ("alpha".to_string(), "Apply".to_string()),
            ("early".to_string(), "Update".to_string()),
            ("late".to_string(), "Update".to_string()),
        ]
    );
}

// ---- update ----

#[test]
fn update_on_create_owns_everything_including_new_containers() {
    let created = update_as(
        None,
        &json!({
            "apiVersion": V1,
            "kind": "Widget",
            "metadata": {"name": "w", "labels": {"app": "x"}},
            "spec": {"size": 3, "ports": [{"name": "a", "port": 1}]}
        }),
        "kubectl-create",
        T0,
    );
    assert_eq!(
        entry(&created, "kubectl-create", "Update").expect("entry"),
        json!({
            "apiVersion": V1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    ".": {},
                    "f:ports": {".": {}, "k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:port": {}}},
                    "f:size": {}
                }
            },
            "manager": "kubectl-create",
            "operation": "Update",
            "time": T0
        })
    );
}

/// Objects of every shape a create records: associative lists (with duplicate keys, items
/// without keys, defaulted key fields), sets with repeats, atomic lists and maps, deduced
/// maps, the metadata the server owns, and values whose type is not what the schema says.
fn created_objects() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": V1,
            "kind": "Widget",
            "metadata": {
                "name": "w", "namespace": "default", "uid": "u", "generation": 1,
                "creationTimestamp": T0, "resourceVersion": "5",
                "labels": {"app": "x", "tier": "web"}, "annotations": {"note": "n"},
                "finalizers": ["a/b", "c", "a/b"],
                "ownerReferences": [{"uid": "o1", "kind": "K", "name": "o", "apiVersion": "v1"}, {"kind": "no uid"}],
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}]
            },
            "spec": {
                "size": 3, "color": "red",
                "ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2, "protocol": "UDP"}, {"port": 3}, "odd"],
                "endpoints": [{"port": 80}, {"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "UDP"}],
                "tags": ["x", "y", "x"], "args": ["-v", "-v"],
                "selector": {"a": "b"}, "env": {"A": "1", "B": ""},
                "extra": {"deep": {"x": [1, {"y": 2}], "z": {}}, "empty": null}
            },
            "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
        }),
        json!({"apiVersion": V1, "kind": "Widget", "metadata": {}, "spec": {}, "status": null}),
        json!({"metadata": {"labels": {}}, "spec": {"ports": {"a": 1}, "tags": "x", "selector": [1], "size": {"n": 1}}}),
        json!({"spec": "text", "data": {"a": {"b": [1, 2]}, "c": {}}, "x": null, "y": []}),
        json!({}),
    ]
}

#[test]
fn a_create_records_exactly_what_comparing_with_an_empty_object_adds() {
    let schema = schema();
    let empty = json!({});
    for object in created_objects() {
        for ty in [Ty::Root(Some(&schema)), Ty::Root(None)] {
            let compared = Comparison::of(&empty, &object, ty);
            assert!(compared.modified.is_empty() && compared.removed.is_empty());
            assert_eq!(
                Comparison::added_by_create(&object, ty),
                compared.added,
                "{object}"
            );
        }
        // The creator owns what the comparison adds.
        let added = Comparison::of(&empty, &object, Ty::Root(Some(&schema))).added;
        let created = update_as(None, &object, "creator", T1);
        let recorded = entry(&created, "creator", "Update").map(|e| e["fieldsV1"].clone());
        let expected = (!added.is_empty()).then(|| added.to_fields_v1());
        assert_eq!(recorded, expected, "{object}");
    }
}

#[test]
fn a_create_with_client_managed_fields_takes_the_fields_it_writes_from_them() {
    let mut object = widget(json!({"size": 3, "color": "red"}));
    object["metadata"]["managedFields"] = json!([{
        "manager": "other",
        "operation": "Update",
        "apiVersion": V1,
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:size": {}, "f:gone": {}}}
    }, {
        "manager": "only-written-fields",
        "operation": "Apply",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:color": {}}}
    }]);
    let created = update_as(None, &object, "creator", T1);
    assert_eq!(owned(&created, "other", "Update"), vec![".spec.gone"]);
    assert_eq!(entry(&created, "only-written-fields", "Apply"), None);
    assert_eq!(
        owned(&created, "creator", "Update"),
        vec![".spec", ".spec.color", ".spec.size"]
    );
    assert_eq!(
        entry(&created, "creator", "Update").expect("entry")["time"],
        T1
    );
}

#[test]
fn update_transfers_ownership_of_changed_fields_to_the_writer() {
    let first = apply_as(
        None,
        &widget(json!({"size": 3, "color": "red"})),
        "kubectl",
        T0,
    );
    let mut new = first.clone();
    new["spec"]["size"] = json!(5);
    let updated = update_as(Some(&first), &new, "editor", T1);
    assert_eq!(owned(&updated, "kubectl", "Apply"), vec![".spec.color"]);
    assert_eq!(owned(&updated, "editor", "Update"), vec![".spec.size"]);
    assert_eq!(
        entry(&updated, "kubectl", "Apply").expect("entry")["time"],
        T0
    );
    assert_eq!(
        entry(&updated, "editor", "Update").expect("entry")["time"],
        T1
    );

    // Removing a field takes it from everyone without giving it to the writer.
    let mut removed = updated.clone();
    removed["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("color");
    let removed = update_as(Some(&updated), &removed, "editor", T2);
    assert_eq!(entry(&removed, "kubectl", "Apply"), None);
    assert_eq!(owned(&removed, "editor", "Update"), vec![".spec.size"]);
    assert_eq!(
        entry(&removed, "editor", "Update").expect("entry")["time"],
        T1
    );
}

#[test]
fn an_update_that_changes_nothing_leaves_the_object_byte_identical() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    let mut edited = first.clone();
    edited["spec"]["color"] = json!("red");
    let edited = update_as(Some(&first), &edited, "editor", T1);
    let again = update_as(Some(&edited), &edited, "editor", T2);
    assert_eq!(text(&again), text(&edited));
    // A write without managedFields keeps the stored ones.
    let mut bare = edited.clone();
    bare["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    assert_eq!(
        text(&update_as(Some(&edited), &bare, "editor", T2)),
        text(&edited)
    );
}

#[test]
fn at_most_ten_update_entries_are_kept_and_the_oldest_merge_into_ancient_changes() {
    let mut object = update_as(None, &widget(json!({"env": {"k0": "v"}})), "m0", T0);
    for i in 1..=11 {
        let mut new = object.clone();
        new["spec"]["env"][format!("k{i}")] = json!("v");
        let now = format!("2025-01-01T01:{i:02}:00Z");
        object = update_as(Some(&object), &new, &format!("m{i}"), &now);
    }
    let names: Vec<String> = managers(&object).into_iter().map(|(m, _)| m).collect();
    assert_eq!(names.len(), 10);
    assert!(names.contains(&"ancient-changes".to_string()));
    for gone in ["m0", "m1", "m2"] {
        assert!(
            !names.contains(&gone.to_string()),
            "{gone} should be merged"
        );
    }
    let ancient = owned(&object, "ancient-changes", "Update");
    for path in [".spec.env.k0", ".spec.env.k1", ".spec.env.k2"] {
        assert!(ancient.contains(&path.to_string()), "{path} in {ancient:?}");
    }
    assert_eq!(owned(&object, "m11", "Update"), vec![".spec.env.k11"]);
}

#[test]
fn an_empty_managed_fields_list_resets_tracking() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    for reset in [json!([]), json!([{}])] {
        let mut new = first.clone();
        new["metadata"]["managedFields"] = reset.clone();
        new["spec"]["color"] = json!("red");
        let result = update_as(Some(&first), &new, "editor", T1);
        assert_eq!(result["metadata"].get("managedFields"), None, "{reset}");
        assert_eq!(result["spec"]["color"], "red");
    }
    // An untracked existing object stays untracked through updates ...
    let mut untracked = first.clone();
    untracked["metadata"]["managedFields"] = json!([]);
    let untracked = update_as(Some(&first), &untracked, "editor", T1);
    let mut edited = untracked.clone();
    edited["spec"]["color"] = json!("blue");
    let edited = update_as(Some(&untracked), &edited, "editor", T2);
    assert_eq!(edited["metadata"].get("managedFields"), None);
    // ... until an apply, which gives what was there to before-first-apply.
    let applied = apply_as(Some(&edited), &widget(json!({"size": 3})), "kubectl", T2);
    assert_eq!(
        managers(&applied),
        vec![
            ("kubectl".to_string(), "Apply".to_string()),
            ("before-first-apply".to_string(), "Update".to_string())
        ]
    );
    assert_eq!(
        owned(&applied, "before-first-apply", "Update"),
        vec![".spec", ".spec.color", ".spec.size"]
    );
}

#[test]
fn undecodable_or_absent_client_managed_fields_keep_the_old_value() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    for supplied in [
        json!("garbage"),
        json!([{"manager": "x", "operation": "Bogus", "fieldsType": "FieldsV1"}]),
        json!([{"manager": "x", "operation": "Update", "fieldsType": "FieldsV2"}]),
        json!([{"manager": "x", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"bad": {}}}]),
    ] {
        let mut new = first.clone();
        new["metadata"]["managedFields"] = supplied.clone();
        let result = update_as(Some(&first), &new, "editor", T1);
        assert_eq!(text(&result), text(&first), "{supplied}");
    }
}

#[test]
fn decodable_client_managed_fields_are_honoured() {
    // What kubectl's csaupgrade does: turn the client-side-apply Update entry into an Apply one.
    let created = update_as(
        None,
        &widget(json!({"size": 3})),
        "kubectl-client-side-apply",
        T0,
    );
    let mut upgraded = created.clone();
    upgraded["metadata"]["managedFields"] = json!([{
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": V1,
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:size": {}}}
    }]);
    let upgraded = update_as(Some(&created), &upgraded, "kubectl", T1);
    assert_eq!(
        managers(&upgraded),
        vec![("kubectl".to_string(), "Apply".to_string())]
    );
    let applied = apply_as(Some(&upgraded), &widget(json!({"size": 4})), "kubectl", T2);
    assert_eq!(applied["spec"]["size"], 4);
}

#[test]
fn status_updates_ignore_client_managed_fields_and_record_the_subresource() {
    let first = apply_as(None, &widget(json!({"size": 3})), "kubectl", T0);
    let mut new = first.clone();
    new["metadata"]["managedFields"] = json!([]);
    new["status"] = json!({"phase": "Ready"});
    update(
        Some(&first),
        &mut new,
        "ctrl",
        Some(&schema()),
        Some("status"),
        V1,
        T1,
    );
    assert_eq!(owned(&new, "kubectl", "Apply"), vec![".spec.size"]);
    let status = entry(&new, "ctrl", "Update").expect("entry");
    assert_eq!(status["subresource"], "status");
    assert_eq!(
        status["fieldsV1"],
        json!({"f:status": {".": {}, "f:phase": {}}})
    );
}

// ---- user agents ----

#[test]
fn manager_from_user_agent_takes_the_text_before_the_first_slash() {
    assert_eq!(
        manager_from_user_agent(Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc")),
        "kubectl"
    );
    assert_eq!(manager_from_user_agent(Some("kube-rs")), "kube-rs");
    assert_eq!(manager_from_user_agent(Some("my agent\u{7}/1")), "my agent");
    assert_eq!(manager_from_user_agent(Some("/1.0")), "unknown");
    assert_eq!(manager_from_user_agent(Some("")), "unknown");
    assert_eq!(manager_from_user_agent(None), "unknown");
    assert_eq!(manager_from_user_agent(Some(&"x".repeat(300))).len(), 128);
}

#[test]
fn fields_the_schema_prunes_are_returned_but_neither_owned_nor_counted_as_changes() {
    let config = widget(json!({"size": 3, "unknown": 1}));
    let first = apply_as(None, &config, "kubectl", T0);
    assert_eq!(first["spec"]["unknown"], 1);
    assert_eq!(owned(&first, "kubectl", "Apply"), vec![".spec.size"]);
    // What admission stores: the unknown field pruned.
    let mut stored = first.clone();
    stored["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("unknown");
    let mut second = apply_as(Some(&stored), &config, "kubectl", T1);
    second["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("unknown");
    assert_eq!(text(&second), text(&stored));
}

#[test]
fn the_known_view_copies_an_object_only_when_it_has_something_to_drop() {
    let schema = schema();
    let known = |value: &Value| -> (bool, Value) {
        let view = known::known_view(value, Some(&schema));
        (
            matches!(view, std::borrow::Cow::Borrowed(_)),
            view.into_owned(),
        )
    };
    let clean = widget(json!({
        "size": 1,
        "ports": [{"name": "a", "port": 80}],
        "env": {"A": "b"},
        "extra": {"anything": {"goes": [1]}}
    }));
    assert_eq!(known(&clean), (true, clean.clone()));
    for (dirty, without) in [
        (json!({"size": 1, "unknown": 2}), json!({"size": 1})),
        (json!({"size": null}), json!({})),
        (
            json!({"ports": [{"name": "a", "junk": 1}]}),
            json!({"ports": [{"name": "a"}]}),
        ),
        (
            json!({"selector": {"a": "b"}, "extra": {"x": 1}, "nested": {}}),
            json!({"selector": {"a": "b"}, "extra": {"x": 1}}),
        ),
    ] {
        assert_eq!(
            known(&widget(dirty.clone())),
            (false, widget(without)),
            "{dirty}"
        );
    }
    let mut odd_meta = clean.clone();
    odd_meta["metadata"]["bogus"] = json!(1);
    assert_eq!(known(&odd_meta), (false, clean));
}
