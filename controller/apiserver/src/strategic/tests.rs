use serde_json::{Value, json};

use super::*;

fn configmap() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}"},
            "finalizers": ["a.example.com/f", "b.example.com/f"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Namespace", "name": "one", "uid": "u1"},
                {"apiVersion": "v1", "kind": "Namespace", "name": "two", "uid": "u2", "controller": true}
            ]
        },
        "data": {"a": "1", "b": "1", "c": "1"}
    })
}

fn apply(original: &Value, patch: Value) -> Value {
    apply_strategic(original, &patch, "ConfigMap").unwrap_or_else(|e| panic!("{patch}: {e}"))
}

#[test]
fn a_client_side_apply_patch_updates_the_annotation_and_data_and_deletes_nulls() {
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}"}},
        "data": {"a": "2", "b": null}
    });
    let result = apply(&configmap(), patch);
    assert_eq!(result["data"], json!({"a": "2", "c": "1"}));
    assert_eq!(
        result["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"new\":true}"
    );
    assert_eq!(result["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        result["metadata"]["finalizers"],
        configmap()["metadata"]["finalizers"]
    );
}

#[test]
fn nulls_for_missing_keys_are_ignored_and_new_maps_are_added_without_them() {
    let result = apply(
        &configmap(),
        json!({"data": {"zzz": null}, "binaryData": {"k": "AA==", "gone": null}}),
    );
    assert_eq!(result["data"], configmap()["data"]);
    assert_eq!(result["binaryData"], json!({"k": "AA=="}));
}

#[test]
fn finalizers_merge_as_a_set_of_strings() {
    let result = apply(
        &configmap(),
        json!({"metadata": {"finalizers": ["b.example.com/f", "c.example.com/f"]}}),
    );
    assert_eq!(
        result["metadata"]["finalizers"],
        json!(["a.example.com/f", "b.example.com/f", "c.example.com/f"])
    );
    // An empty list merges nothing away.
    let result = apply(&configmap(), json!({"metadata": {"finalizers": []}}));
    assert_eq!(
        result["metadata"]["finalizers"],
        configmap()["metadata"]["finalizers"]
    );
}

#[test]
fn a_new_finalizer_without_an_order_directive_goes_before_the_server_only_ones() {
    // apimachinery's ordering: patch items take precedence over items it cannot place.
    let result = apply(
        &configmap(),
        json!({"metadata": {"finalizers": ["c.example.com/f"]}}),
    );
    assert_eq!(
        result["metadata"]["finalizers"],
        json!(["c.example.com/f", "a.example.com/f", "b.example.com/f"])
    );
}

#[test]
fn set_element_order_places_merged_finalizers_in_the_given_order() {
    // What kubectl's three-way diff sends when it adds c after the existing ones.
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["a.example.com/f", "b.example.com/f", "c.example.com/f"],
        "finalizers": ["c.example.com/f"]
    }});
    let result = apply(&configmap(), patch);
    assert_eq!(
        result["metadata"]["finalizers"],
        json!(["a.example.com/f", "b.example.com/f", "c.example.com/f"])
    );
    assert!(
        result["metadata"]
            .get("$setElementOrder/finalizers")
            .is_none()
    );
}

#[test]
fn set_element_order_alone_reorders_listed_items_after_server_only_items_that_preceded_them() {
    let mut original = configmap();
    original["metadata"]["finalizers"] = json!(["x", "a", "y", "b"]);
    let result = apply(
        &original,
        json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
    );
    // x and y precede b (the first listed item) in the live list, so they stay in front.
    assert_eq!(
        result["metadata"]["finalizers"],
        json!(["x", "y", "b", "a"])
    );
    original["metadata"]["finalizers"] = json!(["b", "x", "a"]);
    let result = apply(
        &original,
        json!({"metadata": {"$setElementOrder/finalizers": ["a", "b"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["x", "a", "b"]));
}

#[test]
fn delete_from_primitive_list_removes_finalizers() {
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["b.example.com/f"],
        "$deleteFromPrimitiveList/finalizers": ["a.example.com/f"]
    }});
    let result = apply(&configmap(), patch);
    assert_eq!(result["metadata"]["finalizers"], json!(["b.example.com/f"]));
    assert!(
        result["metadata"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with('$'))
    );
    // Deleting the last one leaves an empty list, as upstream does before re-encoding.
    let result = apply(
        &result,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b.example.com/f"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!([]));
}

#[test]
fn owner_references_merge_by_uid() {
    let patch = json!({"metadata": {"ownerReferences": [
        {"uid": "u2", "blockOwnerDeletion": true},
        {"apiVersion": "v1", "kind": "Namespace", "name": "three", "uid": "u3"}
    ]}});
    let result = apply(&configmap(), patch);
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([
            {"apiVersion": "v1", "kind": "Namespace", "name": "one", "uid": "u1"},
            {"apiVersion": "v1", "kind": "Namespace", "name": "two", "uid": "u2", "controller": true, "blockOwnerDeletion": true},
            {"apiVersion": "v1", "kind": "Namespace", "name": "three", "uid": "u3"}
        ])
    );
}

#[test]
fn set_element_order_of_owner_references_uses_the_merge_key() {
    let patch = json!({"metadata": {
        "$setElementOrder/ownerReferences": [{"uid": "u2"}, {"uid": "u1"}],
        "ownerReferences": [{"uid": "u1", "name": "uno"}]
    }});
    let result = apply(&configmap(), patch);
    let refs = result["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs[0]["uid"], "u2");
    assert_eq!(refs[1]["name"], "uno");
}

#[test]
fn patch_delete_removes_a_list_item_by_merge_key() {
    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "u1"}]}});
    let result = apply(&configmap(), patch);
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Namespace", "name": "two", "uid": "u2", "controller": true}])
    );
}

#[test]
fn patch_replace_in_a_list_replaces_the_whole_list() {
    let patch = json!({"metadata": {"ownerReferences": [
        {"$patch": "replace"},
        {"apiVersion": "v1", "kind": "Namespace", "name": "three", "uid": "u3"}
    ]}});
    let result = apply(&configmap(), patch);
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Namespace", "name": "three", "uid": "u3"}])
    );
    let result = apply(
        &configmap(),
        json!({"metadata": {"finalizers": [{"$patch": "replace"}, "z"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["z"]));
}

#[test]
fn patch_replace_and_delete_on_maps() {
    let result = apply(
        &configmap(),
        json!({"data": {"$patch": "replace", "only": "this", "nothing": null}}),
    );
    assert_eq!(result["data"], json!({"only": "this"}));
    let result = apply(&configmap(), json!({"data": {"$patch": "delete"}}));
    assert_eq!(result["data"], json!({}));
    let result = apply(&configmap(), json!({"data": {"$patch": "merge", "d": "4"}}));
    assert_eq!(
        result["data"],
        json!({"a": "1", "b": "1", "c": "1", "d": "4"})
    );
}

#[test]
fn retain_keys_drops_unlisted_keys() {
    let result = apply(
        &configmap(),
        json!({"data": {"$retainKeys": ["a", "d"], "d": "4"}}),
    );
    assert_eq!(result["data"], json!({"a": "1", "d": "4"}));
}

#[test]
fn retain_keys_must_list_every_key_the_patch_sets() {
    let err = apply_strategic(
        &configmap(),
        &json!({"data": {"$retainKeys": ["a"], "d": "4"}}),
        "ConfigMap",
    )
    .unwrap_err();
    assert!(err.to_string().contains("$retainKeys"), "{err}");
    let err = apply_strategic(
        &configmap(),
        &json!({"data": {"$retainKeys": "a"}}),
        "ConfigMap",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("must be a list of strings"),
        "{err}"
    );
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let original = json!({
        "kind": "ConfigMap",
        "metadata": {"name": "x", "managedFields": [{"manager": "a"}, {"manager": "b"}]}
    });
    let result = apply(
        &original,
        json!({"metadata": {"managedFields": [{"manager": "c"}]}}),
    );
    assert_eq!(
        result["metadata"]["managedFields"],
        json!([{"manager": "c"}])
    );
}

#[test]
fn namespace_spec_finalizers_are_replaced_but_status_conditions_merge_by_type() {
    let namespace = json!({
        "kind": "Namespace",
        "metadata": {"name": "ns"},
        "spec": {"finalizers": ["kubernetes", "example.com/x"]},
        "status": {"phase": "Terminating", "conditions": [
            {"type": "NamespaceContentRemaining", "status": "True"},
            {"type": "NamespaceFinalizersRemaining", "status": "True"}
        ]}
    });
    let patch = json!({
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]}
    });
    let result = apply_strategic(&namespace, &patch, "Namespace").unwrap();
    assert_eq!(result["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        result["status"]["conditions"],
        json!([
            {"type": "NamespaceContentRemaining", "status": "False"},
            {"type": "NamespaceFinalizersRemaining", "status": "True"}
        ])
    );
}

#[test]
fn a_go_event_recorder_update_patches_count_and_timestamps() {
    // client-go's event correlator sends this shape when an event repeats.
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "d.17a", "namespace": "default"},
        "involvedObject": {"kind": "Device", "name": "d", "uid": "u"},
        "reason": "Reconciled",
        "message": "ok",
        "count": 1,
        "firstTimestamp": "2024-05-01T10:00:00Z",
        "lastTimestamp": "2024-05-01T10:00:00Z"
    });
    let patch = json!({"count": 2, "lastTimestamp": "2024-05-01T10:05:00Z", "message": "ok again"});
    let result = apply_strategic(&event, &patch, "Event").unwrap();
    assert_eq!(result["count"], 2);
    assert_eq!(result["lastTimestamp"], "2024-05-01T10:05:00Z");
    assert_eq!(result["firstTimestamp"], "2024-05-01T10:00:00Z");
    assert_eq!(result["involvedObject"], event["involvedObject"]);
}

#[test]
fn lease_renewals_patch_the_spec() {
    let lease = json!({
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2024-05-01T10:00:00.000000Z"}
    });
    let patch = json!({"spec": {"holderIdentity": "b", "renewTime": "2024-05-01T10:00:10.000000Z", "leaseTransitions": 1}});
    let result = apply_strategic(&lease, &patch, "Lease").unwrap();
    assert_eq!(
        result["spec"],
        json!({"holderIdentity": "b", "leaseDurationSeconds": 15, "renewTime": "2024-05-01T10:00:10.000000Z", "leaseTransitions": 1})
    );
}

#[test]
fn directives_inside_new_fields_are_applied_not_stored() {
    let original = json!({"kind": "ConfigMap", "metadata": {"name": "x"}});
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["a", "b"],
        "finalizers": ["a", "b"],
        "ownerReferences": [{"uid": "u1", "name": "one"}, {"$patch": "delete", "uid": "u9"}],
        "labels": {"$patch": "replace", "x": "y"}
    }});
    let result = apply(&original, patch);
    assert_eq!(
        result["metadata"],
        json!({"name": "x", "finalizers": ["a", "b"], "ownerReferences": [{"uid": "u1", "name": "one"}], "labels": {"x": "y"}})
    );
}

#[test]
fn a_top_level_replace_replaces_the_object() {
    let result = apply(
        &configmap(),
        json!({"$patch": "replace", "kind": "ConfigMap", "data": {"z": "1"}}),
    );
    assert_eq!(result, json!({"kind": "ConfigMap", "data": {"z": "1"}}));
}

#[test]
fn unknown_directives_and_patch_types_are_errors() {
    let cases = [
        (json!({"$bogus": 1}), "unknown directive \"$bogus\""),
        (
            json!({"metadata": {"$setElementOrder/": []}}),
            "unknown directive",
        ),
        (
            json!({"data": {"$patch": "explode"}}),
            "data: unknown patch type: \"explode\"",
        ),
        (
            json!({"metadata": {"ownerReferences": [{"$patch": "explode", "uid": "u1"}]}}),
            "unknown patch type",
        ),
        (
            json!({"metadata": {"finalizers": [{"$patch": "delete"}]}}),
            "unknown patch type",
        ),
        (
            json!({"metadata": {"ownerReferences": [{"name": "no-uid"}]}}),
            "does not contain declared merge key: uid",
        ),
        (
            json!({"metadata": {"ownerReferences": [{"$patch": "delete"}]}}),
            "does not contain declared merge key: uid",
        ),
        (
            json!({"metadata": {"$setElementOrder/finalizers": "a"}}),
            "must be a list",
        ),
        (
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            "must be a list",
        ),
        (
            json!({"metadata": {"$setElementOrder/finalizers": ["a"], "finalizers": ["b"]}}),
            "missing from it or out of its order",
        ),
        (
            json!({"metadata": {"$setElementOrder/finalizers": ["a", "b"], "finalizers": ["b", "a"]}}),
            "out of its order",
        ),
    ];
    for (patch, expected) in cases {
        let err = apply_strategic(&configmap(), &patch, "ConfigMap").expect_err(&patch.to_string());
        assert!(err.to_string().contains(expected), "{patch}: {err}");
    }
    assert_eq!(
        apply_strategic(&configmap(), &json!([1]), "ConfigMap").unwrap_err(),
        StrategicError::PatchNotAnObject
    );
}

#[test]
fn merge_strategies_come_from_one_table() {
    assert_eq!(
        list_strategy("Secret", "metadata.finalizers"),
        ListStrategy::Set
    );
    assert_eq!(
        list_strategy("Lease", "metadata.ownerReferences"),
        ListStrategy::MergeByKey("uid")
    );
    assert_eq!(
        list_strategy("Namespace", "status.conditions"),
        ListStrategy::MergeByKey("type")
    );
    assert_eq!(
        list_strategy("Event", "status.conditions"),
        ListStrategy::Replace
    );
    assert_eq!(
        list_strategy("Namespace", "spec.finalizers"),
        ListStrategy::Replace
    );
    assert_eq!(
        list_strategy("ConfigMap", "metadata.managedFields"),
        ListStrategy::Replace
    );
}
